"""Pools from arrays in memory (a notebook), and the assembly every loader of a user's own data shares.

From Python::

    import numpy as np
    from robust_al.data import Dataset

    X = np.random.rand(500, 20).astype("float32")          # features (n, d) or images (n, 3, h, w) in [0, 1]
    y = (X[:, 0] > 0.5).astype(int)   # class per row; -1 = unknown (a simulated crowd needs every truth)
    ds = Dataset.from_arrays(X, y, keys=[f"doc-{i}" for i in range(500)], class_names=["ham", "spam"])
    # ds.train.keys[0] == "doc-0"; ds.train.ids == 0..499 (row positions)

    # or a torch Dataset yielding (x, y), e.g. torchvision's CIFAR10(..., transform=ToTensor()):
    ds = Dataset.from_torch(my_torch_dataset, class_names=["cat", "dog"])

Feature matrices are min-max scaled to [0, 1] with training statistics (test clipped), as every loader
does; image arrays must already lie in [0, 1].
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robust_al.data.loaders import TEST_ID_OFFSET, minmax_scale, split_train_test
from robust_al.data.pool import UNKNOWN, Dataset, Pool

Where = Callable[[int], str]


def _row(i: int) -> str:
    return f"row {i + 1}"


# --------------------------------------------------------------------------------------------
# shared assembly
# --------------------------------------------------------------------------------------------
def sort_keys(keys: Sequence[Any], source: str) -> tuple[np.ndarray, np.ndarray]:
    """The keys as strings in sorted order and the positions that sort them; a duplicate is a ValueError."""
    keys = np.array([str(k) for k in keys], dtype=object)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    dup = sk[1:][sk[1:] == sk[:-1]]
    if len(dup):
        raise ValueError(f"{source}: duplicate item id {dup[0]!r}; item ids must be unique")
    return sk, order


def encode_labels(values: Sequence[Any], class_names: Sequence[str] | None, source: str,
                  where: Where = _row) -> tuple[np.ndarray, list[str]]:
    """Class indices of label values (names; None / NaN / '' = unknown -> -1) and the class names.

    Without ``class_names`` the classes are the sorted distinct values (numerically when all are integers).
    """
    def missing(v: Any) -> bool:
        return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())

    text = [None if missing(v) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip())
            for v in values]
    if class_names is None:
        seen = sorted({t for t in text if t is not None})
        if all(s.lstrip("-").isdigit() for s in seen):
            seen.sort(key=int)
        names = seen
    else:
        names = [str(c) for c in class_names]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"class_names {names} must be distinct and non-empty")
    index = {c: k for k, c in enumerate(names)}
    y = np.full(len(text), UNKNOWN, dtype=np.int64)
    for i, t in enumerate(text):
        if t is None:
            continue
        if t not in index:
            raise ValueError(f"{source}: {where(i)}: label {t!r} is not a class; known classes: {names}")
        y[i] = index[t]
    return y, names


def check_finite(X: np.ndarray, source: str, where: Where = _row) -> None:
    """ValueError naming the first row with an inf or nan."""
    bad = ~np.isfinite(X.reshape(len(X), -1))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{source}: {where(int(i))}: feature {int(j)} is {X.reshape(len(X), -1)[i, j]}; "
                         "features must be finite numbers")


def split_positions(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train / test positions: everything in train for ``test_size == 0``, else stratified on the truth
    (unknown truth is its own stratum)."""
    n = len(y)
    if test_size == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    return split_train_test(n, test_size, seed, strata=y if (y != UNKNOWN).any() else None)


def make_dataset(name: str, keys: np.ndarray, X: np.ndarray, y: np.ndarray, class_names: list[str],
                 tr: np.ndarray, te: np.ndarray, media: np.ndarray | None = None, media_kind: str | None = None,
                 media_root: Path | None = None) -> Dataset:
    """Train / test pools of items ``0..n-1`` (the order given); 2-D features min-max scaled with train stats."""
    ids = np.arange(len(X), dtype=np.int64)
    Xtr, Xte = minmax_scale(X[tr], X[te]) if X.ndim == 2 else (X[tr], X[te])
    k = len(class_names)

    def pool(p: np.ndarray, Xp: np.ndarray) -> Pool:
        return Pool(ids[p], Xp, y[p], k, list(class_names), keys=keys[p],
                    media=None if media is None else media[p], media_kind=media_kind, media_root=media_root)

    return Dataset(name=name, train=pool(tr, Xtr), test=pool(te, Xte))


# --------------------------------------------------------------------------------------------
# from Python
# --------------------------------------------------------------------------------------------
def _labels(y: Any, n: int, class_names: Sequence[str] | None, source: str) -> tuple[np.ndarray, list[str]]:
    if y is None:
        if class_names is None:
            raise ValueError(f"{source}: without y, class_names must name the classes")
        return np.full(n, UNKNOWN, dtype=np.int64), [str(c) for c in class_names]
    y = np.asarray(y)
    if len(y) != n:
        raise ValueError(f"{source}: y has {len(y)} entries but X has {n} rows")
    if y.dtype.kind in "iu":
        k = len(class_names) if class_names is not None else int(y.max(initial=-1)) + 1
        bad = (y < UNKNOWN) | (y >= k)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{source}: y[{i}] = {int(y[i])}; expected -1 (unknown) or a class in 0..{k - 1}")
        return y.astype(np.int64), [str(c) for c in class_names] if class_names is not None else [
            str(c) for c in range(k)]
    return encode_labels(list(y), class_names, source, where=lambda i: f"y[{i}]")


def _inputs(X: Any, source: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim not in (2, 4):
        raise ValueError(f"{source}: X must be features (n, d) or images (n, c, h, w), got shape {X.shape}")
    check_finite(X, source, where=lambda i: f"X[{i}]")
    if X.ndim == 4 and len(X) and (X.min() < 0 or X.max() > 1):
        raise ValueError(f"{source}: image values must lie in [0, 1], got {X.min()}..{X.max()}")
    return X


def from_arrays(X: Any, y: Any = None, keys: Sequence[Any] | None = None,
                class_names: Sequence[str] | None = None, test: tuple | None = None,
                name: str = "arrays") -> Dataset:
    """A Dataset from arrays; see the module docstring for an example.

    ``y``: class indices (-1 = unknown) or class names; None = no truth (then ``class_names`` is required).
    ``keys``: the user's id per row (default ``str(row)``); item ids are the row positions 0..n-1.
    ``test``: ``(X_test, y_test)`` for reporting, ids ``TEST_ID_OFFSET + row``; None = no test split.
    """
    X = _inputs(X, name)
    y, names = _labels(y, len(X), class_names, name)
    keys = np.array([str(i) for i in range(len(X))] if keys is None else [str(k) for k in keys], dtype=object)
    if len(keys) != len(X):
        raise ValueError(f"{name}: {len(keys)} keys for {len(X)} rows of X")
    sort_keys(keys, name)  # only for its duplicate check: ids follow the rows
    if test is None:
        Xt, yt = np.zeros((0, *X.shape[1:]), np.float32), np.zeros(0, np.int64)
    else:
        Xt = _inputs(test[0], f"{name} test")
        yt, _ = _labels(test[1], len(Xt), names, f"{name} test")
        if Xt.shape[1:] != X.shape[1:]:
            raise ValueError(f"{name}: test inputs have shape {Xt.shape[1:]}, training inputs {X.shape[1:]}")
    Xtr, Xte = minmax_scale(X, Xt) if X.ndim == 2 else (X, Xt)
    k = len(names)
    return Dataset(name=name, train=Pool(np.arange(len(X)), Xtr, y, k, list(names), keys=keys),
                   test=Pool(TEST_ID_OFFSET + np.arange(len(Xt)), Xte, yt, k, list(names)))


def _collect(torch_dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    # a map-style dataset is read by index: plain iteration only ends where __getitem__ raises IndexError
    items = ((torch_dataset[i] for i in range(len(torch_dataset))) if hasattr(torch_dataset, "__len__")
             else iter(torch_dataset))
    for x, t in items:
        if hasattr(x, "convert") and hasattr(x, "size"):  # a PIL image: what ToTensor() would make of it
            x = np.asarray(x.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
        xs.append(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32))
        ys.append(int(t))
    if not xs:
        raise ValueError("from_torch: the dataset is empty")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def from_torch(torch_dataset: Any, class_names: Sequence[str] | None = None, keys: Sequence[Any] | None = None,
               test: Any = None, name: str = "torch") -> Dataset:
    """A Dataset from a torch ``Dataset`` yielding ``(x, y)`` (x a tensor, array or PIL image; y an int, -1 =
    unknown); ``test`` is another such dataset or None. ``class_names`` defaults to the dataset's ``classes``."""
    if class_names is None:
        class_names = getattr(torch_dataset, "classes", None)
    X, y = _collect(torch_dataset)
    return from_arrays(X, y, keys=keys, class_names=class_names,
                       test=None if test is None else _collect(test), name=name)
