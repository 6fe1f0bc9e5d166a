"""A crowd's answers as a long table (``task,worker,label``), read once into dense integer codes.

Accepted headers (case and surrounding spaces ignored; other columns are ignored):

- task: ``task``, ``item`` or ``question``; worker: ``worker``; label: ``label`` or ``answer``
  (crowd-kit's long format, robust-al's ``item,worker,label``, the Zheng et al. VLDB'17 benchmark files);
- truth: the same task column and ``truth``, ``label``, ``true_label``, ``gold`` or ``answer``.

Every value is read as text, stripped of surrounding spaces; ids are never compared as numbers (``7`` and
``07`` are two tasks). Codes: tasks 0..T-1, workers 0..M-1, classes 0..C-1, each in sorted order (ids:
numerically when every id of the column is an integer, else as text; classes likewise), so the codes do
not depend on the order of the rows. The decode tables give back the user's ids and labels.

Rules (each violation is one :class:`AnnotationError` naming the file, the line and what was expected,
raised before anything is written):

- a missing column, an empty task/worker id or an empty label is refused; blank lines are skipped;
- labels are integers when every label reads as a number (``3`` and ``3.0`` are class 3), else class names
  (text); in both cases a label that reads as a negative integer is refused (``-1`` is not read as "no
  answer": drop those rows), as are ``nan``/``inf`` and, among integer labels, a fraction such as ``2.5``;
- a (task, worker) pair given more than once: the same label again counts once; two different labels from
  the same worker on the same task are refused, naming both lines;
- truth: its tasks go through the same id table; tasks nobody answered are ignored (counted); a truth label
  that no worker ever gave is kept as its own class for scoring only, so it counts as wrong (counted);
  a task given two different truths is refused.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TASK_COLUMNS = ("task", "item", "question")
WORKER_COLUMNS = ("worker",)
LABEL_COLUMNS = ("label", "answer")
TRUTH_COLUMNS = ("truth", "label", "true_label", "gold", "answer")

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_NONFINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
_INTEGER = re.compile(r"[+-]?\d+")


class AnnotationError(ValueError):
    """A long table (or truth file) that breaks a rule: ``source: line N: what; expected ...``, one line."""

    def __init__(self, source: str, where: str | None, message: str):
        self.source, self.where = source, where
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")


@dataclass
class _Column:
    """A column factorized once: ``codes`` (row -> k, in order of first appearance), ``text`` (k -> the stripped
    text, '' for a missing value) and ``original`` (k -> the first original value with that text)."""

    codes: np.ndarray
    text: np.ndarray
    original: np.ndarray

    def take(self, rows: np.ndarray) -> _Column:
        codes = self.codes[rows]
        used = np.zeros(len(self.text), dtype=bool)
        used[codes] = True
        new = np.cumsum(used) - 1
        return _Column(new[codes], self.text[used], self.original[used])


@dataclass
class LongTable:
    """Answers as codes (``annotations``: task, worker, label, int64, one row per (task, worker), sorted by
    task then worker) and the decode tables: ``tasks[code]``, ``workers[code]``, ``classes[code]`` are the
    user's values. ``integer_labels``: the labels were integers (``classes`` holds ints)."""

    annotations: pd.DataFrame
    tasks: np.ndarray
    workers: np.ndarray
    classes: np.ndarray
    integer_labels: bool
    source: str
    task_keys: np.ndarray  # the text each task id was encoded from (what a truth file is matched against)
    repeated: int = 0  # rows dropped because the same worker gave the same label to the same task again

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class Truth:
    """``labels``: task code -> class code, -1 for a truth label no worker gave (it counts as wrong);
    ``ignored``: truth rows about tasks nobody answered; ``unseen``: tasks whose truth is such a label."""

    labels: pd.Series
    ignored: int
    unseen: int
    source: str


# -- reading the raw text --------------------------------------------------------------------------------
class _Raw:
    """A CSV file or a DataFrame: its header, its columns factorized, and where each row came from."""

    def __init__(self, source, what: str, header: str):
        self.frame_input = isinstance(source, pd.DataFrame)
        self._lines: np.ndarray | None = None  # file line of each data row, counted on first use (where)
        if self.frame_input:
            self.name = f"{what} DataFrame"
            self.header = [str(c) for c in source.columns]
            self.frame = source
            return
        path = Path(source)
        self.name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (expected a CSV file with a header {header})")
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise AnnotationError(self.name, f"line {line}", f"byte {data[e.start]:#04x} is not UTF-8 text; "
                                  "expected a UTF-8 CSV file") from None
        try:  # header=None: a row longer than the header is an error, not an index column
            table = pd.read_csv(io.StringIO(text), header=None, dtype=object, keep_default_na=False,
                                na_filter=False, skip_blank_lines=False)
        except pd.errors.EmptyDataError:
            raise AnnotationError(self.name, None, f"empty file; expected a header {header}") from None
        except pd.errors.ParserError as e:
            m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
            if not m:
                raise AnnotationError(self.name, None, f"not a CSV file ({e})") from None
            raise AnnotationError(self.name, f"line {m.group(2)}", f"{m.group(3)} fields; expected "
                                  f"{m.group(1)} as in the header") from None
        self.header = [str(c).strip() for c in table.iloc[0]]
        self.frame = table.iloc[1:].reset_index(drop=True)

    def column(self, alternatives: tuple[str, ...], what: str) -> int:
        lower = [h.strip().lower() for h in self.header]
        for a in alternatives:
            if a in lower:
                return lower.index(a)
        names = " or ".join(repr(a) for a in alternatives)
        raise AnnotationError(self.name, None if self.frame_input else "line 1",
                              f"no {what} column in {self.header}; expected a column named {names}")

    def factorized(self, j: int) -> _Column:
        """Column j factorized by its stripped text (stripping only the distinct values: 1M rows in 0.2 s, not
        2.6 s). In a DataFrame, ids of any type (ints, ints mixed with strings) are compared as their text and
        NaN/None is missing ('')."""
        codes0, uniq0 = pd.factorize(self.frame.iloc[:, j].to_numpy(dtype=object), use_na_sentinel=True)
        uniq0 = np.asarray(uniq0, dtype=object)
        text0 = np.array([v.strip() if isinstance(v, str) else str(v).strip() for v in uniq0] + [""], dtype=object)
        original0 = np.concatenate([uniq0, np.array([""], dtype=object)])
        codes0 = np.where(codes0 < 0, len(uniq0), codes0)  # NaN/None -> the extra '' entry
        codes1, text = pd.factorize(text0)
        first = np.unique(codes1, return_index=True)[1]
        col = _Column(codes1[codes0], np.asarray(text, dtype=object), original0[first])
        return col.take(np.arange(len(codes0)))  # drop entries no row uses (the extra '')

    def blank(self, cols: list[_Column]) -> np.ndarray:
        """Rows of a file whose every field is empty (blank lines): skipped. A DataFrame has none."""
        out = np.ones(len(self.frame), dtype=bool)
        if self.frame_input:
            return ~out
        for c in cols:
            out &= c.text[c.codes] == ""
        cand = np.flatnonzero(out)
        if len(cand) and self.frame.shape[1] > len(cols):
            out[cand] = (self.frame.iloc[cand] == "").all(axis=1).to_numpy()
        return out

    def where(self, r: int) -> str:
        """'line N' of data row r of a file (counting newlines inside quoted fields), 'row r' of a DataFrame."""
        if self.frame_input:
            label = self.frame.index[r]
            return f"row {r} (index {label.item() if isinstance(label, np.generic) else label!r})"
        if self._lines is None:
            inside = sum(self.frame[c].str.count("\n").to_numpy() for c in self.frame.columns)
            self._lines = 2 + np.arange(len(self.frame)) + np.concatenate([[0], np.cumsum(inside)[:-1]])
        return f"line {int(self._lines[r])}"


# -- encoding --------------------------------------------------------------------------------------------
def _sorted_order(uniq: np.ndarray) -> np.ndarray:
    """Order of distinct ids: numeric when every one is an integer, else as text (code point order)."""
    text = uniq.astype(str)
    order = np.argsort(text, kind="stable")
    s = pd.Series(uniq, dtype=object)
    if len(uniq) and s.str.fullmatch(_INTEGER.pattern).all():
        if s.str.len().max() <= 18:
            ints = s.astype(np.int64).to_numpy()
            return order[np.argsort(ints[order], kind="stable")]
        return np.array(sorted(range(len(uniq)), key=lambda k: (int(text[k]), text[k])), dtype=np.int64)
    return order


def _encode(col: _Column, decode_original: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense codes in sorted order, the code -> text table, and the code -> user's value table."""
    order = _sorted_order(col.text)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[col.codes], col.text[order], (col.original if decode_original else col.text)[order]


def _kind(s: str) -> str:
    """'int' (non-negative, integer-valued), 'negative', 'fraction', 'nonfinite' or 'text'."""
    if s.lower() in _NONFINITE:
        return "nonfinite"
    if not _NUMBER.fullmatch(s):
        return "text"
    v = float(s)
    if not np.isfinite(v):
        return "nonfinite"
    if not v.is_integer():
        return "fraction"
    return "negative" if v < 0 else "int"


def _int_value(s: str) -> int:
    return int(s) if _INTEGER.fullmatch(s) else int(float(s))


_WHY = {
    "nonfinite": "is not a class; expected a class name or a non-negative integer",
    "negative": "is a negative integer; expected a class name or a non-negative integer (-1 is not read as "
                "'no answer': drop those rows)",
    "fraction": "is not an integer, but the other labels are; expected integer classes 0, 1, 2, ...",
}


def _first_row(col: _Column, k: int) -> int:
    return int(np.flatnonzero(col.codes == k)[0])


def _refuse_empty(raw: _Raw, col: _Column, rows: np.ndarray, message: str) -> None:
    empty = np.flatnonzero(col.text == "")
    if len(empty):
        raise AnnotationError(raw.name, raw.where(int(rows[_first_row(col, int(empty[0]))])), message)


def _read(raw: _Raw, columns: list[int]) -> tuple[list[_Column], np.ndarray]:
    """The columns without blank lines, and the data row of each kept row (for messages)."""
    cols = [raw.factorized(j) for j in columns]
    blank = raw.blank(cols)
    rows = np.flatnonzero(~blank)
    if blank.any():
        cols = [c.take(rows) for c in cols]
    return cols, rows


def read_annotations(source: str | Path | pd.DataFrame) -> LongTable:
    """Read a long table of answers (a CSV path or a DataFrame) into codes; see the module's rules."""
    raw = _Raw(source, "annotations", "task,worker,label")
    (task, worker, label), rows = _read(raw, [raw.column(TASK_COLUMNS, "task"), raw.column(WORKER_COLUMNS, "worker"),
                                              raw.column(LABEL_COLUMNS, "label")])
    if not len(rows):
        raise AnnotationError(raw.name, None, "no answers; expected rows of task,worker,label after the header")
    _refuse_empty(raw, task, rows, "empty task id; expected a non-empty id")
    _refuse_empty(raw, worker, rows, "empty worker id; expected a non-empty id")
    _refuse_empty(raw, label, rows, "empty label; expected a class")

    # labels: classify the distinct values (in order of first appearance), refuse the earliest refused one
    kinds = np.array([_kind(s) for s in label.text], dtype=object)
    integer = not (kinds == "text").any()
    refused = ("nonfinite", "negative", "fraction") if integer else ("nonfinite", "negative")
    bad = np.flatnonzero(np.isin(kinds, refused))
    if len(bad):
        k = int(bad[0])
        raise AnnotationError(raw.name, raw.where(int(rows[_first_row(label, k)])),
                              f"label {label.text[k]!r} {_WHY[kinds[k]]}")
    if integer:  # 3 and 3.0 are one class; classes in numeric order, decoded to ints
        values = [_int_value(s) for s in label.text]
        classes = np.array(sorted(set(values)), dtype=object)
        class_of = {v: c for c, v in enumerate(classes)}
        y = np.array([class_of[v] for v in values], dtype=np.int64)[label.codes]
    else:
        y, _, classes = _encode(label, raw.frame_input)
    t, task_keys, tasks = _encode(task, raw.frame_input)
    w, _, workers = _encode(worker, raw.frame_input)

    # repeated (task, worker): the same label again counts once, a different one is refused
    key = t * len(workers) + w
    order = np.lexsort((np.arange(len(key)), key))  # by key, then by line
    k_sorted, y_sorted = key[order], y[order]
    again = np.zeros(len(order), dtype=bool)
    again[1:] = k_sorted[1:] == k_sorted[:-1]
    if again.any():
        head = np.maximum.accumulate(np.where(again, 0, np.arange(len(order))))  # first row of each key
        clash = np.flatnonzero(again & (y_sorted != y_sorted[head]))
        if len(clash):
            i = int(clash[np.argmin(order[clash])])
            r, r0 = int(order[i]), int(order[head[i]])
            said = [label.text[label.codes[x]] for x in (r, r0)]
            raise AnnotationError(
                raw.name, raw.where(int(rows[r])),
                f"worker {worker.text[worker.codes[r]]!r} answers task {task.text[task.codes[r]]!r} with {said[0]!r}, "
                f"but {raw.where(int(rows[r0]))} says {said[1]!r}; expected one answer per (task, worker)")
    keep = order[~again]
    ann = pd.DataFrame({"task": t[keep], "worker": w[keep], "label": y[keep]})
    return LongTable(ann, tasks, workers, classes, integer, raw.name, task_keys, int(again.sum()))


def read_truth(source: str | Path | pd.DataFrame, table: LongTable) -> Truth:
    """Read ``task,truth`` (a CSV path or a DataFrame) against the answers' codes; see the module's rules."""
    raw = _Raw(source, "truth", "task,truth")
    (task, label), rows = _read(raw, [raw.column(TASK_COLUMNS, "task"), raw.column(TRUTH_COLUMNS, "truth")])
    _refuse_empty(raw, task, rows, "empty task id; expected a non-empty id")
    _refuse_empty(raw, label, rows, "empty truth; expected a class")
    kinds = np.array([_kind(s) for s in label.text], dtype=object)
    bad = np.flatnonzero(kinds != "int") if table.integer_labels else np.flatnonzero(np.isin(kinds, ("nonfinite",
                                                                                                    "negative")))
    if len(bad):
        k = int(bad[0])
        why = (_WHY[kinds[k]] if kinds[k] in ("nonfinite", "negative")
               else "is not an integer; expected an integer class like the answers' labels")
        raise AnnotationError(raw.name, raw.where(int(rows[_first_row(label, k)])), f"truth {label.text[k]!r} {why}")
    if table.integer_labels:
        class_of = {v: c for c, v in enumerate(table.classes)}
        ucls = np.array([class_of.get(_int_value(s), -1) for s in label.text], dtype=np.int64)
        same = np.array([_int_value(s) for s in label.text], dtype=object)  # 3 and 3.0 are the same truth
    else:
        class_of = {str(v).strip(): c for c, v in enumerate(table.classes)}
        ucls = np.array([class_of.get(s, -1) for s in label.text], dtype=np.int64)
        same = label.text
    _, same_code = np.unique(same.astype(str), return_inverse=True)
    y, ysame = ucls[label.codes], same_code[label.codes]
    t = pd.Index(table.task_keys).get_indexer(task.text)[task.codes]
    known = np.flatnonzero(t >= 0)
    ignored = len(t) - len(known)
    t, y, ysame = t[known], y[known], ysame[known]
    order = np.lexsort((known, t))
    t_sorted = t[order]
    again = np.zeros(len(order), dtype=bool)
    again[1:] = t_sorted[1:] == t_sorted[:-1]
    if again.any():
        head = np.maximum.accumulate(np.where(again, 0, np.arange(len(order))))
        clash = np.flatnonzero(again & (ysame[order] != ysame[order][head]))
        if len(clash):
            i = int(clash[np.argmin(order[clash])])
            r, r0 = int(known[order[i]]), int(known[order[head[i]]])
            said = [label.text[label.codes[x]] for x in (r, r0)]
            raise AnnotationError(raw.name, raw.where(int(rows[r])),
                                  f"task {task.text[task.codes[r]]!r} has truth {said[0]!r}, but "
                                  f"{raw.where(int(rows[r0]))} says {said[1]!r}; expected one truth per task")
    keep = order[~again]
    labels = pd.Series(y[keep], index=pd.Index(t[keep], name="task"), name="truth").sort_index()
    return Truth(labels, ignored, int((labels < 0).sum()), raw.name)
