"""The ingest stage: read interactions and side features, map ids, split (see :mod:`loader`)."""

from batch.data.loader import load_dataset

__all__ = ["load_dataset"]
