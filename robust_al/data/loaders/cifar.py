"""CIFAR-10 JPEGs with the CIFAR-10N human labels, and CIFAR-2 (airplane vs frog) drawn from them."""
from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robust_al.data.pool import Dataset, Pool
from robust_al.data.loaders.common import (TEST_ID_OFFSET, default_datasets_dir, recorded_frame, require_file,
                                           stratified_choice)

log = logging.getLogger(__name__)


CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


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
        raise ValueError(f"{long_csv}: lacks columns {sorted(missing)}; expected "
                         "image_index,slot,worker_id,label,clean_label")
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
        index = index.iloc[stratified_choice(index["clean_label"].to_numpy(), n_train, rng)].reset_index(drop=True)
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
    archive = require_file(base / "cifar10_images" / "CIFAR-10-images_jpg.tar.gz", "the CIFAR-10 JPEG archive")
    index_csv = require_file(
        base / "cifar10_images" / "train_index_pytorch_order.csv", "the CSV index,clean_label,path"
    )
    long_csv = require_file(
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
        raise ValueError(f"{archive}: member {miss!r} (listed in {index_csv}) is missing; "
                         f"{int((~found).sum())} missing in all")

    # ---- test: running ids over the whole test set, sample, decode
    all_test.sort()
    test_keys = [key for _, key in all_test if key in test_bytes]
    test_ids = np.array([TEST_ID_OFFSET + r for r, (_, key) in enumerate(all_test) if key in test_bytes],
                        dtype=np.int64)
    test_y = remap[np.array([CIFAR10_CLASSES.index(key.split("/")[1]) for key in test_keys], dtype=np.int64)]
    if not test_keys:
        raise ValueError(f"{archive}: no test/<class>/*.jpg members for classes {classes}")
    if n_test is not None:
        if n_test > len(test_keys):
            raise ValueError(f"n_test={n_test} but only {len(test_keys)} test images of classes {classes}")
        sel = stratified_choice(test_y, n_test, rng)
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
    recorded = recorded_frame(
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
