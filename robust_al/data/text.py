"""A pool of texts: CSV or JSON lines with an id and a text column (and optionally a label).

Config::

    data:
      name: text
      options:
        path: /data/reviews.jsonl     # {"id": "r1", "text": "great film", "label": "pos"} per line
        id_column: id
        text_column: text
        label_column: label           # default label when present; empty = unknown
        class_names: [neg, pos]       # default: the sorted distinct labels
        n_components: 100             # TF-IDF -> truncated SVD dimensions
        seed: 0

Features: scikit-learn's ``TfidfVectorizer`` and ``TruncatedSVD`` fitted on the pool's (training) texts,
then min-max scaled to [0, 1]; ``media_kind`` is ``"text"`` and ``media`` holds the texts. Refitting is
deterministic for the same texts and seed, so new texts are featurized by refitting (nothing is pickled).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robust_al.data.pool import Dataset

log = logging.getLogger(__name__)


def text_features(texts: Sequence[str], n_components: int = 100, seed: int = 0) -> Callable[[Sequence[str]],
                                                                                          np.ndarray]:
    """TF-IDF + truncated SVD fitted on ``texts``; returns the transform (texts -> float64 (n, d))."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    if int(n_components) < 1:
        raise ValueError(f"data.options.n_components must be >= 1, got {n_components}")
    tfidf = TfidfVectorizer(sublinear_tf=True)
    try:
        T = tfidf.fit_transform(list(texts))
    except ValueError as e:  # every text empty or stop words only
        raise ValueError(f"no words to build text features from ({e})") from None
    k = min(int(n_components), T.shape[1] - 1, T.shape[0] - 1)
    if k < 1:
        raise ValueError(f"too few texts ({T.shape[0]}) or words ({T.shape[1]}) for text features")
    if k < n_components:
        log.info("text features: %d SVD components instead of %d (only %d texts, %d words)",
                 k, n_components, T.shape[0], T.shape[1])
    svd = TruncatedSVD(n_components=k, random_state=int(seed)).fit(T)
    return lambda new: svd.transform(tfidf.transform(list(new)))


def load_text(path: str | Path, id_column: str = "id", text_column: str = "text", label_column: str | None = None,
              class_names: Sequence[str] | None = None, n_components: int = 100, test_size: float = 0.0,
              seed: int = 0) -> Dataset:
    """A Dataset of texts (see the module docstring); the table loader with a text column."""
    from robust_al.data.table import load_table

    return load_table(path, id_column=id_column, text_column=text_column, label_column=label_column,
                      class_names=class_names, n_components=n_components, test_size=test_size, seed=seed)


def featurize_inputs(options: Mapping[str, Any], path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Keys and features of NEW texts (a CSV / JSONL with the pool's id and text columns), as the pool's."""
    from robust_al.data import table

    return table.featurize_inputs({"text_column": "text", **options}, path)
