"""Artificial data at no labeling cost (section III-D): ART adversarial examples and Gaussian noise.

Each adversarial example is labeled with its item's current estimated label and added to training; the size
of the perturbation that flipped the model, ||x_adv - x||_2, is the item's vulnerability (inf when the
attack failed to flip the prediction).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

ATTACKS = ("deepfool", "cw", "pgd", "bim")


@dataclass
class Augmented:
    item_ids: np.ndarray
    X: np.ndarray
    norms: np.ndarray  # L2 perturbation; inf = the attack did not flip the prediction; nan = noise
    method: str


class Augmenter:
    """Builds the ART classifier and attack objects once, on the live ``model`` (no copy is made, so the
    attacks always see the current weights)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], n_classes: int,
                 attacks: Sequence[str] = ("deepfool",), eps: float = 0.3, noise_scale: float = 0.05,
                 noise_copies: int = 1, batch_size: int = 256, cw_max_iter: int = 20, deepfool_max_iter: int = 100):
        from art.attacks.evasion import (BasicIterativeMethod, CarliniL2Method, DeepFool,
                                         ProjectedGradientDescent)
        from art.estimators.classification import PyTorchClassifier

        bad = [a for a in attacks if a not in ATTACKS]
        if bad:
            raise ValueError(f"augment.attacks: unknown attack {bad[0]!r}; expected some of {list(ATTACKS)}")
        self.model = model
        device = next(model.parameters()).device
        self.clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=input_shape,
                                     nb_classes=n_classes, clip_values=(0.0, 1.0), channels_first=True,
                                     device_type="gpu" if device.type == "cuda" else "cpu")
        self.n_classes = n_classes
        self.noise_scale, self.noise_copies = noise_scale, noise_copies
        self.progress = False
        makers = {
            # epsilon = overshoot; ART's default 1e-6 often lands exactly on the boundary without flipping
            "deepfool": lambda: DeepFool(self.clf, max_iter=deepfool_max_iter, epsilon=0.02,
                                         nb_grads=min(n_classes, 10), batch_size=batch_size, verbose=False),
            "cw": lambda: CarliniL2Method(self.clf, max_iter=cw_max_iter, batch_size=batch_size, verbose=False),
            "pgd": lambda: ProjectedGradientDescent(self.clf, norm=2, eps=eps, eps_step=eps / 4, max_iter=10,
                                                    num_random_init=1, batch_size=batch_size, verbose=False),
            "bim": lambda: BasicIterativeMethod(self.clf, eps=eps / 10, eps_step=eps / 40, max_iter=10,
                                                batch_size=batch_size, verbose=False),
        }
        self.attacks = {name: makers[name]() for name in attacks}

    def _restore(self) -> None:
        # ART leaves the model in eval() and its .grad overwritten (NOTES.md)
        self.model.zero_grad(set_to_none=True)
        self.model.eval()

    def adversarial(self, item_ids: np.ndarray, X: np.ndarray, labels: np.ndarray) -> list[Augmented]:
        """One adversarial example per item and attack, against ``labels`` (the estimated labels)."""
        out: list[Augmented] = []
        if len(X) == 0:
            return out
        X = np.asarray(X, dtype=np.float32)
        y = np.eye(self.n_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
        for name, attack in self.attacks.items():
            attack.set_params(verbose=self.progress)
            X_adv = attack.generate(X, y=y).astype(np.float32)
            self._restore()
            with torch.no_grad():
                pred = self.clf.predict(X_adv).argmax(1)
            flat = (X_adv - X).reshape(len(X), -1)
            norms = np.linalg.norm(flat, axis=1)
            norms[pred == labels] = np.inf  # the attack did not flip it
            out.append(Augmented(np.asarray(item_ids), X_adv, norms, name))
        return out

    def noise(self, item_ids: np.ndarray, X: np.ndarray, rng: np.random.Generator) -> list[Augmented]:
        """``noise_copies`` Gaussian copies per item (sigma = noise_scale), clipped to [0, 1]."""
        out = []
        for k in range(self.noise_copies if self.noise_scale > 0 else 0):
            Xn = np.clip(X + rng.normal(0.0, self.noise_scale, X.shape), 0.0, 1.0).astype(np.float32)
            out.append(Augmented(np.asarray(item_ids), Xn, np.full(len(X), np.nan), f"noise{k}"))
        return out
