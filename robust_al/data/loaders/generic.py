"""A generic crowd on disk: features (``.npy`` / ``.csv``), a long ``item,worker,label`` CSV and an optional
truth file, each checked line by line."""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from robust_al.data.pool import UNKNOWN, Dataset, Pool
from robust_al.data.loaders.common import (TEST_ID_OFFSET, is_number, minmax_scale, recorded_frame,
                                           split_train_test, user_file)

log = logging.getLogger(__name__)


def _parse_int(raw: str, path: Path, line: int, column: str) -> int:
    s = raw.strip()
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or not v.is_integer():
        raise ValueError(f"{path}: line {line}: {column} {raw!r} is not an integer")
    return int(v)


def _check_label(v: int, raw: str, path: Path, line: int, n_classes: int | None, allow_unknown: bool) -> None:
    if allow_unknown and v == UNKNOWN:
        return
    if v < 0 or (n_classes is not None and v >= n_classes):
        expected = f"0..{n_classes - 1}" if n_classes is not None else "a non-negative integer"
        extra = " (or -1 = unknown)" if allow_unknown else ""
        raise ValueError(f"{path}: line {line}: label {raw!r} is out of range; expected {expected}{extra}")


def _read_features(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Features matrix and the ids from an ``item`` column (None if the file has no such column)."""
    if path.suffix.lower() == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path}: could not read a numeric .npy array without pickle ({e})") from None
        if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"{path}: expected a numeric 2-D array (n_items, n_features), got {X.dtype} {X.shape}")
        if not np.isfinite(X).all():
            r, c = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"{path}: row {r}, column {c}: feature value {X[r, c]} is not finite")
        return X.astype(np.float64), None
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: features must be a .npy or .csv file")

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: features file is empty")
    header = None
    first = 0
    if not all(is_number(c) for c in rows[0]):
        header = [c.strip() for c in rows[0]]
        first = 1
    body = rows[first:]
    if not body:
        raise ValueError(f"{path}: features file has a header but no rows")
    width = len(rows[0])
    data = np.empty((len(body), width), dtype=np.float64)
    for r, row in enumerate(body):
        line = r + first + 1
        if len(row) != width:
            raise ValueError(f"{path}: line {line}: expected {width} columns, found {len(row)}")
        try:
            data[r] = [float(c) for c in row]
        except ValueError:
            bad = next(c for c in row if not is_number(c))
            raise ValueError(f"{path}: line {line}: feature value {bad!r} is not a number") from None
    if not np.isfinite(data).all():
        r, c = np.argwhere(~np.isfinite(data))[0]
        raise ValueError(f"{path}: line {r + first + 1}: feature value {data[r, c]} is not finite")
    ids = None
    if header is not None:
        lower = [h.lower() for h in header]
        id_col = "item" if "item" in lower else None
        if id_col is not None:
            j = lower.index(id_col)
            col = data[:, j]
            if not np.all(col == np.round(col)):
                r = int(np.flatnonzero(col != np.round(col))[0])
                raise ValueError(f"{path}: line {r + 2}: item id {col[r]} is not an integer")
            ids = col.astype(np.int64)
            data = np.delete(data, j, axis=1)
            if len(np.unique(ids)) != len(ids):
                dup = pd.Series(ids).duplicated()
                raise ValueError(f"{path}: item id {int(ids[dup.to_numpy()][0])} appears more than once")
    if data.shape[1] == 0:
        raise ValueError(f"{path}: no feature columns besides the item id")
    return data, ids


def _header_index(header: list[str], path: Path, *alternatives: str) -> int:
    lower = [h.strip().lower() for h in header]
    for a in alternatives:
        if a in lower:
            return lower.index(a)
    raise ValueError(f"{path}: header {header} lacks a {'/'.join(repr(a) for a in alternatives)} column")


def _read_annotations(path: Path, known_ids: np.ndarray, n_classes: int | None) -> pd.DataFrame:
    known = {int(i) for i in known_ids}
    tasks, workers, labels = [], [], []
    seen: dict[tuple[int, str], tuple[int, int]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header 'item,worker,label'")
        ji = _header_index(header, path, "item", "task")
        jw = _header_index(header, path, "worker")
        jl = _header_index(header, path, "label")
        for line, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}: line {line}: expected {len(header)} columns, found {len(row)}")
            item = _parse_int(row[ji], path, line, "item")
            if item not in known:
                raise ValueError(f"{path}: line {line}: item {row[ji]!r} is not an item of the features file")
            worker = row[jw].strip()
            if not worker:
                raise ValueError(f"{path}: line {line}: empty worker id")
            lab = _parse_int(row[jl], path, line, "label")
            _check_label(lab, row[jl], path, line, n_classes, allow_unknown=False)
            # rule: a row repeated verbatim is one answer; the same worker giving two labels is refused
            first = seen.get((item, worker))
            if first is not None:
                if first[0] != lab:
                    raise ValueError(f"{path}: line {line}: worker {worker!r} answers item {item} with {lab}, but "
                                     f"line {first[1]} says {first[0]}; keep one answer per (item, worker)")
                continue
            seen[(item, worker)] = (lab, line)
            tasks.append(item)
            workers.append(worker)
            labels.append(lab)
    return recorded_frame(tasks, workers, labels)


def _read_truth(path: Path, ids: np.ndarray, n_classes: int | None) -> np.ndarray:
    """Truth per item of ``ids`` (-1 where the file gives none)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: truth file is empty")
    lower = [c.strip().lower() for c in rows[0]]
    y = np.full(len(ids), UNKNOWN, dtype=np.int64)
    if "label" in lower and ("item" in lower or "task" in lower) and len(lower) > 1:
        ji = _header_index(rows[0], path, "item", "task")
        jl = _header_index(rows[0], path, "label")
        pos = {int(i): p for p, i in enumerate(ids)}
        seen: set[int] = set()
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != len(rows[0]):
                raise ValueError(f"{path}: line {line}: expected {len(rows[0])} columns, found {len(row)}")
            item = _parse_int(row[ji], path, line, "item")
            if item not in pos:
                raise ValueError(f"{path}: line {line}: item {row[ji]!r} is not an item of the features file")
            if item in seen:
                raise ValueError(f"{path}: line {line}: item {item} is given a truth twice")
            seen.add(item)
            lab = _parse_int(row[jl], path, line, "label")
            _check_label(lab, row[jl], path, line, n_classes, allow_unknown=True)
            y[pos[item]] = lab
        return y
    # one label per line, in the row order of the features file
    start = 0
    if len(rows[0]) == 1 and not is_number(rows[0][0]):
        start = 1  # a one-word header such as "label"
    body = rows[start:]
    if any(len(r) != 1 for r in body):
        line = next(i for i, r in enumerate(body, start=start + 1) if len(r) != 1)
        raise ValueError(
            f"{path}: line {line}: expected one label per line (or a CSV with header 'item,label')"
        )
    if len(body) != len(ids):
        raise ValueError(f"{path}: {len(body)} labels for {len(ids)} feature rows; expected one label per row")
    for p, (row, line) in enumerate(zip(body, range(start + 1, start + 1 + len(body)))):
        lab = _parse_int(row[0], path, line, "label")
        _check_label(lab, row[0], path, line, n_classes, allow_unknown=True)
        y[p] = lab
    return y


def load_generic_crowd(
    features: str | Path,
    annotations: str | Path,
    truth: str | Path | None = None,
    test_features: str | Path | None = None,
    test_truth: str | Path | None = None,
    test_size: float = 0.3,
    seed: int = 0,
    n_classes: int | None = None,
) -> Dataset:
    """A crowd dataset from plain files.

    * ``features``: ``.npy`` (n, d) numeric array, or ``.csv`` (numeric, optional header).  If the header
      has an ``item`` column it gives the item ids, otherwise ids are the row indices.
    * ``annotations``: long CSV with header ``item,worker,label`` (``task`` accepted for ``item``).
    * ``truth`` (optional): CSV with header ``item,label`` or a one-column file of labels in row order;
      ``-1`` and items left out mean "unknown".
    * ``test_features`` / ``test_truth`` (optional): a separate test split.  Its ids come from its own
      ``item`` column, else are ``TEST_ID_OFFSET + row``; they must not collide with train ids.
      Without a test file the items are split: stratified on the truth when there is one (unknown
      truth forms its own stratum), else uniformly; annotations of test items are dropped.
    * ``n_classes``: if None, ``1 + `` the largest label seen in annotations and truth files.

    Features are min-max scaled to [0, 1] with TRAIN statistics (test values clipped).
    Raises ValueError naming the file, line and value for malformed input.
    """
    fpath = user_file(features, "a features .npy or .csv file")
    apath = user_file(annotations, "an annotations CSV with header item,worker,label")
    X, ids = _read_features(fpath)
    if ids is None:
        ids = np.arange(len(X), dtype=np.int64)
    if n_classes is not None and n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")

    recorded = _read_annotations(apath, ids, n_classes)
    y = _read_truth(user_file(truth, "a truth file"), ids, n_classes) if truth is not None else None

    if test_features is not None:
        tpath = user_file(test_features, "a test features .npy or .csv file")
        Xt, tids = _read_features(tpath)
        if Xt.shape[1] != X.shape[1]:
            raise ValueError(f"{tpath}: {Xt.shape[1]} feature columns, but {fpath} has {X.shape[1]}")
        if tids is None:
            tids = TEST_ID_OFFSET + np.arange(len(Xt), dtype=np.int64)
        clash = np.intersect1d(ids, tids)
        if len(clash):
            raise ValueError(f"{tpath}: test item id {int(clash[0])} is also a training item id in {fpath}")
        yt = (
            _read_truth(user_file(test_truth, "a test truth file"), tids, n_classes)
            if test_truth is not None
            else np.full(len(tids), UNKNOWN, dtype=np.int64)
        )
        ytr = y if y is not None else np.full(len(ids), UNKNOWN, dtype=np.int64)
        Xtr, Xte = minmax_scale(X, Xt)
        tr_ids = ids
    else:
        if test_truth is not None:
            raise ValueError("test_truth given without test_features")
        tr, te = split_train_test(len(ids), test_size, seed, strata=y)
        full_y = y if y is not None else np.full(len(ids), UNKNOWN, dtype=np.int64)
        tr_ids, tids, ytr, yt = ids[tr], ids[te], full_y[tr], full_y[te]
        Xtr, Xte = minmax_scale(X[tr], X[te])
        keep = recorded["task"].isin(tr_ids).to_numpy()
        if (~keep).any():
            log.info("%s: dropped %d annotations of items that went to the test split", apath, int((~keep).sum()))
        recorded = recorded[keep].reset_index(drop=True)

    if n_classes is None:
        # the answers say how many classes there are; a truth label beyond them is a typo, not a new class
        n_classes = int(recorded["label"].max()) + 1 if len(recorded) else 0
        if n_classes < 1:
            raise ValueError(f"{apath}: no labels to infer the number of classes from; pass n_classes")
        top = max(int(ytr.max(initial=-1)), int(yt.max(initial=-1)))
        if top >= n_classes:
            raise ValueError(f"{truth}: truth label {top} is not a class of the answers in {apath} "
                             f"(0..{n_classes - 1}); fix it or pass n_classes")
    names = [str(c) for c in range(n_classes)]
    return Dataset(
        name=fpath.stem,
        train=Pool(tr_ids, Xtr, ytr, n_classes, list(names)),
        test=Pool(tids, Xte, yt, n_classes, list(names)),
        recorded=recorded,
    )
