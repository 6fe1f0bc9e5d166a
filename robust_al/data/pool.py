"""The pool of items a campaign works on: stable ids, inputs, optional ground truth."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

UNKNOWN = -1  # ground-truth value for items whose true class is not known


@dataclass
class Pool:
    """Items with stable integer ids.

    ``X`` is float32, either ``(n, d)`` features or ``(n, c, h, w)`` images scaled to [0, 1];
    ``y`` holds the true class per item or ``UNKNOWN`` (-1) where nobody knows it.
    """

    ids: np.ndarray
    X: np.ndarray
    y: np.ndarray
    n_classes: int
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        if not (len(self.ids) == len(self.X) == len(self.y)):
            raise ValueError(
                f"pool arrays disagree in length: ids={len(self.ids)} X={len(self.X)} y={len(self.y)}"
            )
        if len(np.unique(self.ids)) != len(self.ids):
            raise ValueError("pool item ids must be unique")
        bad = (self.y != UNKNOWN) & ((self.y < 0) | (self.y >= self.n_classes))
        if bad.any():
            raise ValueError(
                f"ground truth of item {int(self.ids[bad][0])} is {int(self.y[bad][0])}; "
                f"expected -1 or a class in 0..{self.n_classes - 1}"
            )
        if not self.class_names:
            self.class_names = [str(c) for c in range(self.n_classes)]
        self._pos = {int(i): p for p, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_image(self) -> bool:
        return self.X.ndim == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])

    @property
    def has_truth(self) -> bool:
        return bool((self.y != UNKNOWN).all())

    def positions(self, item_ids) -> np.ndarray:
        """Row positions of ``item_ids`` (raises KeyError naming an unknown id)."""
        try:
            return np.fromiter((self._pos[int(i)] for i in item_ids), dtype=np.int64)
        except KeyError as e:
            raise KeyError(f"item id {e.args[0]} is not in the pool") from None

    def extended(self, item_ids, X: np.ndarray, y: np.ndarray) -> "Pool":
        """This pool plus new items (e.g. injected poisons); ids must be new."""
        return Pool(np.concatenate([self.ids, np.asarray(item_ids, np.int64)]),
                    np.concatenate([self.X, np.asarray(X, np.float32)]),
                    np.concatenate([self.y, np.asarray(y, np.int64)]), self.n_classes, list(self.class_names))

    def subset(self, item_ids) -> "Pool":
        p = self.positions(item_ids)
        return Pool(self.ids[p], self.X[p], self.y[p], self.n_classes, list(self.class_names))


@dataclass
class Dataset:
    """A training pool, a test split, and optionally a recorded real crowd.

    ``recorded`` is crowd-kit's long format: columns ``task`` (pool item id), ``worker`` (str), ``label`` (int).
    """

    name: str
    train: Pool
    test: Pool
    recorded: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.recorded is not None:
            missing = {"task", "worker", "label"} - set(self.recorded.columns)
            if missing:
                raise ValueError(f"recorded crowd of {self.name!r} lacks columns {sorted(missing)}")
            unknown = ~self.recorded["task"].isin(self.train.ids)
            if unknown.any():
                raise ValueError(
                    f"recorded crowd of {self.name!r} names item {self.recorded['task'][unknown].iloc[0]} "
                    "that is not in the training pool"
                )
