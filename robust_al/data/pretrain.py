"""A transferred feature space without downloaded weights: pretrain a torchvision network on source classes of
CIFAR-10 that the target task does not use, and keep its trunk as the frozen feature extractor.

The robust-active-learning paper runs its loop on frozen ImageNet-pretrained ResNet50 features with a trained
dense head. Nothing may be downloaded here, so :func:`pretrain_cifar` trains the same kind of network on the
eight CIFAR-10 classes that are not in CIFAR-2 (airplane vs frog), with their clean labels: the target task's
images and classes are never seen. The weights are cached by content hash (the source index file, the
classes and every training setting), so every repetition of an evaluation shares one pretraining.

    path, meta = pretrain_cifar()                     # results/pretrained/cifar8-resnet18-<hash>.pt
    # config: model: {network: pretrained, backbone: {arch: resnet18, weights: <path>}}

The training recipe is the usual one for CIFAR ResNets (SGD with Nesterov momentum 0.9, weight decay 5e-4,
one-cycle learning rate, random 4-pixel-padded crops and horizontal flips, batch 128); inputs are
standardized with the ImageNet statistics, as :class:`robust_al.crowd.network.FrozenFeatureNet` does for any
pretrained trunk. torchvision's architecture is kept as it is (its 7x7 stride-2 stem and max pooling leave a
1x1 map of a 32x32 image): the CIFAR variant with a 3x3 stem costs ~15x the compute, too much for a CPU.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from robust_al.crowd.network import (IMAGENET_MEAN, IMAGENET_STD, pick_device, shuffled_batches,
                                    train_minibatches)
from robust_al.data.loaders import (CIFAR10_CLASSES, cifar10_train_sample, class_remap, default_datasets_dir,
                                    load_cifar10n)

CIFAR2 = ("airplane", "frog")


def source_classes(target: Sequence[str] = CIFAR2) -> list[str]:
    """The CIFAR-10 classes not in ``target``."""
    return [c for c in CIFAR10_CLASSES if c not in set(target)]


def source_ids(classes: Sequence[str] | None = None, n_train: int | None = 16000, seed: int = 0,
               root: str | Path | None = None) -> np.ndarray:
    """CIFAR-10 training indices of the images :func:`pretrain_cifar` trains on (the same sample), so that a
    campaign on CIFAR-10 can leave them out of its pool (``data.options.exclude``)."""
    base = Path(root) if root is not None else default_datasets_dir()
    remap = class_remap(list(classes) if classes is not None else source_classes())
    return cifar10_train_sample(_index_csv(base), remap, n_train, np.random.default_rng(seed))["index"].to_numpy()


def _index_csv(root: Path) -> Path:
    """The CIFAR-10 training index (index, clean_label, path) under the datasets folder ``root``."""
    return root / "cifar10_images" / "train_index_pytorch_order.csv"


def _key(spec: dict, root: Path) -> str:
    index = _index_csv(root)
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    h.update(hashlib.sha256(index.read_bytes()).digest() if index.is_file() else b"")
    return h.hexdigest()[:16]


def crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crops and horizontal flips, per image."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 8)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    out = torch.gather(out, 3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def _accuracy(model: nn.Module, X: np.ndarray, y: np.ndarray, device, mean, std, batch: int = 1000) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for s in range(0, len(X), batch):
            xb = (torch.as_tensor(X[s:s + batch], device=device) - mean) / std
            right += int((model(xb).argmax(1).cpu().numpy() == y[s:s + batch]).sum())
    return right / max(len(X), 1)


def pretrain_cifar(classes: Sequence[str] | None = None, arch: str = "resnet18", epochs: int = 6,
                   batch_size: int = 128, lr: float = 0.1, seed: int = 0, root: str | Path | None = None,
                   cache_dir: str | Path = "results/pretrained", n_train: int | None = 16000,
                   echo=print) -> tuple[Path, dict]:
    """Train torchvision's ``arch`` on the CIFAR-10 ``classes`` (default: the eight not in CIFAR-2), clean
    labels, and save its state_dict; cached: a second call with the same data and settings returns the file.

    Returns the weights path and the metadata written next to it (``.json``): source classes, settings,
    ``source_test_accuracy`` (on those classes' CIFAR-10 test images), ``seconds``, ``device``, versions."""
    from robust_al.data.backbone import import_torchvision
    from robust_al.versions import versions

    classes = list(classes) if classes is not None else source_classes()
    base = Path(root) if root is not None else default_datasets_dir()
    spec = {"source": "cifar10", "classes": classes, "arch": arch, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "seed": seed, "n_train": n_train, "recipe": 1}
    name = f"cifar{len(classes)}-{arch}-{_key(spec, base)}"
    path, meta_path = Path(cache_dir) / f"{name}.pt", Path(cache_dir) / f"{name}.json"
    if path.is_file() and meta_path.is_file():
        return path, json.loads(meta_path.read_text())
    t0 = time.perf_counter()
    ds = load_cifar10n(base, classes=classes, n_train=n_train, seed=seed)
    X, y = ds.train.X, ds.train.y
    device = pick_device()
    torch.manual_seed(seed)
    model = import_torchvision().models.get_model(arch, weights=None, num_classes=len(classes)).to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    steps = epochs * -(-len(X) // batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    X_t, y_t = torch.as_tensor(X), torch.as_tensor(y)
    loss_fn = nn.CrossEntropyLoss()

    def loss(b, _epoch):
        xb = ((crop_flip(X_t[b], gen).to(device)) - mean) / std
        return loss_fn(model(xb), y_t[b].to(device))

    def report(epoch, mean_loss):
        if echo:
            echo(f"pretrain epoch {epoch + 1}/{epochs}: loss {mean_loss:.3f} ({time.perf_counter() - t0:.0f} s)")

    model.train()
    train_minibatches(opt, epochs, shuffled_batches(len(X_t), batch_size, gen), loss, lambda _b, _e: sched.step(),
                      report)
    acc = _accuracy(model, ds.test.X, ds.test.y, device, mean, std)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)
    meta = {**spec, "weights": str(path), "n_train_images": int(len(X)), "n_test_images": int(len(ds.test.X)),
            "source_test_accuracy": acc, "seconds": seconds, "device": str(device), "versions": versions()}
    meta_path.write_text(json.dumps(meta, indent=1))
    return path, meta
