"""A SageMaker emulator for tests and local runs: moto's S3 and SageMaker, with jobs that really run.

A tool of its own, with its own extra (``pip install 'topx[emulator]'``, moto pinned exactly: the
emulator patches moto's internals). It imports neither training nor search: the functions its
jobs compute with are handed in as :class:`Engines` (:func:`batch.emulator.local.local_engines`
gives topx's local ones). ``sagemaker``: the emulator; ``jobs``, ``knn`` and ``script``: what its jobs do;
``server``: the emulator behind an HTTP endpoint (``topx sagemaker-emulator``).
"""

from batch.emulator.engines import Engines

__all__ = ["Engines"]
