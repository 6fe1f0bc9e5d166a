"""scikit-learn's embedded ``load_digits``: the default data set on a fresh machine."""
from __future__ import annotations

import numpy as np

from robust_al.data.pool import Dataset, Pool
from robust_al.data.loaders.common import split_train_test


def load_digits_dataset(test_size: float = 0.3, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1797 items, 64 features scaled to [0, 1] by /16), stratified split.

    Ids are the original row indices; there is no recorded crowd.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    ids = np.arange(len(y), dtype=np.int64)
    tr, te = split_train_test(len(y), test_size, seed, strata=y)
    names = [str(c) for c in range(10)]
    return Dataset(
        name="digits",
        train=Pool(ids[tr], X[tr], y[tr], 10, list(names)),
        test=Pool(ids[te], X[te], y[te], 10, list(names)),
        recorded=None,
    )
