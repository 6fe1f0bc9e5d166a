"""Real crowds as bare label tables, for truth inference and trust evaluation (no features, no splits).

Every loader returns a :class:`Crowd`: a long table ``annotations`` (columns ``task``, ``worker``, ``label``,
all int64 codes: tasks ``0..n_items-1``, workers ``0..n_workers-1``, labels ``0..n_classes-1``), the ``truth``
per task code (``-1`` = unknown), ``n_classes``, a ``name``, and the decode tables ``tasks`` / ``workers`` /
``classes`` (the original item id, worker id and answer value of each code).

Two kinds of crowd (``Crowd.replayable``):

* label-only (answers and truth, nothing to train on): Zheng et al. VLDB'17 ``dog``, ``duck``,
  ``face_sentiment``, ``product`` (``answer.csv`` question,worker,answer + ``truth.csv`` question,truth) and
  Snow et al. 2008 ``rte``, ``temp``, ``wsd`` (``snow2008/<task>.standardized.tsv``: ``!amt_annotation_ids``,
  ``!amt_worker_ids``, ``orig_id``, ``response``, ``gold``);
* replayable (the dataset also has item inputs, see :mod:`robust_al.data.loaders`): ``labelme``
  (``labelme/answers.txt`` 1000 x 59, truth ``LabelMe_Z_train.txt``), ``sentiment``
  (``sentiment_polarity/answers.txt`` 4999 x 203, truth ``Sentiment_Z_train.txt``) and ``cifar10n``
  (``cifar10n/cifar10n_worker_labels_long.csv``, truth = its ``clean_label``).  Their task code is the
  item id of the matching :mod:`~robust_al.data.loaders` dataset (row of the matrix, CIFAR-10 training index),
  and the answer matrices / long table are read by the same readers as there.

Coding rules: task and worker codes follow the sorted original ids (matrix crowds: row / column order);
label codes follow the sorted answer values (Snow ``temp`` answers 1/2 become 0/1; the ``classes`` table maps
back). A class is any value seen in the answers or the truth.  Items of a truth file that nobody answered are
left out (they are no task of the crowd); a task without a truth gets -1.  A row repeated verbatim is one
answer; one worker giving two different answers to one item is refused.  Every malformed input is refused by
a one-line ``ValueError`` naming the file (and line where there is one).

    >>> crowd = load_crowd("labelme")          # doctest: +SKIP
    >>> crowd.stats()                          # doctest: +SKIP
    {'name': 'labelme', 'items': 1000, 'workers': 59, 'labels': 2547, 'classes': 8, ...}

``root``: each loader's dataset folder, default under :func:`~robust_al.data.loaders.default_datasets_dir`
(``$ROBUST_AL_DATASETS``).
"""
from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from robust_al.data.loaders import (
    CIFAR10_CLASSES,
    LABELME_CLASSES,
    load_int_matrix,
    require_file,
    default_datasets_dir,
    read_answer_matrix,
    read_cifar10n_labels,
)
from robust_al.data.pool import UNKNOWN

__all__ = [
    "CROWDS",
    "Crowd",
    "load_cifar10n_crowd",
    "load_crowd",
    "load_labelme_crowd",
    "load_sentiment_crowd",
    "load_snow",
    "load_zheng",
]

SENTIMENT_CLASSES = ["negative", "positive"]
ZHENG_FOLDERS = {"dog": "zheng_vldb17_dog", "duck": "zheng_vldb17_duck",
                 "face_sentiment": "zheng_vldb17_face_sentiment", "product": "zheng_vldb17_product"}
SNOW_TASKS = ("rte", "temp", "wsd")


@dataclass
class Crowd:
    """A recorded crowd: who answered what, and the truth.  See the module docstring for the coding."""

    name: str
    annotations: pd.DataFrame  # task, worker, label (int64 codes)
    truth: np.ndarray          # int64 per task code, -1 = unknown
    n_classes: int
    tasks: np.ndarray          # original item id per task code
    workers: np.ndarray        # original worker id per worker code
    classes: list              # original answer value (or class name) per label code
    replayable: bool = False   # the dataset has item inputs too (a campaign can replay it)

    def __post_init__(self) -> None:
        a = self.annotations
        if list(a.columns) != ["task", "worker", "label"]:
            raise ValueError(f"crowd {self.name}: annotations must have columns task, worker, label; "
                             f"got {list(a.columns)}")
        for col, n in (("task", len(self.tasks)), ("worker", len(self.workers)), ("label", self.n_classes)):
            v = a[col].to_numpy()
            if len(v) and (v.min() < 0 or v.max() >= n):
                raise ValueError(f"crowd {self.name}: {col} codes must lie in 0..{n - 1}")
        if len(self.truth) != len(self.tasks):
            raise ValueError(f"crowd {self.name}: {len(self.truth)} truth values for {len(self.tasks)} tasks")

    @property
    def n_items(self) -> int:
        return len(self.tasks)

    @property
    def n_workers(self) -> int:
        return len(self.workers)

    @property
    def n_labels(self) -> int:
        return len(self.annotations)

    def labels_per_worker(self) -> pd.Series:
        """Number of labels per worker code (every worker has at least one)."""
        return self.annotations.groupby("worker").size()

    def stats(self) -> dict:
        """Counts: items, workers, labels, classes, median labels per worker, items with a known truth."""
        return {"name": self.name, "items": self.n_items, "workers": self.n_workers, "labels": self.n_labels,
                "classes": self.n_classes, "median_labels_per_worker": float(self.labels_per_worker().median()),
                "known_truth": int((self.truth != UNKNOWN).sum()), "replayable": self.replayable}


# --------------------------------------------------------------------------------------------------------------
# reading helpers
# --------------------------------------------------------------------------------------------------------------
def _read_table(path: Path, sep: str, columns: Sequence[str], what: str) -> pd.DataFrame:
    """All cells as stripped strings; one-line errors for an unreadable file or missing columns."""
    require_file(path, what)
    try:
        # tab-separated files are read verbatim (a quote is part of an id), CSV files with the usual quoting
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                         quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable {what} ({str(e).splitlines()[0]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {missing}; expected {what}")
    df = df[list(columns)].apply(lambda s: s.str.strip())
    empty = (df == "").to_numpy()
    if empty.any():
        r, c = np.argwhere(empty)[0]
        raise ValueError(f"{path}: line {r + 2}: empty {columns[c]}")
    return df


def _int_values(col: pd.Series, path: Path, name: str) -> np.ndarray:
    vals = pd.to_numeric(col, errors="coerce")
    bad = (vals.isna() | (vals != np.round(vals))).to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: line {r + 2}: {name} {col.iloc[r]!r} is not an integer")
    return vals.to_numpy().astype(np.int64)


def _sorted_ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes and decode table of ids, sorted numerically when every id reads as an integer, else as strings."""
    num = pd.to_numeric(values, errors="coerce")
    if not num.isna().any() and (num == np.round(num)).all():
        codes, uniques = pd.factorize(num.astype(np.int64), sort=True)
    else:
        codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _py(v):
    """A numpy scalar as the Python value (for messages: 1, not np.int64(1))."""
    return v.item() if isinstance(v, np.generic) else v


def _dedupe(task: np.ndarray, worker: np.ndarray, label: np.ndarray, path: Path, lines: np.ndarray,
            tasks: np.ndarray, workers: np.ndarray) -> np.ndarray:
    """Mask keeping the first of verbatim repeats; ValueError when a worker gives one task two answers."""
    df = pd.DataFrame({"t": task, "w": worker, "l": label})
    pair = df.duplicated(["t", "w"]).to_numpy()
    if pair.any():
        exact = df.duplicated(["t", "w", "l"]).to_numpy()
        clash = pair & ~exact
        if clash.any():
            r = int(np.flatnonzero(clash)[0])
            first = int(np.flatnonzero((task == task[r]) & (worker == worker[r]))[0])
            raise ValueError(f"{path}: line {lines[r]}: worker {_py(workers[worker[r]])!r} answers item "
                             f"{_py(tasks[task[r]])!r} differently from line {lines[first]}; keep one answer per "
                             f"(item, worker)")
    return ~pair


def _frame(task, worker, label) -> pd.DataFrame:
    return pd.DataFrame({"task": np.asarray(task, dtype=np.int64), "worker": np.asarray(worker, dtype=np.int64),
                         "label": np.asarray(label, dtype=np.int64)})


def _from_matrix(name: str, answers: np.ndarray, truth: np.ndarray, classes: list, path: Path,
                 truth_path: Path) -> Crowd:
    if len(truth) != len(answers):
        raise ValueError(f"{truth_path}: {len(truth)} truth values, but {path} has {len(answers)} rows")
    bad = (truth < UNKNOWN) | (truth >= len(classes))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{truth_path}: line {r + 1}: truth {truth[r]}; expected -1..{len(classes) - 1}")
    rows, cols = np.nonzero(answers != -1)
    # items nobody answered and workers who never answered are no part of the crowd (none in the shipped files)
    t_ids, t_codes = np.unique(rows, return_inverse=True)
    w_ids, w_codes = np.unique(cols, return_inverse=True)
    return Crowd(name=name, annotations=_frame(t_codes, w_codes, answers[rows, cols]), truth=truth[t_ids],
                 n_classes=len(classes), tasks=t_ids.astype(np.int64), workers=w_ids.astype(np.int64),
                 classes=list(classes), replayable=True)


# --------------------------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------------------------
def _labelled_crowd(name: str, path: Path, task_ids: pd.Series, worker_ids: pd.Series, answers: np.ndarray,
                    truth_of: dict, truth_path: Path) -> Crowd:
    """Code a long table of (item id, worker id, integer answer) + a truth dict {item id (str): int}."""
    lines = np.arange(len(task_ids)) + 2
    task, tasks = _sorted_ids(task_ids)
    worker, workers = _sorted_ids(worker_ids)
    keep = _dedupe(task, worker, answers, path, lines, tasks, workers)
    task, worker, answers = task[keep], worker[keep], answers[keep]
    raw_of_task = pd.Series(task_ids.to_numpy()[keep]).groupby(task).first()  # original spelling per task code
    raw_truth = np.array([truth_of.get(str(raw_of_task.iloc[t])) for t in range(len(tasks))], dtype=object)
    known = np.array([v is not None for v in raw_truth])
    values = np.unique(np.concatenate([answers, raw_truth[known].astype(np.int64)]))
    label = np.searchsorted(values, answers).astype(np.int64)
    truth = np.full(len(tasks), UNKNOWN, dtype=np.int64)
    truth[known] = np.searchsorted(values, raw_truth[known].astype(np.int64))
    return Crowd(name=name, annotations=_frame(task, worker, label), truth=truth, n_classes=len(values),
                 tasks=tasks, workers=workers, classes=[int(v) for v in values], replayable=False)


def _one_truth_each(items, values, path: Path, item_word: str, phrase: str) -> dict[str, int]:
    """item -> its truth, refusing an item whose rows (data lines from 2) disagree about it."""
    truth_of: dict[str, int] = {}
    for line, (item, v) in enumerate(zip(items, values), start=2):
        if truth_of.setdefault(item, int(v)) != v:
            raise ValueError(f"{path}: line {line}: {item_word} {item!r} {phrase} {v}, but an earlier line says "
                             f"{truth_of[item]}")
    return truth_of


def load_zheng(which: str, root: str | Path | None = None) -> Crowd:
    """Zheng et al., "Truth inference in crowdsourcing: is the problem solved?" (PVLDB 10(5), 2017) data sets.

    ``which``: ``dog`` (807 items, 109 workers, 8070 answers, 4 breeds), ``duck`` (Welinder's bluebirds: 108,
    39, 4212, 2 classes), ``face_sentiment`` (584, 27, 5242, 4), ``product`` (entity resolution: 8315, 176,
    24945, 2).  ``root``: the data set's folder (default ``default_datasets_dir() / 'zheng_vldb17_<which>'``)
    holding ``answer.csv`` (question,worker,answer) and ``truth.csv`` (question,truth).
    """
    if which not in ZHENG_FOLDERS:
        raise ValueError(f"unknown Zheng VLDB'17 data set {which!r}; valid: {', '.join(ZHENG_FOLDERS)}")
    folder = Path(root) if root is not None else default_datasets_dir() / ZHENG_FOLDERS[which]
    apath, tpath = folder / "answer.csv", folder / "truth.csv"
    ans = _read_table(apath, ",", ["question", "worker", "answer"], "a CSV question,worker,answer")
    tru = _read_table(tpath, ",", ["question", "truth"], "a CSV question,truth")
    answers = _int_values(ans["answer"], apath, "answer")
    tvals = _int_values(tru["truth"], tpath, "truth")
    truth_of = _one_truth_each(tru["question"], tvals, tpath, "question", "is given truth")
    return _labelled_crowd(which, apath, ans["question"], ans["worker"], answers, truth_of, tpath)


def load_snow(task: str, root: str | Path | None = None) -> Crowd:
    """Snow, O'Connor, Jurafsky & Ng (EMNLP 2008) Amazon Mechanical Turk labels with expert gold.

    ``task``: ``rte`` (textual entailment: 800 items, 164 workers, 8000 answers, 2 classes), ``temp`` (temporal
    ordering: 462, 76, 4620, 2; answers 1/2 coded 0/1), ``wsd`` (word sense: 177, 34, 1770, 3; answers 1..3
    coded 0..2).  Reads ``<task>.standardized.tsv`` (tab-separated, header ``!amt_annotation_ids
    !amt_worker_ids orig_id response gold``; item = ``orig_id``, truth = ``gold``, which must agree across an
    item's rows) from ``root`` (default ``default_datasets_dir() / 'snow2008'``).
    """
    if task not in SNOW_TASKS:
        raise ValueError(f"unknown Snow 2008 task {task!r}; valid: {', '.join(SNOW_TASKS)}")
    folder = Path(root) if root is not None else default_datasets_dir() / "snow2008"
    path = folder / f"{task}.standardized.tsv"
    df = _read_table(path, "\t", ["!amt_worker_ids", "orig_id", "response", "gold"],
                     "a tab-separated table with columns !amt_annotation_ids, !amt_worker_ids, orig_id, response, gold")
    answers = _int_values(df["response"], path, "response")
    gold = _int_values(df["gold"], path, "gold")
    truth_of = _one_truth_each(df["orig_id"], gold, path, "item", "has gold")
    return _labelled_crowd(task, path, df["orig_id"], df["!amt_worker_ids"], answers, truth_of, path)


def load_labelme_crowd(root: str | Path | None = None) -> Crowd:
    """LabelMe (Rodrigues & Pereira 2018): 1000 items, 59 workers, 2547 labels, 8 scene classes.

    ``answers.txt`` (1000 x 59, -1 = none) read by :func:`~robust_al.data.loaders.read_answer_matrix` as in
    :func:`~robust_al.data.loaders.load_labelme`; truth ``LabelMe_Z_train.txt``.  Task code = matrix row = item
    id of ``load_labelme``'s train pool; worker code = column.
    """
    folder = Path(root) if root is not None else default_datasets_dir() / "labelme"
    k = len(LABELME_CLASSES)
    apath, tpath = folder / "answers.txt", folder / "LabelMe_Z_train.txt"
    require_file(apath, "an integer matrix items x workers, -1 = no answer")
    answers = read_answer_matrix(apath, k)
    truth = load_int_matrix(tpath, "one train class id (0..7) per line")
    return _from_matrix("labelme", answers, truth, LABELME_CLASSES, apath, tpath)


def load_sentiment_crowd(root: str | Path | None = None) -> Crowd:
    """Sentiment polarity (Rodrigues, Pereira & Ribeiro 2013): 4999 sentences, 203 workers, 27,746 labels, 2 classes.

    ``answers.txt`` (4999 x 203, -1 = none) and ``Sentiment_Z_train.txt`` under ``root`` (default
    ``default_datasets_dir() / 'sentiment_polarity'``).  Task code = matrix row; worker code = column.
    """
    folder = Path(root) if root is not None else default_datasets_dir() / "sentiment_polarity"
    apath, tpath = folder / "answers.txt", folder / "Sentiment_Z_train.txt"
    require_file(apath, "an integer matrix items x workers, -1 = no answer")
    answers = read_answer_matrix(apath, len(SENTIMENT_CLASSES))
    truth = load_int_matrix(tpath, "one class id (0/1) per line")
    return _from_matrix("sentiment", answers, truth, SENTIMENT_CLASSES, apath, tpath)


def load_cifar10n_crowd(root: str | Path | None = None) -> Crowd:
    """CIFAR-10N (Wei et al. 2022; CC BY-NC 4.0): 50,000 training images x 3 human labels, 747 workers, 10 classes.

    Reads ``cifar10n_worker_labels_long.csv`` (image_index, slot, worker_id, label, clean_label) from ``root``
    (default ``default_datasets_dir() / 'cifar10n'``) with
    :func:`~robust_al.data.loaders.read_cifar10n_labels`; truth = ``clean_label`` (must agree across an image's
    rows).  Task code = CIFAR-10 training index (as in ``load_cifar10n``); worker code = sorted ``worker_id``.
    """
    folder = Path(root) if root is not None else default_datasets_dir() / "cifar10n"
    path = require_file(folder / "cifar10n_worker_labels_long.csv",
                        "the CSV image_index,slot,worker_id,label,clean_label")
    df = read_cifar10n_labels(path)
    if "clean_label" not in df.columns:
        raise ValueError(f"{path}: lacks column clean_label (the truth)")
    lines = np.arange(len(df)) + 2
    task, tasks = _sorted_ids(df["image_index"])
    worker, workers = _sorted_ids(df["worker_id"])
    label = df["label"].to_numpy(dtype=np.int64)
    keep = _dedupe(task, worker, label, path, lines, tasks, workers)
    clean = df["clean_label"].to_numpy(dtype=np.int64)
    truth = np.full(len(tasks), UNKNOWN, dtype=np.int64)
    truth[task] = clean
    off = truth[task] != clean
    if off.any():
        r = int(np.flatnonzero(off)[0])
        raise ValueError(f"{path}: line {r + 2}: clean_label {clean[r]} of image {_py(tasks[task[r]])} disagrees with "
                         f"another row of that image")
    return Crowd(name="cifar10n", annotations=_frame(task[keep], worker[keep], label[keep]), truth=truth,
                 n_classes=len(CIFAR10_CLASSES), tasks=tasks.astype(np.int64), workers=workers,
                 classes=list(CIFAR10_CLASSES), replayable=True)


CROWDS: dict[str, Callable[..., Crowd]] = {
    **{w: functools.partial(load_zheng, w) for w in ZHENG_FOLDERS},
    **{t: functools.partial(load_snow, t) for t in SNOW_TASKS},
    "labelme": load_labelme_crowd,
    "sentiment": load_sentiment_crowd,
    "cifar10n": load_cifar10n_crowd,
}


def load_crowd(name: str, root: str | Path | None = None) -> Crowd:
    """The crowd registered under ``name`` in :data:`CROWDS` (``root``: its folder, default under the datasets dir)."""
    try:
        loader = CROWDS[name]
    except KeyError:
        raise ValueError(f"unknown crowd {name!r}; valid names: {', '.join(CROWDS)}") from None
    return loader(root=root)
