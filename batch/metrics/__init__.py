"""Metrics of top-x lists: accuracy on the held-out split (:mod:`.accuracy`), what the lists do
to the catalogue beyond accuracy (:mod:`.beyond`), and how much they changed since the published
run (:mod:`.churn`). Plain numpy on int (n_users, depth) matrices of item indices, best first,
-1 for empty slots: the shape evaluation and publishing both produce.
"""

from batch.metrics.accuracy import ranking_metrics
from batch.metrics.beyond import beyond_accuracy
from batch.metrics.churn import churn

__all__ = ["beyond_accuracy", "churn", "ranking_metrics"]
