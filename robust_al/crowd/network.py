"""The classifier networks and their training loop (PyTorch; CUDA when present, else CPU)."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from robust_al.crowd.learner import Snapshot


# torchvision's pretrained classification weights, and robust-al's own pretraining, expect these statistics
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` takes CUDA when a GPU is present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Standardize(nn.Module):
    """x -> (x - mean) / std with statistics of the unlabeled pool, inside the network so that inputs (and
    attack budgets) stay in the [0, 1] space while the layers see standardized features.

    What it does to an attack budget: an L-inf ball of radius eps around x in input space is, in the space the
    layers see, a box with half-width eps / std_j along feature j. Features with a small spread across the pool
    are therefore attacked relatively harder than features with a large one (the std floor, 0.1 x the mean std,
    bounds that to 10x the average). Learners built with ``standardize=False`` (``model.standardize: false``,
    ``robust_lfc.py --no-standardize``) leave the identity here, so eps means the same to every feature and to
    every learner, at the cost of slower training on badly scaled inputs."""

    mean: torch.Tensor  # buffers (register_buffer), saved in the state_dict
    std: torch.Tensor

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(*shape))
        self.register_buffer("std", torch.ones(*shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def fit(self, X: np.ndarray) -> Standardize:
        """Mean and std of ``X`` per feature (per channel for images)."""
        X = np.asarray(X, dtype=np.float32)
        axes = (0,) if X.ndim == 2 else (0, 2, 3)
        mean, std = X.mean(axis=axes), X.std(axis=axes)
        # a floor, so that near-constant inputs (blank digit pixels) do not turn a 0.01 change into many stds
        # and make the network trivially attackable there
        std = np.maximum(std, 0.1 * float(std.mean()) + 1e-6)
        self.mean.copy_(torch.as_tensor(mean.reshape(self.mean.shape), device=self.mean.device))
        self.std.copy_(torch.as_tensor(std.reshape(self.std.shape), device=self.std.device))
        return self


class ClassifierNet(nn.Module):
    """What every network here is made of: ``standardize`` (inputs), ``features`` (up to the penultimate
    layer: the query's embedding, and the layer ART's feature-collision attack reads) and ``head``;
    forward(x) = head(features(standardize(x)))."""

    standardize: Standardize  # submodules, set by each network's __init__
    features: nn.Module
    head: nn.Module


class MLP(ClassifierNet):
    """Features -> hidden layers (ReLU, dropout) = ``features`` (the penultimate layer) -> ``head``."""

    def __init__(self, d_in: int, n_classes: int, hidden: Sequence[int] = (128,), dropout: float = 0.2):
        super().__init__()
        self.standardize = Standardize((d_in,))
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d_in, h), nn.ReLU(), nn.Dropout(dropout)]
            d_in = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(d_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.standardize(x)))


class SmallCNN(ClassifierNet):
    """Two conv blocks and a dense layer (``features``, penultimate) -> ``head``; for 32x32 or 8x8 images."""

    def __init__(self, in_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (128,),
                 dropout: float = 0.2, channels: Sequence[int] = (32, 64)):
        super().__init__()
        c, h, w = in_shape
        c1, c2 = channels
        self.standardize = Standardize((c, 1, 1))
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), hidden[0]), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden[0], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.standardize(x)))


class FrozenFeatureNet(ClassifierNet):
    """A frozen feature extractor and a trained head: the transfer-learning setting of the robust-active-learning
    paper (frozen ResNet50 features -> dropout 0.2 -> one dense output layer).

    ``trunk``: a pretrained image network without its head (``model.network: pretrained``, read from a local
    weights file by :func:`robust_al.data.backbone.load_trunk`); its inputs are standardized with the ImageNet
    statistics it was trained with (fixed: the pool's own would shift what it sees). Without one, ``features``
    is a fixed random extractor drawn from the construction seed (random conv filters + ReLU + max pooling for
    images, a random ReLU projection otherwise): no pretrained weights at all. Either way ``features`` is the
    penultimate layer and a top-level child, as ART's feature-collision attack needs, it never trains and
    stays in eval mode (BatchNorm keeps its pretrained statistics), and ``head`` = dropout + linear is all that
    training changes. ``hidden`` is unused (kept for a uniform signature)."""

    head: nn.Sequential  # dropout, linear
    _key: bytes  # the trunk's digest (_trunk_key) and the tensor versions it was computed from
    _key_stamp: tuple

    def __init__(self, in_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (128,),
                 dropout: float = 0.2, width: int = 32, trunk: nn.Module | None = None):
        super().__init__()
        self.pretrained = trunk is not None
        if trunk is not None:
            if len(in_shape) != 3 or in_shape[0] != 3:
                raise ValueError(f"model.network 'pretrained' needs RGB images (3, h, w), got {tuple(in_shape)}")
            self.standardize = Standardize((3, 1, 1))
            self.standardize.mean.copy_(torch.tensor(IMAGENET_MEAN).view(3, 1, 1))
            self.standardize.std.copy_(torch.tensor(IMAGENET_STD).view(3, 1, 1))
            self.features = nn.Sequential(trunk, nn.Flatten())
            with torch.no_grad():
                d = int(self.features.eval()(torch.zeros(1, *in_shape)).shape[1])
        elif len(in_shape) == 3:
            c, h, w = in_shape
            pool = 4 if h >= 16 else 2
            self.standardize = Standardize((c, 1, 1))
            self.features = nn.Sequential(nn.Conv2d(c, width, 5 if h >= 16 else 3, padding="same"), nn.ReLU(),
                                          nn.MaxPool2d(pool), nn.Flatten())
            d = width * (h // pool) * (w // pool)
        else:
            d_in = int(np.prod(in_shape))
            self.standardize = Standardize((d_in,))
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 16 * width), nn.ReLU())
            d = 16 * width
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, n_classes))

    def train(self, mode: bool = True) -> FrozenFeatureNet:
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.standardize(x)))

    @torch.no_grad()
    def frozen_features(self, X: np.ndarray) -> np.ndarray:
        """``features(standardize(x))`` of each row of X; rows seen before (by content, through a trunk with the
        same weights) are read from :data:`FEATURE_CACHE` instead of passing the trunk again. The trunk takes
        :data:`TRUNK_BATCH` rows at a time.

        A campaign asks for the features of the same pool and test images every iteration (query, training,
        evaluation, the poison check), and through a ResNet18 on this CPU that was about 14 s of each
        iteration's 7-22 s; only the head trains, so a row's features never change."""
        self.features.eval()
        X = np.ascontiguousarray(X, dtype=np.float32)
        key = self._trunk_key()
        rows = [(key, hashlib.blake2b(r.tobytes(), digest_size=16).digest()) for r in X.reshape(len(X), -1)]
        first: dict = {}  # each row not cached yet -> where it first occurs in X
        for i, k in enumerate(rows):
            if k not in first and k not in FEATURE_CACHE:
                first[k] = i
        todo, idx = list(first), np.fromiter(first.values(), dtype=np.int64, count=len(first))
        new: dict = {}
        if todo:
            device = next(self.head.parameters()).device
            B = TRUNK_BATCH
            for s in range(0, len(idx), B):
                xb = np.zeros((B, *X.shape[1:]), np.float32)  # padded: a row's features never depend on
                n = len(idx[s:s + B])                           # which rows shared its pass (see TRUNK_BATCH)
                xb[:n] = X[idx[s:s + B]]
                out = self.features(self.standardize(torch.as_tensor(xb, device=device))).flatten(1)
                new.update(zip(todo[s:s + B], out[:n].cpu().numpy()))
        if not rows:
            return np.zeros((0, self.head[-1].in_features), np.float32)
        out = np.stack([new[k] if k in new else FEATURE_CACHE[k] for k in rows])
        FEATURE_CACHE.put(new)
        return out

    def _trunk_key(self) -> bytes:
        """A digest of the frozen weights and input statistics: the cache's namespace for this trunk. Recomputed
        when a tensor was written since (``load_state_dict``, ``Standardize.fit`` bump its version)."""
        tensors = list(self.standardize.state_dict().items()) + list(self.features.state_dict().items())
        stamp = tuple((t.data_ptr(), t._version) for _, t in tensors)
        if getattr(self, "_key_stamp", None) != stamp:
            h = hashlib.blake2b(digest_size=16)
            for name, t in tensors:
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._key, self._key_stamp = h.digest(), stamp
        return self._key


class FeatureCache:
    """Frozen-trunk features by (trunk digest, row digest), shared by every network of a process (the poison
    check and the target accuracy build their own); cleared when it would pass ``max_bytes``."""

    _d: dict[tuple[bytes, bytes], np.ndarray]  # (trunk digest, row digest) -> features

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes, self.nbytes, self._d = max_bytes, 0, {}

    def __contains__(self, key) -> bool:
        return key in self._d

    def __getitem__(self, key) -> np.ndarray:
        return self._d[key]

    def put(self, items: dict) -> None:
        size = sum(v.nbytes for v in items.values())
        if self.nbytes + size > self.max_bytes:
            self.clear()
        self._d.update(items)
        self.nbytes += size

    def clear(self) -> None:
        self._d.clear()
        self.nbytes = 0


FEATURE_CACHE = FeatureCache()

# Rows pass the frozen trunk in batches of exactly this many (the last one padded with zeros). With a cache, which
# rows share a pass depends on what was asked before (a resumed campaign asks in another order than the
# uninterrupted one), and CPU convolutions pick their algorithm by batch size: measured on a ResNet18, one
# thread, a row computed alone differed from the same row in a batch of 600 (by up to 2.6e-6), while padded
# batches of 128 gave every row bit-identical features however the rows were grouped.
TRUNK_BATCH = 128


def build_network(input_shape: Sequence[int], n_classes: int, kind: str = "auto",
                  hidden: Sequence[int] = (128,), dropout: float = 0.2, backbone: Mapping | None = None
                  ) -> ClassifierNet:
    """The classifier network ``kind`` (``model.network``); ``pretrained`` reads ``backbone`` = {arch, weights}
    (``model.backbone``: a torchvision architecture and a local state_dict file; nothing is downloaded)."""
    if kind == "auto":
        kind = "cnn" if len(input_shape) == 3 else "mlp"
    if kind == "mlp":
        return MLP(int(np.prod(input_shape)), n_classes, hidden, dropout)
    if kind == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"model.network 'cnn' needs images (c, h, w), got inputs of shape {tuple(input_shape)}")
        return SmallCNN(input_shape, n_classes, hidden, dropout)
    if kind == "frozen":
        return FrozenFeatureNet(input_shape, n_classes, hidden, dropout)
    if kind == "pretrained":
        from robust_al.data.backbone import load_trunk

        if not backbone or "weights" not in backbone:
            raise ValueError("model.network 'pretrained' needs model.backbone: {arch: ..., weights: FILE}")
        trunk = load_trunk(backbone.get("arch", "resnet18"), backbone["weights"], "model.backbone")
        return FrozenFeatureNet(input_shape, n_classes, hidden, dropout, trunk=trunk)
    raise ValueError(f"model.network must be 'auto', 'mlp', 'cnn', 'frozen' or 'pretrained', got {kind!r}")


@torch.no_grad()
def penultimate(model: ClassifierNet, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Penultimate-layer features ``model.features(model.standardize(x))`` of X, in batches, in eval mode."""
    if isinstance(model, FrozenFeatureNet):
        return model.frozen_features(X)
    model.eval()
    device = next(model.parameters()).device
    outs = [model.features(model.standardize(torch.as_tensor(np.asarray(X[s:s + batch_size], np.float32),
                                                             device=device))).flatten(1).cpu().numpy()
            for s in range(0, len(X), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def epochs_for(n_items: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """``epochs``, or more when that would be fewer than ``min_steps`` gradient steps (tiny labeled sets)."""
    per_epoch = max(1, -(-n_items // batch_size))
    return max(epochs, -(-min_steps // per_epoch))


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device | None = None
                     ) -> Callable[[], Iterator[torch.Tensor]]:
    """``batches`` for :func:`train_minibatches`: each call draws a new permutation of ``range(n)`` from
    ``generator`` and cuts it into index batches (moved to ``device`` when given)."""
    def batches() -> Iterator[torch.Tensor]:
        perm = torch.randperm(n, generator=generator)
        if device is not None:
            perm = perm.to(device)
        return (perm[s:s + batch_size] for s in range(0, n, batch_size))

    return batches


def train_minibatches(opt: torch.optim.Optimizer, n_epochs: int, batches: Callable[[], Iterable[torch.Tensor]],
                      loss_fn: Callable[[torch.Tensor, int], torch.Tensor],
                      after_step: Callable[[torch.Tensor, int], None] | None = None,
                      after_epoch: Callable[[int, float], None] | None = None,
                      progress: bool = False, desc: str = "train") -> list[float]:
    """The one minibatch loop of every learner: per epoch, for each index batch ``b`` of ``batches()``, a
    gradient step on ``loss_fn(b, epoch)`` (which sets the network's mode), then ``after_step(b, epoch)``
    (e.g. an E-step); ``after_epoch(epoch, mean_loss)`` at each epoch's end. Returns the mean loss per epoch."""
    from tqdm import tqdm

    history = []
    for epoch in tqdm(range(n_epochs), desc=desc, leave=False, disable=not progress):
        total, seen = 0.0, 0
        for b in batches():
            loss = loss_fn(b, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            seen += len(b)
            if after_step is not None:
                after_step(b, epoch)
        history.append(total / max(seen, 1))
        if after_epoch is not None:
            after_epoch(epoch, history[-1])
    return history


class NetworkTrainer:
    """Trains a network on soft targets with per-example weights; predicts, embeds.

    Training minimizes sum_i w_i * CE(q_i, f(x_i)) / sum_i w_i with Adam, where q_i is a (possibly soft)
    target distribution, so a crowd posterior can be learned directly.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, network: str = "auto",
                 hidden: Sequence[int] = (128,), dropout: float = 0.2, epochs: int = 30, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 0.0, device: str = "auto", seed: int = 0,
                 min_steps: int = 0, backbone: Mapping | None = None, standardize: bool = True):
        self.input_shape, self.n_classes = tuple(input_shape), n_classes
        self.standardize = standardize
        self.min_steps = min_steps
        self.progress = False  # a tqdm bar over epochs (the campaign turns it on for interactive runs)
        self.network, self.hidden, self.dropout = network, tuple(hidden), dropout
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.device = pick_device(device)
        self.seed = seed
        self.backbone = dict(backbone) if backbone else None
        torch.manual_seed(seed)
        self.model = build_network(self.input_shape, n_classes, network, self.hidden, dropout,
                                   self.backbone).to(self.device)

    @classmethod
    def from_config(cls, input_shape: Sequence[int], n_classes: int, m, seed: int) -> NetworkTrainer:
        """The network and training settings of a ``model:`` config section (``robust_al.config.ModelConfig``)."""
        return cls(input_shape, n_classes, m.network, m.hidden, m.dropout, m.epochs, m.batch_size, m.lr,
                   m.weight_decay, m.device, seed=seed, min_steps=m.min_steps, backbone=m.backbone,
                   standardize=m.standardize)

    @property
    def _pretrained(self) -> bool:
        return bool(getattr(self.model, "pretrained", False))

    def set_input_statistics(self, X: np.ndarray) -> None:
        """Standardize inputs with the mean/std of ``X`` (the whole unlabeled pool: no labels involved); a
        pretrained trunk keeps the statistics it was trained with, and ``standardize=False`` keeps the identity."""
        if self.standardize and not self._pretrained:
            self.model.standardize.fit(X)

    def state_dict(self) -> dict:
        """The network's weights; a pretrained trunk's are left out (they are the weights file's, never
        trained, and would add ~45 MB per stored checkpoint for a ResNet18)."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                if not (self._pretrained and k.startswith("features."))}

    def load_state_dict(self, state: dict) -> None:
        if not self._pretrained:
            self.model.load_state_dict(state)
            return
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("features.") for k in missing):
            raise ValueError(f"checkpoint does not fit the network: missing {missing[:3]}, unexpected {unexpected[:3]}")

    def snapshot(self, label: str = "") -> Snapshot:
        """The current weights as an immutable value (:class:`robust_al.crowd.learner.Snapshot`), the trunk's
        left out as in :meth:`state_dict`."""
        from robust_al.crowd.learner import Snapshot

        return Snapshot.of({k: v for k, v in self.model.state_dict().items()
                            if not (self._pretrained and k.startswith("features."))}, label)

    def restore(self, snapshot: Snapshot) -> None:
        """Put ``snapshot``'s weights into the network (copied: the snapshot stays as it was)."""
        self.load_state_dict(dict(snapshot.weights))

    def reinitialize(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = build_network(self.input_shape, self.n_classes, self.network, self.hidden,
                                   self.dropout, self.backbone).to(self.device)

    def fit(self, X: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None, seed: int = 0,
            epochs: int | None = None) -> list[float]:
        """Train on X with ``targets`` (n, C) probabilities or (n,) class ids; returns the loss per epoch.

        Runs ``epochs`` epochs, and more if needed to make at least ``min_steps`` gradient steps: an active
        learner's first labeled sets are tiny, and 30 epochs of 50 items is only 30 steps."""
        trained: nn.Module = self.model
        if isinstance(self.model, FrozenFeatureNet):
            # only the head learns: its fixed inputs are computed once per fit, not once per epoch (the same
            # model, 4.3x faster on 4500 CIFAR images)
            X_t = torch.as_tensor(penultimate(self.model, X), device=self.device)
            trained = self.model.head
        else:
            X_t = torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device)
        T = np.asarray(targets)
        if T.ndim == 1:
            T = np.eye(self.n_classes, dtype=np.float32)[T]
        T_t = torch.as_tensor(T.astype(np.float32), device=self.device)
        w = np.ones(len(X), np.float32) if weights is None else np.asarray(weights, np.float32)
        W_t = torch.as_tensor(w, device=self.device)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=self.lr,
                               weight_decay=self.weight_decay)
        self.model.train()
        torch.manual_seed(seed)  # dropout masks
        n_epochs = (epochs_for(len(X_t), self.batch_size, self.epochs if epochs is None else epochs, self.min_steps)
                    if len(X_t) else 0)

        def loss(b, _epoch):
            logp = torch.log_softmax(trained(X_t[b]), dim=1)
            return -(W_t[b] * (T_t[b] * logp).sum(1)).sum() / W_t[b].sum().clamp_min(1e-8)

        history = train_minibatches(opt, n_epochs, shuffled_batches(len(X_t), self.batch_size, gen, self.device),
                                    loss, progress=self.progress)
        self.model.eval()
        return history

    @torch.no_grad()
    def _batched(self, X: np.ndarray, fn, batch: int = 4096) -> np.ndarray:
        self.model.eval()
        outs = []
        for s in range(0, len(X), batch):
            xb = torch.as_tensor(np.asarray(X[s:s + batch], dtype=np.float32), device=self.device)
            outs.append(fn(xb).cpu().numpy())
        if not outs:
            return np.zeros((0, self.n_classes), np.float32)
        return np.concatenate(outs)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if isinstance(self.model, FrozenFeatureNet):  # the trunk's cached features, then the head
            self.model.eval()
            return self._batched(penultimate(self.model, X), lambda z: torch.softmax(self.model.head(z), dim=1))
        return self._batched(X, lambda x: torch.softmax(self.model(x), dim=1))

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Penultimate-layer features (the space the query strategy measures distances in)."""
        return penultimate(self.model, X)
