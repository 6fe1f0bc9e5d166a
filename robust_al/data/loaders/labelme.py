"""LabelMe (Rodrigues & Pereira 2018): VGG16 features of 8 scene classes and the answers of 59 AMT workers."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robust_al.data.pool import Dataset, Pool
from robust_al.data.loaders.common import (TEST_ID_OFFSET, default_datasets_dir, load_int_matrix, load_npy,
                                           minmax_scale, read_answer_matrix, recorded_frame, require_file)


LABELME_CLASSES = [
    "highway", "insidecity", "tallbuilding", "street", "forest", "coast", "mountain", "opencountry",
]


def load_labelme(root: str | Path | None = None) -> Dataset:
    """LabelMe scenes with Amazon Mechanical Turk labels (Rodrigues & Pereira 2018), 8 classes.

    ``root`` defaults to ``default_datasets_dir() / 'labelme'``.  Train = 1000 items (ids 0..999,
    VGG16 average-pooled 512-d features, truth from LabelMe_Z_train.txt); test = the 1188-item
    ``test`` split (ids ``TEST_ID_OFFSET + row``); the 500-item ``valid`` split is not used.
    ``recorded`` comes from answers.txt (1000 x 59, -1 = no answer), worker ``amt{j}`` for column j.
    Features are min-max scaled with train statistics (test clipped to [0, 1]).
    """
    root = Path(root) if root is not None else default_datasets_dir() / "labelme"
    require_file(root, "the LabelMe folder")
    k = len(LABELME_CLASSES)
    X = load_npy(root / "LabelMe_VGG_avg_train.npy", "train features, float (1000, 512)")
    Xt = load_npy(root / "LabelMe_VGG_avg_test.npy", "test features, float (1188, 512)")
    y = load_int_matrix(root / "LabelMe_Z_train.txt", "one train class id (0..7) per line")
    yt = load_int_matrix(root / "LabelMe_Z_test.txt", "one test class id (0..7) per line")
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
    recorded = recorded_frame(ids[rows], [f"amt{j}" for j in cols], answers[rows, cols])
    Xs, Xts = minmax_scale(X.astype(np.float64), Xt.astype(np.float64))
    return Dataset(
        name="labelme",
        train=Pool(ids, Xs, y, k, list(LABELME_CLASSES)),
        test=Pool(TEST_ID_OFFSET + np.arange(len(Xt), dtype=np.int64), Xts, yt, k, list(LABELME_CLASSES)),
        recorded=recorded,
    )
