"""The one small dataset with a known right answer the training tests share: two taste groups,
even users interact with even items and odd users with odd items."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from batch.data.interactions import Dataset, FeatureTable, IdMap, Interactions

# The SageMaker and contract tests' size: smaller, one held-out interaction in four, and item side
# features (so the design has feature columns a trainer must size its model for).
SMALL = {"n_users": 24, "n_items": 20, "per_user": 6, "test_every": 4, "held_out_rating": 4.0,
         "features": True}


def blocks_dataset(n_users: int = 40, n_items: int = 40, seed: int = 0, *, per_user: int = 8,
                   test_every: int = 8, held_out_rating: float = 5.0, features: bool = False) -> Dataset:
    """Users 1.. and items 100.. in two taste groups; each user interacts with ``per_user``
    distinct items of its own group (rated 4). Every ``test_every``-th interaction (by position,
    users in order) is held out, rated ``held_out_rating``: with the defaults, one per user and
    always of its own group, so a model that learnt anything ranks it high. ``features``: item
    side features ``even`` / ``odd``."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(n_users), per_user).astype(np.int32)
    item = np.concatenate([rng.choice(np.arange(u % 2, n_items, 2), per_user, replace=False)
                           for u in range(n_users)]).astype(np.int32)
    test = np.zeros(len(user), bool)
    test[::test_every] = True
    ratings = np.where(test, held_out_rating, 4.0).astype(np.float32)
    inter = Interactions(user, item, ratings, np.arange(len(user), dtype=np.int64))
    item_features = None
    if features:
        parity = np.stack([np.arange(n_items) % 2 == 0, np.arange(n_items) % 2 == 1], 1).astype(np.float32)
        item_features = FeatureTable(sp.csr_matrix(parity), ("even", "odd"))
    return Dataset(inter.take(~test), inter.take(test), IdMap(np.arange(n_users) + 1),
                   IdMap(np.arange(n_items) + 100), item_features=item_features)
