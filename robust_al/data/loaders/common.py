"""Paths, checks and helpers every loader shares: the datasets folder, user files, stratified splits,
min-max scaling, integer matrices and the recorded-answers frame."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd



log = logging.getLogger(__name__)


ENV_VAR = "ROBUST_AL_DATASETS"


TEST_ID_OFFSET = 1_000_000


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


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` or raise FileNotFoundError saying what was expected and how to point elsewhere."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found (expected {what}). Set the {ENV_VAR} environment variable to the folder "
            f"holding the datasets, or pass root= explicitly (default is {default_datasets_dir()})."
        )
    return path


def user_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found (expected {what})")
    return p


def pair_rows(path: Path, first: str, second: str):
    """(line number, first cell, second cell) of each non-blank data row of a CSV whose header starts with
    ``first,second`` (cells stripped); a bad header or a short row is one ValueError naming file and line."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [c.strip() for c in rows[0]] if rows else []
    if header[:2] != [first, second]:
        raise ValueError(f"{path}: line 1: expected the header {first},{second}, got {','.join(header)!r}")
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < 2:
            raise ValueError(f"{path}: line {line}: expected {first},{second}, got {','.join(row)!r}")
        yield line, row[0].strip(), row[1].strip()


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


def stratified_choice(strata: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``n`` items drawn without replacement, class proportions kept (sorted positions)."""
    values, inverse = np.unique(strata, return_inverse=True)
    take = _allocate(np.bincount(inverse, minlength=len(values)), n)
    chosen = [rng.choice(np.flatnonzero(inverse == g), size=k, replace=False) for g, k in enumerate(take) if k]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def split_train_test(n: int, test_size: float, seed: int, strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
        test = stratified_choice(np.asarray(strata), n_test, rng)
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def minmax_scale(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale columns to [0, 1] with the train min/max; other arrays are clipped. Constant columns -> 0."""
    lo = train.min(axis=0)
    span = train.max(axis=0) - lo
    span = np.where(span > 0, span, 1.0)
    out = [((train - lo) / span).astype(np.float32)]
    out += [np.clip((o - lo) / span, 0.0, 1.0).astype(np.float32) for o in others]
    return out


def recorded_frame(task, worker, label) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": np.asarray(task, dtype=np.int64),
            "worker": pd.Series(list(worker), dtype=object),
            "label": np.asarray(label, dtype=np.int64),
        }
    )


def is_number(s) -> bool:
    """Does ``s`` read as a float (a CSV cell: is this row data or a header)?"""
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def load_int_matrix(path: Path, what: str) -> np.ndarray:
    try:
        a = np.loadtxt(require_file(path, what), dtype=np.float64, ndmin=1)
    except ValueError as e:
        raise ValueError(f"{path}: expected {what} ({e})") from None
    if not np.all(a == np.round(a)):
        raise ValueError(f"{path}: expected {what}, found non-integer values")
    return a.astype(np.int64)


def read_answer_matrix(path: Path, n_classes: int) -> np.ndarray:
    """An items x workers answer matrix (LabelMe, Sentiment polarity: ``answers.txt``), -1 = no answer.

    One-line ValueError naming the file for a non-integer, non-2-D or out-of-range (not -1..n_classes-1) entry.
    """
    answers = load_int_matrix(path, "an integer matrix items x workers, -1 = no answer")
    if answers.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D matrix (items x workers), got {answers.shape}")
    bad = (answers < -1) | (answers >= n_classes)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{path}: line {r + 1}, column {c + 1}: value {answers[r, c]}; expected -1..{n_classes - 1}")
    return answers


def load_npy(path: Path, what: str) -> np.ndarray:
    X = np.load(require_file(path, what), allow_pickle=False)
    if X.ndim != 2:
        raise ValueError(f"{path}: expected {what}, got shape {X.shape}")
    return X
