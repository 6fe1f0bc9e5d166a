"""The secured holdout S: a stratified, trusted-labeled subset no annotator ever sees (section III-B)."""
from __future__ import annotations

import numpy as np

from robust_al.data.pool import Pool


def draw_holdout(pool: Pool, free_ids: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` ids from ``free_ids``, stratified by true class (largest-remainder shares), sorted.

    S is labeled with trusted labels, so only items whose truth is known qualify.
    """
    free_ids = np.asarray(free_ids, dtype=np.int64)
    y = pool.y[pool.positions(free_ids)]
    known = y >= 0
    if known.sum() < size:
        raise ValueError(f"holdout.size = {size}, but only {int(known.sum())} free items have a trusted label")
    ids, y = free_ids[known], y[known]
    classes, counts = np.unique(y, return_counts=True)
    want = size * counts / counts.sum()
    take = np.floor(want).astype(int)
    for c in np.argsort(-(want - take), kind="stable")[: size - take.sum()]:
        take[c] += 1
    out = [rng.choice(ids[y == c], size=t, replace=False) for c, t in zip(classes, take) if t]
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)
