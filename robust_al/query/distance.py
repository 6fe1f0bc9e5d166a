"""Min distances from pool items to the labeled set, kept incrementally and computed in chunks."""
from __future__ import annotations

import numpy as np


def _sq_norms(X: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", X, X)


def min_sq_distances(X: np.ndarray, Y: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """min_j ||x_i - y_j||^2 for every row of X, never holding more than ``chunk`` x len(Y) distances."""
    out = np.full(len(X), np.inf, dtype=np.float32)
    if len(Y) == 0:
        return out
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    yy = _sq_norms(Y)
    # keep the block (chunk x ychunk) at most ~64M floats whatever the labeled-set size
    ychunk = max(1, min(len(Y), (64 << 20) // max(chunk, 1)))
    for s in range(0, len(X), chunk):
        Xc = np.ascontiguousarray(X[s:s + chunk], dtype=np.float32)
        xx = _sq_norms(Xc)
        best = out[s:s + chunk]
        for t in range(0, len(Y), ychunk):
            d = xx[:, None] + yy[None, t:t + ychunk] - 2.0 * (Xc @ Y[t:t + ychunk].T)
            np.minimum(best, d.min(axis=1), out=best)
    np.maximum(out, 0.0, out=out)  # the expansion can dip below zero by rounding
    return out


class MinDistance:
    """d_i = min over labeled y of ||e_i - y||^2 for every pool item i, in a fixed embedding ``E``.

    ``add`` folds in newly labeled points only (cost N x new), so keeping the distances costs the same
    each iteration however large the labeled set grows; ``reset`` recomputes from scratch in a new
    embedding (after the model's feature space was refreshed).
    """

    E: np.ndarray  # set by reset
    d: np.ndarray

    def __init__(self, E: np.ndarray, chunk: int = 65536):
        self.chunk = chunk
        self.reset(E, np.zeros((0, E.shape[1]), dtype=np.float32))

    def reset(self, E: np.ndarray, labeled: np.ndarray) -> None:
        self.E = np.ascontiguousarray(E, dtype=np.float32)
        self.d = min_sq_distances(self.E, labeled, self.chunk)

    def add(self, points: np.ndarray) -> None:
        if len(points):
            np.minimum(self.d, min_sq_distances(self.E, points, self.chunk), out=self.d)

    def add_positions(self, positions: np.ndarray) -> None:
        self.add(self.E[np.asarray(positions, dtype=np.int64)])
