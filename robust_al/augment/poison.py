"""Targeted clean-label poisoning (Shafahi et al. 2018, "Poison frogs"; the robust-active-learning paper, IV-B).

ART's ``FeatureCollisionAttack`` moves each base instance (a correctly labeled item of the base class) until its
penultimate-layer features collide with those of one target instance (of another class), under a similarity
penalty that keeps it looking like the base, plus a watermark (opacity 0.1-0.3) of the target. Labeled honestly
as the base class, the poisons teach the model that the target's region is the base class, so the target is
misclassified at test time while clean accuracy barely moves. Only attacks that succeed against a baseline
trained on all clean training items plus the poisons are kept (as the paper does).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class PoisonSet:
    """Poisons crafted against one target instance; ``y`` is the base class (what honest labelers answer)."""

    X: np.ndarray
    y: np.ndarray
    target_x: np.ndarray
    target_class: int
    base_class: int
    watermark: float
    base_ids: np.ndarray
    target_rank: int = 0  # position of the target in the list craft_verified was given
    info: dict = field(default_factory=dict)


def feature_collision(model: nn.Module, input_shape: tuple[int, ...], n_classes: int, target_x: np.ndarray,
                      base_X: np.ndarray, watermark: float, learning_rate: float, similarity_coeff: float,
                      max_iter: int, feature_layer: str = "features") -> np.ndarray:
    """Poisons from ``base_X`` whose ``feature_layer`` output collides with ``target_x``'s (ART).

    ``feature_layer`` is a top-level child of ``model`` (ART looks layers up by name among the children); in
    robust-al networks ``features`` is the penultimate layer. The model's weights are not changed.
    """
    from art.attacks.poisoning import FeatureCollisionAttack
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=n_classes,
                            clip_values=(0.0, 1.0), channels_first=True,
                            device_type="gpu" if device.type == "cuda" else "cpu")
    was_training = model.training
    model.eval()
    attack = FeatureCollisionAttack(clf, target_x[None].astype(np.float32), feature_layer,
                                    learning_rate=learning_rate, similarity_coeff=similarity_coeff,
                                    max_iter=max_iter, watermark=watermark, verbose=False)
    poisons, _ = attack.poison(base_X.astype(np.float32))
    model.train(was_training)
    return np.clip(poisons, 0.0, 1.0).astype(np.float32)


def feature_distance(model: nn.Module, target_x: np.ndarray, X: np.ndarray) -> float:
    """Mean L2 distance of X's penultimate features to the target's, relative to the target's norm."""
    from robust_al.crowd.network import penultimate

    t, p = penultimate(model, target_x[None]), penultimate(model, X)
    return float(np.linalg.norm(p - t, axis=1).mean() / max(np.linalg.norm(t), 1e-8))


def craft_verified(model: nn.Module, input_shape: tuple[int, ...], n_classes: int,
                   targets: list[tuple[np.ndarray, int]], base_X: np.ndarray, base_ids: np.ndarray,
                   base_class: int, watermarks: list[float], learning_rate: float, similarity_coeff: float,
                   max_iter: int, verify: Callable[[np.ndarray, np.ndarray, np.ndarray], bool] | None,
                   ) -> PoisonSet | None:
    """Try targets in order and watermarks from the smallest; return the first poison set that ``verify``
    accepts (``verify(poisons_X, poisons_y, target_x)`` = the attack succeeds against a baseline trained on
    all training items plus the poisons), or None. Without ``verify`` the first crafted set is returned."""
    tried = []
    for rank, (target_x, target_class) in enumerate(targets):
        for wm in watermarks:
            P = feature_collision(model, input_shape, n_classes, target_x, base_X, wm, learning_rate,
                                  similarity_coeff, max_iter)
            y = np.full(len(P), base_class, dtype=np.int64)
            d = feature_distance(model, target_x, P)
            ok = verify is None or verify(P, y, target_x)
            tried.append({"watermark": wm, "target_class": target_class, "feature_distance": d, "success": ok})
            log.info("feature collision: watermark %.2f, relative feature distance %.3f, success %s", wm, d, ok)
            if ok:
                return PoisonSet(P, y, target_x, target_class, base_class, wm, base_ids, rank,
                                 {"tried": tried, "learning_rate": learning_rate,
                                  "similarity_coeff": similarity_coeff, "max_iter": max_iter,
                                  "linf_to_base": float(np.abs(P - base_X).max())})
    log.info("no poison set succeeded against the baseline (%d tried)", len(tried))
    return None
