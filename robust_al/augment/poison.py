"""Targeted clean-label poisoning (Shafahi et al. 2018, "Poison frogs"; the robust-active-learning paper, IV-B).

ART's ``FeatureCollisionAttack`` moves each base instance (a correctly labeled item of the base class) until its
penultimate-layer features collide with those of one target instance (of another class), under a similarity
penalty that keeps it looking like the base, plus a watermark (opacity 0.1-0.3) of the target. Labeled honestly
as the base class, the poisons teach the model that the target's region is the base class, so the target is
misclassified at test time while clean accuracy barely moves. Only attacks that succeed against a baseline
trained on all clean training items plus the poisons are kept (as the paper does).
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

import numpy as np
from torch import nn

if TYPE_CHECKING:
    from robust_al.crowd.network import ClassifierNet

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
                      max_iter: int, **kw) -> np.ndarray:
    """Poisons: :func:`collide`, then the watermark (:func:`watermarked`)."""
    return watermarked(collide(model, input_shape, target_x, base_X, learning_rate, similarity_coeff, max_iter,
                               **kw), target_x, watermark)


def collide(model: nn.Module, input_shape: tuple[int, ...], target_x: np.ndarray, base_X: np.ndarray,
            learning_rate: float, similarity_coeff: float, max_iter: int, feature_layer: str = "features",
            decay_coeff: float = 0.5, num_old_obj: int = 40, stopping_tol: float = 1e-10, batch_size: int = 64,
            epsilon: float | None = None) -> np.ndarray:
    """Poisons from ``base_X`` whose penultimate features (``feature_layer``, a top-level child of ``model``)
    collide with ``target_x``'s: Shafahi et al. 2018, Algorithm 1 (forward-backward splitting), step for step
    as ART's ``FeatureCollisionAttack`` takes it, for all base images at once.

    Forward step: x <- x - lr * grad_x ||f(x) - f(t)||_2. Backward (proximal) step:
    x <- clip((x + lr * beta * b) / (1 + beta * lr)), beta = similarity_coeff * (dim f / dim x)^2.
    Objective ||f(x) - f(t)|| + beta ||x - b||; every ``num_old_obj`` steps a step that does not lower it under
    the mean of the last ``num_old_obj`` objectives is refused and lr halves. Returned before the watermark
    (and so not yet clipped: a refused step keeps its forward step, as ART's does).

    Why not ART's class (kept as the reference in ``tests/test_poisoning.py``): it runs the base images one
    after another, each step three single-image forward passes and one backward; 5 bases x 120 steps through
    the frozen ResNet18 of configs/eval-cifar2-transfer.yaml took 23.8 s on one core, so one poison set of 50
    was ~4 min and a campaign tries up to 9. Batched, 50 images took 25.8 s, against 37.3 s for 8 with ART in
    the same run (``pipelines/bench_poison.py``: 0.11x the time per image; relative feature distance to the
    target 0.205 vs ART's 0.197 on those 8, from 1.06 at the base images). ``epsilon``: the backward step also
    projects onto the L-inf ball of that radius around the base (Schwarzschild et al. 2021 bound every attack
    of their benchmark by 8/255; Shafahi et al. and ART do not bound it). One deliberate difference: ART
    keeps the learning rate it halved on one base image for all later ones (state on the attack object), so
    late poisons move less than early ones; here each base image has its own, as if ART were run once per image
    (the reference test compares with exactly that). The model's weights are not changed."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    layer = getattr(model, feature_layer)
    grabbed: dict[str, Any] = {}  # the feature layer's output of the last forward pass
    hook = layer.register_forward_hook(lambda m, i, o: grabbed.__setitem__("f", o))

    def feats(x: np.ndarray, grad: bool = False):
        t = torch.as_tensor(x, dtype=torch.float32, device=device).requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            model(t)
        return t, grabbed["f"].flatten(1)

    try:
        _, f_t = feats(target_x[None])
        f_t = f_t.detach()
        out = [_collide(feats, f_t, np.asarray(base_X[s:s + batch_size], np.float32), learning_rate,
                        similarity_coeff, max_iter, decay_coeff, num_old_obj, stopping_tol, epsilon)
               for s in range(0, len(base_X), batch_size)]
    finally:
        hook.remove()
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, *input_shape), np.float32)


def bullseye_polytope(model: nn.Module, input_shape: tuple[int, ...], target_x: np.ndarray, base_X: np.ndarray,
                      epsilon: float, learning_rate: float = 0.04, max_iter: int = 400,
                      feature_layer: str = "features") -> np.ndarray:
    """Poisons whose *mean* feature is the target's (Aghakhani et al. 2021, "Bullseye Polytope", eq. 3 with the
    uniform coefficients of their single-model 'bullseye' variant), each within an L-inf ball of its base image:

        min_{x_1..x_k}  || (1/k) sum_j phi(x_j) - phi(t) ||_2 / || phi(t) ||_2
        s.t.  || x_j - b_j ||_inf <= epsilon,  x_j in [0, 1]

    Adam (betas 0.9, 0.999) on all poisons at once, each step projected back onto the box, as ART's
    ``BullseyePolytopeAttackPyTorch`` steps. The target sits at the centre of the poisons' polytope instead of
    under a clump of collided points, so the poisons themselves stay spread near their bases.

    Why not ART's class: in ART 1.20.1 it takes the features it pulls the poisons to from the base images it is
    given, never from its ``target`` (``poison()`` calls ``get_activations(x, ...)``): measured on a small
    network (64 -> 32 ReLU features, 10 bases, epsilon 0.1), the relative distance of the poisons' mean feature
    to the target went 0.447 -> 0.448 in 200 steps; here, same steps and bound, 0.447 -> 0.196. The model's
    weights are not changed."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    trainable = [prm.requires_grad for prm in model.parameters()]
    for prm in model.parameters():  # no gradient is kept for the weights
        prm.requires_grad_(False)
    layer = getattr(model, feature_layer)
    grabbed: dict[str, Any] = {}
    hook = layer.register_forward_hook(lambda m, i, o: grabbed.__setitem__("f", o))
    base = torch.as_tensor(np.asarray(base_X, np.float32), device=device)
    try:
        with torch.no_grad():
            model(torch.as_tensor(target_x[None], dtype=torch.float32, device=device))
            f_t = grabbed["f"].flatten(1)[0].detach()
        x = base.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=learning_rate, betas=(0.9, 0.999))
        for _ in range(max_iter):
            opt.zero_grad()
            model(x)
            loss = torch.linalg.vector_norm(grabbed["f"].flatten(1).mean(0) - f_t) / torch.linalg.vector_norm(f_t)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(torch.clamp(base + torch.clamp(x - base, -epsilon, epsilon), 0.0, 1.0))
    finally:
        hook.remove()
        for prm, flag in zip(model.parameters(), trainable):
            prm.requires_grad_(flag)
        model.train(was_training)
    return x.detach().cpu().numpy().reshape((len(base_X), *input_shape)).astype(np.float32)


def gradient_matching(model: nn.Module, input_shape: tuple[int, ...], n_classes: int, target_x: np.ndarray,
                      base_X: np.ndarray, base_class: int, epsilon: float, max_epochs: int = 250,
                      restarts: int = 1) -> np.ndarray:
    """Witches' Brew (Geiping et al. 2021, "Witches' Brew: Industrial Scale Data Poisoning via Gradient
    Matching"), through ART's ``GradientMatchingAttack``: perturbations Delta of the base images (labeled, as
    honest labelers would, as the base class y_b) whose training gradient points where the gradient of the
    adversarial loss on the target does (their eq. 3):

        min_Delta  1 - < grad_theta L(F(t), y_b), sum_j grad_theta L(F(b_j + Delta_j), y_b) >
                       / ( ||grad_theta L(F(t), y_b)|| ||sum_j grad_theta L(F(b_j + Delta_j), y_b)|| )
        s.t.  ||Delta_j||_inf <= epsilon,  b_j + Delta_j in [0, 1]

    (signed Adam on tanh-bounded noise, ART's learning-rate schedule scaled to ``max_epochs``; ``restarts``
    = ART's ``max_trials``, the best alignment kept). theta = the parameters training changes: ART
    differentiates every parameter of the module it is given, and a frozen trunk's weights have no gradient,
    so it is given a view that registers only the trainable ones. Draws from the global generators (the
    caller seeds them). The model's weights are not changed."""
    import torch
    from art.attacks.poisoning import GradientMatchingAttack
    from art.estimators.classification import PyTorchClassifier

    class _Trainable(nn.Module):
        net: nn.Module

        def __init__(self, net: nn.Module):
            super().__init__()
            self.theta = nn.ParameterList([prm for prm in net.parameters() if prm.requires_grad])
            object.__setattr__(self, "net", net)  # not a submodule: its frozen weights stay out of theta

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    was_training = model.training
    model.eval()  # dropout off while matching, as ART intends (it calls eval() on what it is given)
    dev = next(model.parameters()).device
    clf = PyTorchClassifier(model=_Trainable(model), loss=nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
                            nb_classes=int(n_classes), clip_values=(0.0, 1.0),
                            device_type="gpu" if dev.type == "cuda" else "cpu")
    milestones = [max(1, round(max_epochs * f)) for f in (0.4, 0.6, 0.8, 0.88)]  # ART's 100/150/200/220 of 250
    attack = GradientMatchingAttack(clf, percent_poison=1.0, epsilon=epsilon, max_trials=restarts,
                                    max_epochs=max_epochs, learning_rate_schedule=([1e-1, 1e-2, 1e-3, 1e-4],
                                                                                   milestones),
                                    batch_size=max(1, len(base_X)), clip_values=(0.0, 1.0), verbose=0)
    base = np.asarray(base_X, np.float32)
    try:  # ART always draws a progress bar over its trials: kept out of the campaign's log
        with contextlib.redirect_stderr(io.StringIO()):
            P, _ = attack.poison(target_x[None].astype(np.float32), np.array([base_class]), base,
                                 np.full(len(base), base_class, dtype=np.int64))
    finally:
        model.train(was_training)
    # the tanh bound keeps |Delta| < epsilon; clip for float rounding only
    return np.clip(np.clip(P, base - epsilon, base + epsilon), 0.0, 1.0).astype(np.float32)


def watermarked(P: np.ndarray, target_x: np.ndarray, watermark: float) -> np.ndarray:
    """The last step of :func:`feature_collision` (ART's too): x + watermark * t, clipped to [0, 1]. The collision
    before it does not depend on the watermark, so one collision serves every watermark tried."""
    return np.clip(P + (watermark * target_x[None] if watermark else 0.0), 0.0, 1.0).astype(np.float32)


def _collide(feats, f_t, base: np.ndarray, lr0: float, similarity_coeff: float, max_iter: int, decay: float,
             m: int, tol: float, epsilon: float | None = None) -> np.ndarray:
    """One batch of :func:`feature_collision` (before the watermark); each row keeps its own step size, history
    and stopping, exactly as ART's loop body for one image (including its in-place forward step, which a refused
    step keeps: ART throws out only the proximal step)."""
    import torch

    n = len(base)
    flat = lambda a: a.reshape(len(a), -1)
    beta = similarity_coeff * (f_t.shape[1] / base[0].size) ** 2

    def objective(f, x, rows):
        d = torch.linalg.vector_norm(f - f_t, dim=1).detach().cpu().numpy().astype(np.float64)
        return d + beta * np.linalg.norm(flat(x - base[rows]), axis=1)

    old = base.copy()
    lr = np.full(n, float(lr0))
    _, f0 = feats(old)
    old_obj = objective(f0, old, np.arange(n))
    history = [[o] for o in old_obj]
    active = np.ones(n, dtype=bool)
    for i in range(max_iter):
        rows = np.where(active)[0]
        if len(rows) == 0:
            break
        x_t, f = feats(old[rows], grad=True)
        torch.linalg.vector_norm(f - f_t, dim=1).sum().backward()  # rows are independent (eval mode)
        shape = (-1,) + (1,) * (base.ndim - 1)
        old[rows] -= lr[rows].astype(np.float32).reshape(shape) * x_t.grad.cpu().numpy()
        step = (lr[rows] * beta).astype(np.float32).reshape(shape)
        new = np.clip((old[rows] + step * base[rows]) / (1 + step), 0.0, 1.0).astype(np.float32)
        if epsilon is not None:
            new = np.clip(new, base[rows] - epsilon, base[rows] + epsilon)
        change = np.linalg.norm(flat(new - old[rows]), axis=1) / np.maximum(np.linalg.norm(flat(new), axis=1), 1e-30)
        done = change < tol
        active[rows[done]] = False
        rows, new = rows[~done], new[~done]
        if len(rows) == 0:
            continue
        _, f_new = feats(new)
        new_obj = objective(f_new, new, rows)
        for k, r in enumerate(rows):
            avg = sum(history[r]) / float(min(m, i + 1))
            if new_obj[k] >= avg and i % m == 0:
                lr[r] *= decay
            else:
                old[r], old_obj[r] = new[k], new_obj[k]
            if i >= m - 1:
                del history[r][0]
            history[r].append(new_obj[k])
    return old


def feature_distance(model: ClassifierNet, target_x: np.ndarray, X: np.ndarray, of_mean: bool = False) -> float:
    """Mean L2 distance of X's penultimate features to the target's, relative to the target's norm; ``of_mean``:
    the distance of X's mean feature instead (what Bullseye Polytope brings to the target)."""
    from robust_al.crowd.network import penultimate

    t, p = penultimate(model, target_x[None]), penultimate(model, X)
    if of_mean:
        p = p.mean(0, keepdims=True)
    return float(np.linalg.norm(p - t, axis=1).mean()) / max(float(np.linalg.norm(t)), 1e-8)


def craft_verified(model: ClassifierNet, input_shape: tuple[int, ...], n_classes: int,
                   targets: list[tuple[np.ndarray, int]], base_X: np.ndarray, base_ids: np.ndarray,
                   base_class: int, watermarks: list[float], learning_rate: float, similarity_coeff: float,
                   max_iter: int, verify: Callable[[np.ndarray, np.ndarray, np.ndarray], bool] | None,
                   attack: str = "feature-collision", epsilon: float = 8 / 255, bound_collision: bool = False
                   ) -> PoisonSet | None:
    """Try targets in order and watermarks from the smallest; return the first poison set that ``verify``
    accepts (``verify(poisons_X, poisons_y, target_x)`` = the attack succeeds against a baseline trained on
    all training items plus the poisons), or None. Without ``verify`` the first crafted set is returned.

    ``attack``: "feature-collision" (:func:`collide`, then each watermark), "bullseye-polytope"
    (:func:`bullseye_polytope` within ``epsilon`` of the bases, its own ``learning_rate``) or "gradient-matching"
    (:func:`gradient_matching` within ``epsilon``, ``max_iter`` epochs); these two add no watermark (0).
    ``bound_collision``: feature collision's poisons too stay within ``epsilon`` of their bases (the watermark
    included)."""
    tried = []
    if attack != "feature-collision":
        watermarks = [0.0]
    for rank, (target_x, target_class) in enumerate(targets):
        collided = None
        for wm in watermarks:
            if attack == "bullseye-polytope":
                P = bullseye_polytope(model, input_shape, target_x, base_X, epsilon, learning_rate, max_iter)
            elif attack == "gradient-matching":
                P = gradient_matching(model, input_shape, n_classes, target_x, base_X, base_class, epsilon, max_iter)
            else:
                if collided is None:  # once per target: the watermark is added after the collision
                    collided = collide(model, input_shape, target_x, base_X, learning_rate, similarity_coeff,
                                       max_iter, epsilon=epsilon if bound_collision else None)
                P = watermarked(collided, target_x, wm)
                if bound_collision:  # a refused step keeps its forward step (ART's), and the watermark adds more
                    P = np.clip(P, base_X - epsilon, base_X + epsilon)
            y = np.full(len(P), base_class, dtype=np.int64)
            # what each attack brings to the target: every poison's feature, or (Bullseye) their mean
            d = feature_distance(model, target_x, P, of_mean=attack == "bullseye-polytope")
            ok = verify is None or verify(P, y, target_x)
            tried.append({"watermark": wm, "target_class": target_class, "feature_distance": d, "success": ok})
            log.info("%s: watermark %.2f, relative feature distance %.3f, success %s", attack, wm, d, ok)
            if ok:
                return PoisonSet(P, y, target_x, target_class, base_class, wm, base_ids, rank,
                                 {"tried": tried, "attack": attack, "learning_rate": learning_rate,
                                  "similarity_coeff": similarity_coeff, "max_iter": max_iter,
                                  "linf_to_base": float(np.abs(P - base_X).max())})
    log.info("no poison set succeeded against the baseline (%d tried)", len(tried))
    return None
