"""A pool from a folder of images.

Config::

    data:
      name: imagefolder
      options:
        root: /data/pets            # one sub-folder per class (cat/, dog/): truth known
        image_size: 32              # images are resized to image_size x image_size
        test_size: 0.2              # optional stratified test split for reporting (default 0: all in the pool)

    data:
      name: imagefolder
      options:
        root: /data/unsorted        # flat: images directly in root, truth unknown
        class_names: [cat, dog]     # required for a flat folder
        trusted_labels: /data/trusted.csv   # optional, columns item,label: truth for some items (the holdout)
        backbone: {arch: resnet18, weights: /models/resnet18.pt}   # optional, see robust_al.data.backbone

Item keys are the paths relative to ``root`` (posix), item ids 0..n-1 in key order. Without a backbone
``X`` is ``(n, 3, image_size, image_size)`` in [0, 1] (the project's small CNN); with one, ``(n, d)``
features min-max scaled with the pool's statistics. Files are found by torchvision's image extensions;
names starting with '.' are skipped.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robust_al.data.arrays import check_finite, encode_labels, make_dataset, sort_keys, split_positions
from robust_al.data.backbone import Backbone, import_torchvision, load_backbone
from robust_al.data.loaders.common import minmax_scale, pair_rows, user_file
from robust_al.data.pool import UNKNOWN, Dataset


@functools.cache
def _extensions() -> tuple[str, ...]:
    return import_torchvision().datasets.folder.IMG_EXTENSIONS


def _is_image(p: Path) -> bool:
    # dot-names are hidden files, e.g. macOS '._x.jpg' resource forks, which are not images
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _extensions()


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_image(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def scan(root: Path, class_names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sorted relative keys, folder labels (-1 for a flat folder) and the class names."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found (expected a folder of images)")
    top = [p for p in root.iterdir() if _is_image(p)]
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if top:
        nested = [p for d in subdirs for p in _images_under(d)][:1]
        if nested:
            raise ValueError(f"{root}: mixes images at the top level ({top[0].name}) with images in sub-folders "
                             f"({nested[0].relative_to(root).as_posix()}); use one sub-folder per class or a flat "
                             "folder")
        if class_names is None:
            raise ValueError(f"data.options.class_names is required for the flat folder {root} (nothing else "
                             "names the classes)")
        keys = [p.name for p in top]
        return sort_keys(keys, str(root))[0], np.full(len(keys), UNKNOWN, np.int64), [str(c) for c in class_names]
    if not subdirs:
        raise ValueError(f"{root}: empty folder; expected images, or one sub-folder of images per class")
    folders = [c for c in import_torchvision().datasets.folder.find_classes(str(root))[0] if not c.startswith(".")]
    names = list(folders) if class_names is None else [str(c) for c in class_names]
    stray = [c for c in folders if c not in names]
    if stray:
        raise ValueError(f"{root}: sub-folder {stray[0]!r} is not a class; class_names: {names}")
    keys, labels = [], []
    for c in folders:
        for p in _images_under(root / c):
            keys.append(p.relative_to(root).as_posix())
            labels.append(c)
    if not keys:
        raise ValueError(f"{root}: empty folder; no image files ({', '.join(_extensions())}) in its sub-folders")
    skeys, order = sort_keys(keys, str(root))
    y, _ = encode_labels([labels[i] for i in order], names, str(root))
    return skeys, y, names


def read_trusted(path: Path, keys: np.ndarray, y: np.ndarray, class_names: list[str]) -> np.ndarray:
    """``y`` with the truth of a CSV ``item,label`` (item = relative path, label = class name) filled in."""
    pos = {k: i for i, k in enumerate(keys)}
    index = {c: k for k, c in enumerate(class_names)}
    y = y.copy()
    seen: set[str] = set()
    for line, item, label in pair_rows(path, "item", "label"):
        if item not in pos:
            raise ValueError(f"{path}: line {line}: item {item!r} is not an image in the folder "
                             "(expected a path relative to data.options.root)")
        if label not in index:
            raise ValueError(f"{path}: line {line}: label {label!r} is not a class; known classes: {class_names}")
        if item in seen:
            raise ValueError(f"{path}: line {line}: item {item!r} is listed twice")
        seen.add(item)
        i = pos[item]
        if y[i] != UNKNOWN and y[i] != index[label]:
            raise ValueError(f"{path}: line {line}: item {item!r} labelled {label!r}, but its folder says "
                             f"{class_names[y[i]]!r}")
        y[i] = index[label]
    return y


def decode(paths: Sequence[Path], size: int) -> np.ndarray:
    """uint8 ``(n, 3, size, size)``: each image decoded with Pillow, RGB, resized; a bad file is named."""
    from PIL import Image

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                rgb = im.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb).transpose(2, 0, 1)
        except (OSError, ValueError, SyntaxError) as e:
            raise ValueError(f"{p}: not a readable image ({e})") from None
    return out


def featurize(paths: Sequence[Path], image_size: int, backbone: Backbone | None) -> np.ndarray:
    """Pixels in [0, 1] ``(n, 3, s, s)``, or the backbone's raw ``(n, d)`` features (decoded batch by batch,
    so that large images never sit in memory all at once)."""
    if backbone is None:
        return decode(paths, image_size).astype(np.float32) / 255.0
    step = 8 * backbone.batch_size
    parts = [backbone(decode(paths[s:s + step], image_size).astype(np.float32) / 255.0)
             for s in range(0, len(paths), step)]
    return np.concatenate(parts).astype(np.float32)


def _check_size(image_size: int) -> int:
    if int(image_size) < 4:
        raise ValueError(f"data.options.image_size must be at least 4, got {image_size}")
    return int(image_size)


def load_imagefolder(root: str | Path, image_size: int = 32, backbone: Mapping[str, Any] | None = None,
                     class_names: Sequence[str] | None = None, trusted_labels: str | Path | None = None,
                     test_size: float = 0.0, seed: int = 0) -> Dataset:
    """A Dataset from a folder of images (see the module docstring for the layout and the config)."""
    return _prepare(root, image_size, backbone, class_names, trusted_labels, test_size, seed)[0]


def _prepare(root, image_size, backbone, class_names, trusted_labels, test_size, seed):
    """The Dataset and the pool's raw training features (for scaling new items the same way)."""
    root = Path(root).expanduser().resolve()
    size = _check_size(image_size)
    keys, y, names = scan(root, class_names)
    if trusted_labels is not None:
        y = read_trusted(user_file(trusted_labels, "a CSV item,label of trusted labels"), keys, y, names)
    net = load_backbone(backbone) if backbone is not None else None
    paths = [root / k for k in keys]
    X = featurize(paths, size, net)
    tr, te = split_positions(y, test_size, seed)
    media = np.array([str(p) for p in paths], dtype=object)
    ds = make_dataset(root.name or "images", keys, X, y, names, tr, te, media=media, media_kind="image",
                      media_root=root)
    return ds, X[tr], net


def featurize_inputs(options: Mapping[str, Any], path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Keys and inputs of NEW images (a folder, searched recursively, or one image file), made exactly as the
    pool's: same size, same backbone, scaled with the pool's statistics. Keys are paths relative to the folder
    (the file name for one file). A ``.npy`` holds inputs already in the loader's raw form (pixels in [0, 1]
    or backbone features)."""
    path = Path(path).expanduser()
    size = _check_size(options.get("image_size", 32))
    ref = None
    if options.get("backbone") is not None:
        _ds, ref, net = _prepare(**{"image_size": 32, "class_names": None, "trusted_labels": None,
                                   "test_size": 0.0, "seed": 0, "backbone": None, **options})
    else:
        net = None
    if path.suffix.lower() == ".npy":
        X = np.load(user_file(path, "a .npy of inputs"), allow_pickle=False).astype(np.float32)
        check_finite(X, str(path))
        keys = np.array([str(i) for i in range(len(X))], dtype=object)
    elif path.is_dir():
        files = _images_under(path)
        if not files:
            raise ValueError(f"{path}: empty folder; expected image files ({', '.join(_extensions())})")
        keys = np.array([p.relative_to(path).as_posix() for p in files], dtype=object)
        X = featurize(files, size, net)
    else:
        X = featurize([user_file(path, "an image file, a folder of images or a .npy")], size, net)
        keys = np.array([path.name], dtype=object)
    expected = (3, size, size) if net is None else ref.shape[1:]
    if X.shape[1:] != tuple(expected):
        raise ValueError(f"{path}: inputs of shape {X.shape[1:]}, but the pool's are {tuple(expected)}")
    return keys, (X if ref is None else minmax_scale(ref, X)[1])
