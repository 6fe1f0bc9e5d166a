"""Featurize NEW items exactly as a configured pool's items were (for ``robust-al predict``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robust_al.data.arrays import check_finite
from robust_al.data.loaders import user_file, check_loader_options, load_dataset


def load_inputs(data_name: str, options: dict[str, Any], path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, X)``: the items in ``path`` as the pool of ``data: {name: data_name, options: options}`` sees them.

    - ``imagefolder`` (and the CIFAR pools, 32x32 pixels): a folder of images (recursive) or one image file;
      same size and backbone as the pool. Keys are the paths relative to the folder.
    - ``table`` / ``text``: a CSV / Parquet / JSONL with the pool's id and feature (or text) columns; features
      are scaled (and text models fitted) on the configured pool's data, refitted deterministically.
    - any loader: a ``.npy`` of inputs in the loader's raw form (feature columns, backbone features, pixels in
      [0, 1]); for digits / generic / labelme, inputs already in the pool's [0, 1] space. Keys are row numbers.
    """
    check_loader_options(data_name, options)
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (expected new items to featurize)")
    if data_name == "imagefolder":
        from robust_al.data.imagefolder import featurize_inputs
        return featurize_inputs(options, path)
    if data_name in ("cifar2", "cifar10n"):
        from robust_al.data.imagefolder import featurize_inputs
        return featurize_inputs({"image_size": 32}, path)
    if data_name in ("table", "text"):
        from robust_al.data import table, text
        return (table if data_name == "table" else text).featurize_inputs(options, path)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"{path}: new items for a {data_name!r} pool must be a .npy of inputs in the pool's "
                         "[0, 1] space")
    X = np.load(user_file(path, "a .npy of inputs"), allow_pickle=False).astype(np.float32)
    check_finite(X, str(path))
    shape = load_dataset(data_name, **options).train.input_shape
    if X.shape[1:] != shape:
        raise ValueError(f"{path}: inputs of shape {X.shape[1:]}, but the pool's are {shape}")
    return np.array([str(i) for i in range(len(X))], dtype=object), np.clip(X, 0.0, 1.0)
