"""A frozen torchvision backbone that turns images into feature vectors, from a local weights file only.

Config (an image pool's option)::

    data:
      name: imagefolder
      options:
        root: /data/photos
        image_size: 224
        backbone: {arch: resnet18, weights: /models/resnet18.pt}   # layer: avgpool, batch_size: 64

``weights`` is a state_dict saved with ``torch.save(model.state_dict(), path)``; it is read with
``torch.load(..., weights_only=True)`` and nothing is ever downloaded.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robust_al.crowd.network import IMAGENET_MEAN, IMAGENET_STD, pick_device
from robust_al.data.loaders import check_options

BACKBONE_KEYS = ("arch", "weights", "layer", "batch_size", "normalize")

_torchvision_ops: torch.library.Library | None = None  # kept alive: the schemas vanish with it


def import_torchvision():
    """``import torchvision``, also where its compiled ops cannot load.

    Measured here: torchvision 0.28.0 built for CUDA beside torch 2.13.0+cpu fails with ``RuntimeError:
    operator torchvision::nms does not exist``: its ``_C.so`` links libtorch_cuda and so does not load, and
    ``_meta_registrations.py`` then registers fake kernels for ``torchvision::nms`` / ``qnms`` without a guard.
    Defining those two schemas first lets the import finish; models and datasets work, only the C ops
    (nms, roi_align, ...), which nothing here uses, stay missing.
    """
    global _torchvision_ops
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::nms does not exist" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _torchvision_ops = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _torchvision_ops.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


def _head_name(model: nn.Module) -> str:
    """The classifier head: the model's last Linear layer."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear classifier head to remove")
    return linears[-1]


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def load_trunk(arch: str, weights: str | Path, where: str = "data.options.backbone") -> nn.Module:
    """torchvision's ``arch`` with the state_dict of the local file ``weights`` and its classifier head replaced
    by the identity: images in, penultimate features out. ``where`` names the config key in errors."""
    tv = import_torchvision()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{where}.weights: {path} not found (expected a local PyTorch state_dict file; "
                                "weights are never downloaded)")
    try:
        model = tv.models.get_model(arch, weights=None)
    except ValueError:
        raise ValueError(f"{where}.arch: unknown architecture {arch!r}; expected a name in "
                         "torchvision.models.list_models(), e.g. resnet18, resnet50, vit_b_16") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and set(state) in ({"state_dict"}, {"model"}):
        state = next(iter(state.values()))
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state_dict (a mapping of tensors), got {type(state).__name__}")
    head = _head_name(model)
    # a head trained on other classes (another shape) is dropped below anyway: not loaded at all
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has unexpected {unexpected[0]!r}"
        raise ValueError(f"{path}: not a state_dict of torchvision's {arch} ({what}; "
                         f"{len(missing)} missing, {len(unexpected)} unexpected keys)")
    _replace(model, head, nn.Identity())
    return model


class Backbone:
    """Images ``(n, 3, h, w)`` in [0, 1] -> float32 features ``(n, d)``, in eval mode, in batches."""

    def __init__(self, arch: str, weights: str | Path, layer: str | None = None, batch_size: int = 64,
                 normalize: bool = True):
        model = load_trunk(arch, weights)
        self._out: list[torch.Tensor] = []
        if layer is not None:
            modules = dict(model.named_modules())
            if layer not in modules:
                raise ValueError(f"data.options.backbone.layer: {arch} has no layer {layer!r}; top-level layers: "
                                 f"{', '.join(n for n, _ in model.named_children())}")
            modules[layer].register_forward_hook(lambda m, i, out: self._out.append(out))
        self.layer = layer
        self.device = pick_device()
        self.model = model.eval().to(self.device)
        self.batch_size = int(batch_size)
        self.mean = torch.tensor(IMAGENET_MEAN if normalize else (0.0,) * 3, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD if normalize else (1.0,) * 3, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, X: np.ndarray) -> np.ndarray:
        outs = []
        for s in range(0, len(X), self.batch_size):
            x = torch.as_tensor(np.asarray(X[s:s + self.batch_size], np.float32), device=self.device)
            self._out.clear()
            out = self.model((x - self.mean) / self.std)
            if self.layer is not None:
                out = self._out[-1]
            outs.append(out.flatten(1).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def load_backbone(spec: Mapping[str, Any]) -> Backbone:
    """A :class:`Backbone` from the ``data.options.backbone`` mapping (unknown or missing keys named)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"data.options.backbone must be a mapping with keys {', '.join(BACKBONE_KEYS)}, "
                         f"got {spec!r}")
    check_options(spec, BACKBONE_KEYS, "data.options.backbone", required=("arch", "weights"))
    return Backbone(**spec)
