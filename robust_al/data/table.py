"""A pool from a table: CSV, Parquet (pyarrow) or JSON lines.

Config::

    data:
      name: table
      options:
        path: /data/items.parquet
        id_column: id                 # default id; any strings
        feature_columns: [f1, f2]     # default: every numeric column but the id and label columns
        label_column: label           # default label when present; class names (strings), empty = unknown
        class_names: [ham, spam]      # default: the sorted distinct labels
        test_size: 0.0                # optional split for reporting

    # or a text column, featurized like the `text` loader (TF-IDF + truncated SVD):
        text_column: body
        n_components: 100

Item ids are 0..n-1 in the order of the sorted id strings; ``keys`` are the id strings. Features are
min-max scaled to [0, 1] with training statistics.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robust_al.data.arrays import Where, check_finite, encode_labels, make_dataset, sort_keys, split_positions
from robust_al.data.loaders import minmax_scale, user_file
from robust_al.data.pool import Dataset
from robust_al.data.text import text_features

SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")


def _numeric(col: pd.Series) -> pd.Series | None:
    """The column as floats if every non-empty cell is a number (inf / nan included), else None."""
    s = col.astype(str).str.strip()
    num = pd.to_numeric(s.where(s != "", "nan"), errors="coerce")
    ok = num.notna() | s.str.lower().isin(["nan", "", "-nan", "+nan"])
    return num.astype(np.float64) if ok.all() and (s != "").any() else None


def read_table(path: str | Path, as_text: Iterable[str | None] = ()) -> tuple[pd.DataFrame, Where]:
    """The table and a function naming row i's place in the file. CSV cells are numbers (floats) where a whole
    column is numeric, except in the ``as_text`` columns (ids like '007', labels), which stay as written."""
    path = user_file(path, f"a table ({', '.join(SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
        return pq.read_table(path).to_pandas(), lambda i: f"row {i + 1}"
    if suffix == ".csv":
        try:
            # all as text first: ids like '007' must stay strings; numeric columns are converted below
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: empty file; expected a header row and one row per item") from None
        for c in set(frame.columns) - set(as_text):
            num = _numeric(frame[c])
            if num is not None:
                frame[c] = num
        return frame, lambda i: f"line {i + 2}"
    if suffix in (".jsonl", ".ndjson"):
        try:
            frame = pd.read_json(path, lines=True, dtype=False)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON lines ({e})") from None
        return frame, lambda i: f"line {i + 1}"
    raise ValueError(f"{path}: unsupported table format {suffix!r}; expected one of {', '.join(SUFFIXES)}")


def _column(frame: pd.DataFrame, name: str, path: Path, what: str) -> pd.Series:
    if name not in frame.columns:
        raise ValueError(f"{path}: no {what} column {name!r}; its columns are {', '.join(map(str, frame.columns))}")
    return frame[name]


def _ids(frame: pd.DataFrame, id_column: str, path: Path, where: Where) -> np.ndarray:
    col = _column(frame, id_column, path, "id (data.options.id_column)")
    empty = col.isna() | (col.astype(str).str.strip() == "")
    if empty.any():
        raise ValueError(f"{path}: {where(int(np.flatnonzero(empty.to_numpy())[0]))}: empty id in column {id_column!r}")
    return np.array([str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip() for v in col],
                    dtype=object)


def _feature_columns(frame: pd.DataFrame, given: Sequence[str] | None, skip: set[str], path: Path) -> list[str]:
    if given is not None:
        for c in given:
            _column(frame, c, path, "feature (data.options.feature_columns)")
            if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]):
                raise ValueError(f"{path}: feature column {c!r} is not numeric")
        return list(given)
    cols = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])]
    if not cols:
        raise ValueError(f"{path}: no numeric feature columns besides {sorted(skip)}; its columns are "
                         f"{', '.join(map(str, frame.columns))} (name a text_column for text)")
    return cols


def load_table(path: str | Path, id_column: str = "id", feature_columns: Sequence[str] | None = None,
               text_column: str | None = None, label_column: str | None = None,
               class_names: Sequence[str] | None = None, n_components: int = 100, test_size: float = 0.0,
               seed: int = 0) -> Dataset:
    """A Dataset from a CSV / Parquet / JSONL table (see the module docstring for the config)."""
    return prepare(path, id_column, feature_columns, text_column, label_column, class_names, n_components,
                   test_size, seed)[0]


Featurizer = Callable[[pd.DataFrame, Path, Where], tuple[np.ndarray, np.ndarray]]


def prepare(path, id_column="id", feature_columns=None, text_column=None, label_column=None, class_names=None,
            n_components=100, test_size=0.0, seed=0) -> tuple[Dataset, Featurizer, list[str]]:
    """The Dataset, a function featurizing another table of the same columns exactly like the pool, and the
    columns it reads."""
    frame, where = read_table(path, (id_column, label_column or "label", text_column))
    path = Path(path).expanduser()
    if label_column is None and "label" in frame.columns:
        label_column = "label"
    if frame.empty:
        raise ValueError(f"{path}: no rows; expected one row per item")
    keys, order = sort_keys(_ids(frame, id_column, path, where), str(path))
    frame = frame.iloc[order].reset_index(drop=True)
    here = lambda i: where(int(order[i]))
    labels = (_column(frame, label_column, path, "label (data.options.label_column)").tolist()
              if label_column is not None else [None] * len(frame))
    y, names = encode_labels(labels, class_names, str(path), here)
    if not names:
        raise ValueError(f"{path}: no labels to name the classes; pass data.options.class_names")
    tr, te = split_positions(y, test_size, seed)

    if text_column is not None:
        texts = _texts(frame, text_column, path)
        embed = text_features(texts[tr], n_components, seed)
        columns: list[str] = [text_column]

        def raw(f: pd.DataFrame, p: Path, w: Where) -> np.ndarray:
            return embed(_texts(f, text_column, p))
        media, kind = texts, "text"
    else:
        columns = _feature_columns(frame, feature_columns, {id_column, label_column}, path)

        def raw(f: pd.DataFrame, p: Path, w: Where) -> np.ndarray:
            for c in columns:
                _column(f, c, p, "feature")
            X = f[columns].to_numpy(dtype=np.float64)
            check_finite(X, str(p), w)
            return X
        media, kind = None, None
    X = raw(frame, path, here)
    ds = make_dataset(path.stem, keys, X, y, names, tr, te, media=media, media_kind=kind)

    def featurize(f: pd.DataFrame, p: Path, w: Where) -> tuple[np.ndarray, np.ndarray]:
        k = _ids(f, id_column, p, w)
        sort_keys(k, str(p))
        return k, minmax_scale(X[tr], raw(f, p, w))[1]

    return ds, featurize, columns


def _texts(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    col = _column(frame, column, path, "text (data.options.text_column)")
    return np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in col],
                    dtype=object)


def featurize_inputs(options: Mapping[str, Any], path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Keys and features of NEW rows (a table with the pool's id and feature / text columns, or a ``.npy`` of
    the raw feature columns in order), made exactly as the pool's; the pool is re-read to fit the same scaling."""
    path = Path(path).expanduser()
    _, featurize, columns = prepare(**options)
    if path.suffix.lower() != ".npy":
        frame, where = read_table(path, (options.get("id_column", "id"), options.get("text_column")))
        return featurize(frame, path, where)
    if options.get("text_column") is not None:
        raise ValueError(f"{path}: a text pool takes a table of texts, not a .npy")
    X = np.load(user_file(path, "a .npy of feature rows"), allow_pickle=False)
    if X.ndim != 2 or X.shape[1] != len(columns):
        raise ValueError(f"{path}: expected an array (n, {len(columns)}) of the columns {columns}, got {X.shape}")
    frame = pd.DataFrame(X, columns=columns)
    frame[options.get("id_column", "id")] = [str(i) for i in range(len(X))]
    return featurize(frame, path, lambda i: f"row {i + 1}")
