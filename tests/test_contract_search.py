"""Every searcher runs :class:`contracts.SearcherContract`: local exact, IVF and HNSW, and
SageMaker k-NN against the emulator."""

from __future__ import annotations

import pytest
from contracts import SearcherContract
from sagemaker_fixtures import emulated_aws, sagemaker_config

from batch.serve.search.local import LocalSearcher
from batch.serve.search.sagemaker import SageMakerKnnSearcher


class TestExactSearcher(SearcherContract):
    def make_searcher(self):
        return LocalSearcher("exact", batch_size=4)


class TestIvfSearcher(SearcherContract):
    exact = False

    def make_searcher(self):
        return LocalSearcher("ivf", nprobe=64, recall_sample=5)


class TestHnswSearcher(SearcherContract):
    exact = False

    def make_searcher(self):
        return LocalSearcher("hnsw", recall_sample=5)


@pytest.mark.slow
class TestSageMakerSearcher(SearcherContract):
    @pytest.fixture(autouse=True)
    def _aws(self):
        with emulated_aws() as aws:
            self.aws = aws
            yield

    def make_searcher(self):
        return SageMakerKnnSearcher(sagemaker_config(), run_id="contract", clients=self.aws.clients())
