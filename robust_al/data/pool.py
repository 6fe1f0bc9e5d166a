"""The pool of items a campaign works on: stable ids, inputs, optional ground truth."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

UNKNOWN = -1  # ground-truth value for items whose true class is not known


@dataclass
class Pool:
    """Items with stable integer ids.

    ``X`` is float32, either ``(n, d)`` features or ``(n, c, h, w)`` images scaled to [0, 1];
    ``y`` holds the true class per item or ``UNKNOWN`` (-1) where nobody knows it.

    The integer ``ids`` are what the store and the loop use. What a person knows the item by, and what they
    must see to label it, travel alongside:

    - ``keys``: the user's own item id (a relative file path, a table's id column), a string per item;
      ``str(id)`` when the data has none. Exports and Label Studio tasks use it.
    - ``media_kind`` / ``media``: ``"image"`` with the image file's absolute path per item, or ``"text"``
      with the text per item; ``None`` for bare feature vectors. ``media_root`` is the folder image paths
      live under (what a Label Studio local-files storage serves).
    """

    ids: np.ndarray
    X: np.ndarray
    y: np.ndarray
    n_classes: int
    class_names: list[str] = field(default_factory=list)
    keys: np.ndarray | None = None
    media: np.ndarray | None = None
    media_kind: str | None = None
    media_root: Path | None = None

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
        self.keys = (np.array([str(i) for i in self.ids], dtype=object) if self.keys is None
                     else np.asarray(self.keys, dtype=object))
        if len(self.keys) != len(self.ids):
            raise ValueError(f"pool keys disagree in length with ids: {len(self.keys)} vs {len(self.ids)}")
        if self.media is not None:
            self.media = np.asarray(self.media, dtype=object)
            if len(self.media) != len(self.ids):
                raise ValueError(f"pool media disagree in length with ids: {len(self.media)} vs {len(self.ids)}")
            if self.media_kind not in ("image", "text"):
                raise ValueError(f"media_kind must be 'image' or 'text' when media are given, not {self.media_kind!r}")
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

    def extended(self, item_ids, X: np.ndarray, y: np.ndarray) -> Pool:
        """This pool plus new items (e.g. injected poisons, which have no media); ids must be new."""
        item_ids = np.asarray(item_ids, np.int64)
        media = None if self.media is None else np.concatenate([self.media, np.full(len(item_ids), None, object)])
        return Pool(np.concatenate([self.ids, item_ids]),
                    np.concatenate([self.X, np.asarray(X, np.float32)]),
                    np.concatenate([self.y, np.asarray(y, np.int64)]), self.n_classes, list(self.class_names),
                    keys=np.concatenate([self.keys, np.array([str(i) for i in item_ids], dtype=object)]),
                    media=media, media_kind=self.media_kind, media_root=self.media_root)

    def subset(self, item_ids) -> Pool:
        p = self.positions(item_ids)
        return Pool(self.ids[p], self.X[p], self.y[p], self.n_classes, list(self.class_names), keys=self.keys[p],
                    media=None if self.media is None else self.media[p], media_kind=self.media_kind,
                    media_root=self.media_root)


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

    @staticmethod
    def from_arrays(X, y=None, keys=None, class_names=None, test=None, name: str = "arrays") -> Dataset:
        """A Dataset from in-memory arrays (features or images in [0, 1]), e.g. in a notebook::

            ds = Dataset.from_arrays(X, y, keys=ids, class_names=["ham", "spam"])

        See :func:`robust_al.data.arrays.from_arrays`.
        """
        from robust_al.data.arrays import from_arrays

        return from_arrays(X, y, keys=keys, class_names=class_names, test=test, name=name)

    @staticmethod
    def from_torch(torch_dataset, class_names=None, keys=None, test=None, name: str = "torch") -> Dataset:
        """A Dataset from a torch ``Dataset`` yielding ``(x, y)``; see :func:`robust_al.data.arrays.from_torch`."""
        from robust_al.data.arrays import from_torch

        return from_torch(torch_dataset, class_names=class_names, keys=keys, test=test, name=name)
