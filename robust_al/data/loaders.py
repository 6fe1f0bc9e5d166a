"""Loaders that turn datasets on disk into :class:`~robust_al.data.pool.Dataset` objects.

Everything is read with numpy / csv / tarfile + Pillow; nothing is ever unpickled and nothing is
cached on disk.  Real-crowd datasets live under :func:`default_datasets_dir` (override it with the
``ROBUST_AL_DATASETS`` environment variable).

Id conventions: train ids are the dataset's own item ids (row index, CIFAR-10 training index,
or the ``item`` column of a generic features file).  Items of a *separate* test split get
``TEST_ID_OFFSET + index`` so that train and test ids never collide.
"""
from __future__ import annotations

import csv
import importlib
import inspect
import io
import logging
import math
import os
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robust_al.data.pool import UNKNOWN, Dataset, Pool

log = logging.getLogger(__name__)

ENV_VAR = "ROBUST_AL_DATASETS"
TEST_ID_OFFSET = 1_000_000

LABELME_CLASSES = [
    "highway", "insidecity", "tallbuilding", "street", "forest", "coast", "mountain", "opencountry",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

__all__ = [
    "TEST_ID_OFFSET",
    "default_datasets_dir",
    "load_digits_dataset",
    "load_generic_crowd",
    "load_labelme",
    "load_cifar10n",
    "load_cifar2",
    "load_dataset",
    "get_loader",
    "check_options",
]


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------
def default_datasets_dir() -> Path:
    """Folder holding the shared datasets.

    ``$ROBUST_AL_DATASETS`` if set, else ``../shared/datasets`` relative to the current working
    directory if that exists, else ``shared/datasets`` beside the source checkout this package was installed
    from (editable installs).  The folder is not required to exist.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    rel = Path.cwd() / ".." / "shared" / "datasets"
    if rel.is_dir():
        return rel.resolve()
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets").resolve()


def _require(path: Path, what: str) -> Path:
    """Return ``path`` or raise FileNotFoundError saying what was expected and how to point elsewhere."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found (expected {what}). Set the {ENV_VAR} environment variable to the folder "
            f"holding the datasets, or pass root= explicitly (default is {default_datasets_dir()})."
        )
    return path


def _user_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found (expected {what})")
    return p


# --------------------------------------------------------------------------------------------
# small numeric helpers
# --------------------------------------------------------------------------------------------
def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over groups proportionally to ``counts`` (largest remainder, never above a count)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if n > total:
        raise ValueError(f"cannot take {n} items from {total}")
    exact = counts * (n / total) if total else np.zeros(len(counts))
    take = np.minimum(np.floor(exact).astype(np.int64), counts)
    rest = n - int(take.sum())
    order = np.argsort(-(exact - take), kind="stable")
    for g in order:
        if rest == 0:
            break
        if take[g] < counts[g]:
            take[g] += 1
            rest -= 1
    return take


def _stratified_choice(strata: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``n`` items drawn without replacement, class proportions kept (sorted positions)."""
    values, inverse = np.unique(strata, return_inverse=True)
    take = _allocate(np.bincount(inverse, minlength=len(values)), n)
    chosen = [rng.choice(np.flatnonzero(inverse == g), size=k, replace=False) for g, k in enumerate(take) if k]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _split(n: int, test_size: float, seed: int, strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Train / test positions; stratified on ``strata`` when given, otherwise uniformly random."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    n_test = math.ceil(n * test_size)
    if n_test >= n:
        raise ValueError(f"test_size={test_size} leaves no training items out of {n}")
    rng = np.random.default_rng(seed)
    if strata is None:
        test = np.sort(rng.choice(n, size=n_test, replace=False))
    else:
        test = _stratified_choice(np.asarray(strata), n_test, rng)
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def _minmax(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale columns to [0, 1] with the train min/max; other arrays are clipped. Constant columns -> 0."""
    lo = train.min(axis=0)
    span = train.max(axis=0) - lo
    span = np.where(span > 0, span, 1.0)
    out = [((train - lo) / span).astype(np.float32)]
    out += [np.clip((o - lo) / span, 0.0, 1.0).astype(np.float32) for o in others]
    return out


def _recorded_frame(task, worker, label) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": np.asarray(task, dtype=np.int64),
            "worker": pd.Series(list(worker), dtype=object),
            "label": np.asarray(label, dtype=np.int64),
        }
    )


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------
def load_digits_dataset(test_size: float = 0.3, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1797 items, 64 features scaled to [0, 1] by /16), stratified split.

    Ids are the original row indices; there is no recorded crowd.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    ids = np.arange(len(y), dtype=np.int64)
    tr, te = _split(len(y), test_size, seed, strata=y)
    names = [str(c) for c in range(10)]
    return Dataset(
        name="digits",
        train=Pool(ids[tr], X[tr], y[tr], 10, list(names)),
        test=Pool(ids[te], X[te], y[te], 10, list(names)),
        recorded=None,
    )


# --------------------------------------------------------------------------------------------
# generic crowd files
# --------------------------------------------------------------------------------------------
def is_number(s) -> bool:
    """Does ``s`` read as a float (a CSV cell: is this row data or a header)?"""
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


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
    known = set(int(i) for i in known_ids)
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
    return _recorded_frame(tasks, workers, labels)


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
    fpath = _user_file(features, "a features .npy or .csv file")
    apath = _user_file(annotations, "an annotations CSV with header item,worker,label")
    X, ids = _read_features(fpath)
    if ids is None:
        ids = np.arange(len(X), dtype=np.int64)
    if n_classes is not None and n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")

    recorded = _read_annotations(apath, ids, n_classes)
    y = _read_truth(_user_file(truth, "a truth file"), ids, n_classes) if truth is not None else None

    if test_features is not None:
        tpath = _user_file(test_features, "a test features .npy or .csv file")
        Xt, tids = _read_features(tpath)
        if Xt.shape[1] != X.shape[1]:
            raise ValueError(f"{tpath}: {Xt.shape[1]} feature columns, but {fpath} has {X.shape[1]}")
        if tids is None:
            tids = TEST_ID_OFFSET + np.arange(len(Xt), dtype=np.int64)
        clash = np.intersect1d(ids, tids)
        if len(clash):
            raise ValueError(f"{tpath}: test item id {int(clash[0])} is also a training item id in {fpath}")
        yt = (
            _read_truth(_user_file(test_truth, "a test truth file"), tids, n_classes)
            if test_truth is not None
            else np.full(len(tids), UNKNOWN, dtype=np.int64)
        )
        ytr = y if y is not None else np.full(len(ids), UNKNOWN, dtype=np.int64)
        Xtr, Xte = _minmax(X, Xt)
        tr_ids = ids
    else:
        if test_truth is not None:
            raise ValueError("test_truth given without test_features")
        tr, te = _split(len(ids), test_size, seed, strata=y)
        full_y = y if y is not None else np.full(len(ids), UNKNOWN, dtype=np.int64)
        tr_ids, tids, ytr, yt = ids[tr], ids[te], full_y[tr], full_y[te]
        Xtr, Xte = _minmax(X[tr], X[te])
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


# --------------------------------------------------------------------------------------------
# LabelMe
# --------------------------------------------------------------------------------------------
def _load_int_matrix(path: Path, what: str) -> np.ndarray:
    try:
        a = np.loadtxt(_require(path, what), dtype=np.float64, ndmin=1)
    except ValueError as e:
        raise ValueError(f"{path}: expected {what} ({e})") from None
    if not np.all(a == np.round(a)):
        raise ValueError(f"{path}: expected {what}, found non-integer values")
    return a.astype(np.int64)


def read_answer_matrix(path: Path, n_classes: int) -> np.ndarray:
    """An items x workers answer matrix (LabelMe, Sentiment polarity: ``answers.txt``), -1 = no answer.

    One-line ValueError naming the file for a non-integer, non-2-D or out-of-range (not -1..n_classes-1) entry.
    """
    answers = _load_int_matrix(path, "an integer matrix items x workers, -1 = no answer")
    if answers.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D matrix (items x workers), got {answers.shape}")
    bad = (answers < -1) | (answers >= n_classes)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{path}: line {r + 1}, column {c + 1}: value {answers[r, c]}; expected -1..{n_classes - 1}")
    return answers


def _load_npy(path: Path, what: str) -> np.ndarray:
    X = np.load(_require(path, what), allow_pickle=False)
    if X.ndim != 2:
        raise ValueError(f"{path}: expected {what}, got shape {X.shape}")
    return X


def load_labelme(root: str | Path | None = None) -> Dataset:
    """LabelMe scenes with Amazon Mechanical Turk labels (Rodrigues & Pereira 2018), 8 classes.

    ``root`` defaults to ``default_datasets_dir() / 'labelme'``.  Train = 1000 items (ids 0..999,
    VGG16 average-pooled 512-d features, truth from LabelMe_Z_train.txt); test = the 1188-item
    ``test`` split (ids ``TEST_ID_OFFSET + row``); the 500-item ``valid`` split is not used.
    ``recorded`` comes from answers.txt (1000 x 59, -1 = no answer), worker ``amt{j}`` for column j.
    Features are min-max scaled with train statistics (test clipped to [0, 1]).
    """
    root = Path(root) if root is not None else default_datasets_dir() / "labelme"
    _require(root, "the LabelMe folder")
    k = len(LABELME_CLASSES)
    X = _load_npy(root / "LabelMe_VGG_avg_train.npy", "train features, float (1000, 512)")
    Xt = _load_npy(root / "LabelMe_VGG_avg_test.npy", "test features, float (1188, 512)")
    y = _load_int_matrix(root / "LabelMe_Z_train.txt", "one train class id (0..7) per line")
    yt = _load_int_matrix(root / "LabelMe_Z_test.txt", "one test class id (0..7) per line")
    answers = read_answer_matrix(root / "answers.txt", k)
    for path, arr, n in (
        (root / "LabelMe_Z_train.txt", y, len(X)),
        (root / "answers.txt", answers, len(X)),
        (root / "LabelMe_Z_test.txt", yt, len(Xt)),
    ):
        if len(arr) != n:
            raise ValueError(f"{path}: {len(arr)} rows, but the matching features file has {n}")
    if Xt.shape[1] != X.shape[1]:
        raise ValueError(f"{root}: train features have {X.shape[1]} columns, test features {Xt.shape[1]}")

    ids = np.arange(len(X), dtype=np.int64)
    rows, cols = np.nonzero(answers != -1)
    recorded = _recorded_frame(ids[rows], [f"amt{j}" for j in cols], answers[rows, cols])
    Xs, Xts = _minmax(X.astype(np.float64), Xt.astype(np.float64))
    return Dataset(
        name="labelme",
        train=Pool(ids, Xs, y, k, list(LABELME_CLASSES)),
        test=Pool(TEST_ID_OFFSET + np.arange(len(Xt), dtype=np.int64), Xts, yt, k, list(LABELME_CLASSES)),
        recorded=recorded,
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-10N
# --------------------------------------------------------------------------------------------
def _decode_jpeg(data: bytes, name: str, archive: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"))
    if arr.shape != (32, 32, 3):
        raise ValueError(f"{archive}: member {name} is {arr.shape[1]}x{arr.shape[0]}, expected a 32x32 image")
    return arr.transpose(2, 0, 1)


def _member_key(name: str) -> str:
    """Archive member name without a leading './' or a top folder above train/ and test/."""
    while name.startswith("./"):
        name = name[2:]
    parts = name.split("/")
    if len(parts) > 3 and parts[0] not in ("train", "test"):
        parts = parts[1:]
    return "/".join(parts)


def read_cifar10n_labels(long_csv: Path) -> pd.DataFrame:
    """The CIFAR-10N long table (image_index, slot, worker_id, label, clean_label), columns and labels checked.

    One-line ValueError naming the file for a missing column, a non-integer cell or a label outside 0..9.
    """
    try:
        labels = pd.read_csv(long_csv)
    except (ValueError, pd.errors.ParserError) as e:
        raise ValueError(f"{long_csv}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = {"image_index", "worker_id", "label"} - set(labels.columns)
    if missing:
        raise ValueError(f"{long_csv}: lacks columns {sorted(missing)}; expected image_index,slot,worker_id,label,clean_label")
    for col in ("image_index", "label", "clean_label"):
        if col in labels.columns and not pd.api.types.is_integer_dtype(labels[col]):
            vals = pd.to_numeric(labels[col], errors="coerce")
            bad = (vals.isna() | (vals != np.round(vals))).to_numpy()
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{long_csv}: line {r + 2}: {col} {labels[col].iloc[r]!r} is not an integer")
            labels[col] = vals.astype(np.int64)
    for col in ("label", "clean_label"):
        if col in labels.columns:
            bad = ~labels[col].between(0, len(CIFAR10_CLASSES) - 1)
            if bad.any():
                raise ValueError(f"{long_csv}: line {int(np.flatnonzero(bad.to_numpy())[0]) + 2}: {col} "
                                 f"{labels[col][bad].iloc[0]} is not a CIFAR-10 class id 0..9")
    return labels


def read_id_list(path: str | Path, key: str) -> np.ndarray:
    """The integer ``index`` column of CSV ``path`` (named ``key`` in errors): distinct, non-negative ids."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {path} not found (expected a CSV with an 'index' column of training indices)")
    ids = pd.read_csv(path)
    if "index" not in ids.columns or not pd.api.types.is_integer_dtype(ids["index"]):
        raise ValueError(f"{key}: {path} needs an integer 'index' column, found columns {list(ids.columns)}")
    if (ids["index"] < 0).any() or ids["index"].duplicated().any():
        raise ValueError(f"{key}: {path}: 'index' holds negative or repeated ids")
    return ids["index"].to_numpy(dtype=np.int64)


def cifar10_train_sample(index_csv: Path, remap: np.ndarray, n_train: int | None, rng: np.random.Generator,
                         exclude: str | Path | None = None) -> pd.DataFrame:
    """Rows (index, clean_label, path) of the CIFAR-10 training images of the kept classes (``remap`` >= 0),
    minus ``exclude``'s ids, sorted by index; a stratified sample of ``n_train`` of them when given."""
    index = pd.read_csv(index_csv)
    missing = {"index", "clean_label", "path"} - set(index.columns)
    if missing:
        raise ValueError(f"{index_csv}: lacks columns {sorted(missing)}; expected index,clean_label,path")
    index = index[remap[index["clean_label"].to_numpy()] >= 0].sort_values("index").reset_index(drop=True)
    if exclude is not None:
        index = index[~index["index"].isin(read_id_list(exclude, "data.options.exclude"))].reset_index(drop=True)
    if n_train is not None:
        if n_train > len(index):
            raise ValueError(f"n_train={n_train} but only {len(index)} training images of the chosen classes")
        index = index.iloc[_stratified_choice(index["clean_label"].to_numpy(), n_train, rng)].reset_index(drop=True)
    return index


def class_remap(classes: Sequence[str]) -> np.ndarray:
    """CIFAR-10 class code -> position in ``classes`` (-1: not kept)."""
    remap = np.full(len(CIFAR10_CLASSES), -1, dtype=np.int64)
    for new, name in enumerate(classes):
        remap[CIFAR10_CLASSES.index(name)] = new
    return remap


def load_cifar10n(
    root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    backbone: Mapping[str, Any] | None = None,
    exclude: str | Path | None = None,
) -> Dataset:
    """CIFAR-10 JPEG images with the CIFAR-10N human labels (Wei et al. 2022; CC BY-NC 4.0).

    ``root`` (default :func:`default_datasets_dir`) must hold ``cifar10_images/`` and ``cifar10n/``.
    ``classes``: CIFAR-10 class names to keep (None = all 10), relabelled 0..len(classes)-1 in the
    given order.  ``n_train`` / ``n_test``: stratified, seeded samples of the train / test images of
    those classes (None = all).  Train ids are the CIFAR-10 training indices (the order CIFAR-10N
    uses); test ids are ``TEST_ID_OFFSET + r`` with r the running index over the archive's
    ``test/<class>/<file>.jpg`` members sorted by (CIFAR-10 class, file name), so ids do not
    depend on the class subset or the seed.  ``X`` is (n, 3, 32, 32) float32 in [0, 1].

    ``recorded``: the 3 human labels per training image, worker ``c10n_{worker_id}``.  With a class
    subset, a human answer that names a class outside the subset (e.g. 'cat' for an airplane/frog
    item) is an answer outside the task's classes: it is dropped (count reported by a logging
    warning).  An item whose annotators all answered outside the subset has no recorded labels.

    The archive is read once, as a stream, and only the needed JPEGs are decoded; nothing is cached.

    ``backbone`` ({arch, weights[, layer, batch_size, normalize]}, see :mod:`robust_al.data.backbone`): ``X``
    is the frozen network's features of the images instead of the pixels, computed once here, so that a
    campaign trains only its head on them (e.g. the CIFAR-8 pretraining of :mod:`robust_al.data.pretrain`).
    ``exclude``: a CSV whose ``index`` column lists CIFAR-10 training indices to leave out of the pool before
    sampling, e.g. the images that backbone was pretrained on with their clean labels
    (``pipelines/pretrain_backbone.py`` writes them next to the weights, ``<weights>.train_ids.csv``).
    """
    base = Path(root) if root is not None else default_datasets_dir()
    archive = _require(base / "cifar10_images" / "CIFAR-10-images_jpg.tar.gz", "the CIFAR-10 JPEG archive")
    index_csv = _require(
        base / "cifar10_images" / "train_index_pytorch_order.csv", "the CSV index,clean_label,path"
    )
    long_csv = _require(
        base / "cifar10n" / "cifar10n_worker_labels_long.csv",
        "the CSV image_index,slot,worker_id,label,clean_label",
    )

    classes = list(CIFAR10_CLASSES if classes is None else classes)
    if isinstance(classes, str) or not classes:
        raise ValueError("classes must be a non-empty sequence of CIFAR-10 class names")
    unknown = [c for c in classes if c not in CIFAR10_CLASSES]
    if unknown or len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} must be distinct names among {CIFAR10_CLASSES}")
    k = len(classes)
    remap = class_remap(classes)

    # ---- train index and sample
    rng = np.random.default_rng(seed)
    index = cifar10_train_sample(index_csv, remap, n_train, rng, exclude)
    train_pos = {_member_key(p): i for i, p in enumerate(index["path"])}

    # ---- one streaming pass over the archive
    wanted_test = {f"test/{c}/" for c in classes}
    all_test: list[tuple[int, str]] = []
    test_bytes: dict[str, bytes] = {}
    X = np.empty((len(index), 3, 32, 32), dtype=np.uint8)
    found = np.zeros(len(index), dtype=bool)
    with tarfile.open(archive, mode="r|gz") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key = _member_key(m.name)
            if key.startswith("test/"):
                cls = key.split("/")[1]
                if cls in CIFAR10_CLASSES and key.lower().endswith(".jpg"):
                    all_test.append((CIFAR10_CLASSES.index(cls), key))
                    if key[: key.rfind("/") + 1] in wanted_test:
                        test_bytes[key] = tar.extractfile(m).read()
            elif key in train_pos:
                i = train_pos[key]
                X[i] = _decode_jpeg(tar.extractfile(m).read(), m.name, archive)
                found[i] = True
    if not found.all():
        miss = index["path"][~found].iloc[0]
        raise ValueError(f"{archive}: member {miss!r} (listed in {index_csv}) is missing; {int((~found).sum())} missing in all")

    # ---- test: running ids over the whole test set, sample, decode
    all_test.sort()
    test_keys = [key for _, key in all_test if key in test_bytes]
    test_ids = np.array([TEST_ID_OFFSET + r for r, (_, key) in enumerate(all_test) if key in test_bytes], dtype=np.int64)
    test_y = remap[np.array([CIFAR10_CLASSES.index(key.split("/")[1]) for key in test_keys], dtype=np.int64)]
    if not test_keys:
        raise ValueError(f"{archive}: no test/<class>/*.jpg members for classes {classes}")
    if n_test is not None:
        if n_test > len(test_keys):
            raise ValueError(f"n_test={n_test} but only {len(test_keys)} test images of classes {classes}")
        sel = _stratified_choice(test_y, n_test, rng)
    else:
        sel = np.arange(len(test_keys))
    Xt = np.stack([_decode_jpeg(test_bytes[test_keys[s]], test_keys[s], archive) for s in sel]) if len(sel) else (
        np.empty((0, 3, 32, 32), dtype=np.uint8)
    )
    test_ids, test_y = test_ids[sel], test_y[sel]

    # ---- recorded human labels
    train_ids = index["index"].to_numpy(dtype=np.int64)
    labels = read_cifar10n_labels(long_csv)
    labels = labels[labels["image_index"].isin(train_ids)]
    if "clean_label" in labels.columns:
        truth = dict(zip(index["index"], index["clean_label"]))
        disagree = labels["clean_label"].to_numpy() != labels["image_index"].map(truth).to_numpy()
        if disagree.any():
            raise ValueError(
                f"{long_csv}: clean_label of image {labels['image_index'][disagree].iloc[0]} disagrees with {index_csv}"
            )
    new_label = remap[labels["label"].to_numpy()]
    outside = new_label < 0
    if outside.any():
        n_items = labels.loc[~outside, "image_index"].nunique()
        log.warning(
            "CIFAR-10N: dropped %d of %d human labels naming a class outside %s; %d of %d items keep no label",
            int(outside.sum()), len(labels), classes, len(train_ids) - n_items, len(train_ids),
        )
    labels = labels[~outside]
    recorded = _recorded_frame(
        labels["image_index"].to_numpy(),
        [f"c10n_{w}" for w in labels["worker_id"].to_numpy()],
        new_label[~outside],
    )

    X, Xt = X.astype(np.float32) / 255.0, Xt.astype(np.float32) / 255.0
    if backbone is not None:
        from robust_al.data.backbone import load_backbone

        net = load_backbone(backbone)
        X, Xt = net(X), net(Xt)
    return Dataset(
        name="cifar10n" if classes == CIFAR10_CLASSES else "cifar10n_" + "_".join(classes),
        train=Pool(train_ids, X, remap[index["clean_label"].to_numpy()], k, list(classes)),
        test=Pool(test_ids, Xt, test_y, k, list(classes)),
        recorded=recorded,
    )


def load_cifar2(
    root: str | Path | None = None,
    classes: Sequence[str] = ("airplane", "frog"),
    n_train: int = 3000,
    n_test: int = 2000,
    seed: int = 0,
    backbone: Mapping[str, Any] | None = None,
) -> Dataset:
    """Two-class CIFAR-10N subset (default airplane vs frog, 3000 train / 2000 test); see :func:`load_cifar10n`.

    Human answers naming a class outside ``classes`` (e.g. 'cat' for an airplane/frog image) lie outside
    the task's classes and are dropped, with a logging warning giving the count.
    """
    ds = load_cifar10n(root, classes=classes, n_train=n_train, n_test=n_test, seed=seed, backbone=backbone)
    ds.name = "cifar2_" + "_".join(classes)
    return ds


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------
# Loaders of a user's own data live in their own modules, which import the helpers above; they are named
# here as "module:function" and imported on first use, so that this module never imports them back.
_LOADERS: dict[str, Callable[..., Dataset] | str] = {
    "digits": load_digits_dataset,
    "generic": load_generic_crowd,
    "labelme": load_labelme,
    "cifar2": load_cifar2,
    "cifar10n": load_cifar10n,
    "imagefolder": "robust_al.data.imagefolder:load_imagefolder",
    "table": "robust_al.data.table:load_table",
    "text": "robust_al.data.text:load_text",
}


def get_loader(name: str) -> Callable[..., Dataset]:
    """The loader function registered under ``name`` (ValueError listing the valid names otherwise)."""
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(_LOADERS))}") from None
    if isinstance(loader, str):
        module, func = loader.split(":")
        loader = getattr(importlib.import_module(module), func)
    return loader


def check_options(options: Mapping[str, Any], accepted: Iterable[str], where: str,
                  required: Iterable[str] = ()) -> None:
    """One-line ValueError naming ``<where>.<key>`` for an unknown or a missing key, listing the accepted keys.

    The single check of option mappings (a loader's ``data.options``, a backbone's sub-options), so that a
    typo reads as a config error instead of a ``TypeError`` from deep inside a call.
    """
    accepted = sorted(accepted)
    unknown = sorted(set(options) - set(accepted), key=str)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown option; accepted keys: {', '.join(accepted)}")
    missing = [k for k in required if k not in options]
    if missing:
        raise ValueError(f"{where}.{missing[0]} is required; accepted keys: {', '.join(accepted)}")


def check_loader_options(name: str, options: Mapping[str, Any]) -> Callable[..., Dataset]:
    """The loader of ``name`` after checking ``options`` against its keyword parameters."""
    loader = get_loader(name)
    params = inspect.signature(loader).parameters.values()
    check_options(options, [p.name for p in params], "data.options",
                  required=[p.name for p in params if p.default is inspect.Parameter.empty])
    return loader


def load_dataset(name: str, **kwargs) -> Dataset:
    """Load a dataset by name (see ``_LOADERS``); kwargs go to its loader (an unknown key is a one-line error)."""
    return check_loader_options(name, kwargs)(**kwargs)
