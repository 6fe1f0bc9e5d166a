"""Loaders that turn datasets on disk into :class:`~robust_al.data.pool.Dataset` objects.

Everything is read with numpy / csv / tarfile + Pillow; nothing is ever unpickled and nothing is
cached on disk.  Real-crowd datasets live under :func:`default_datasets_dir` (override it with the
``ROBUST_AL_DATASETS`` environment variable).

Id conventions: train ids are the dataset's own item ids (row index, CIFAR-10 training index,
or the ``item`` column of a generic features file).  Items of a *separate* test split get
``TEST_ID_OFFSET + index`` so that train and test ids never collide.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from robust_al.data.loaders.cifar import (CIFAR10_CLASSES, cifar10_train_sample, class_remap,  # noqa: F401
                                          load_cifar2, load_cifar10n, read_cifar10n_labels, read_id_list)
from robust_al.data.loaders.common import (ENV_VAR, TEST_ID_OFFSET, default_datasets_dir,  # noqa: F401
                                           is_number, load_int_matrix, load_npy, minmax_scale,
                                           read_answer_matrix, recorded_frame, require_file, split_train_test,
                                           stratified_choice, user_file)
from robust_al.data.loaders.digits import load_digits_dataset
from robust_al.data.loaders.generic import load_generic_crowd
from robust_al.data.loaders.labelme import LABELME_CLASSES, load_labelme  # noqa: F401
from robust_al.data.pool import Dataset

__all__ = [
    "TEST_ID_OFFSET",
    "check_options",
    "default_datasets_dir",
    "get_loader",
    "load_cifar2",
    "load_cifar10n",
    "load_dataset",
    "load_digits_dataset",
    "load_generic_crowd",
    "load_labelme",
]

_LOADERS: dict[str, Callable[..., Dataset] | str] = {
    "digits": "robust_al.data.loaders.digits:load_digits_dataset",
    "generic": "robust_al.data.loaders.generic:load_generic_crowd",
    "labelme": "robust_al.data.loaders.labelme:load_labelme",
    "cifar2": "robust_al.data.loaders.cifar:load_cifar2",
    "cifar10n": "robust_al.data.loaders.cifar:load_cifar10n",
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
