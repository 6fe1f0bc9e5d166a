"""Adversarial robustness of crowd learners (white-box and black-box transfer) and confusion-matrix recovery.

Attacks (all L-inf budgets ``eps`` on inputs in [0, 1], untargeted, crafted against the TRUE labels ``y`` so
that a clean mistake cannot be "repaired" by the attack; ART 1.20):

* ``fgsm``: ``FastGradientMethod(norm=inf, eps)``.
* ``pgd``: ``ProjectedGradientDescent(norm=inf, eps, eps_step=eps/4, max_iter=10, num_random_init=1)``.
* ``mim``: ``MomentumIterativeMethod(norm=inf, eps, eps_step=eps/4, max_iter=10, decay=1)`` (no random start).
* ``cw``: **C&W-L2 projected to the eps ball.** ``CarliniL2Method`` (:data:`CW_PARAMS`: 10 iterations, 5 binary-
  search steps) finds a small *L2* perturbation, which is then clipped coordinate-wise to ``[-eps, eps]`` (and to
  [0, 1]). This is not the C&W-L-inf attack: ART's ``CarliniLInfMethod`` took 76 s per 100 LabelMe test items
  (512-d MLP, only 10 iterations, 1 torch thread on this shared 2-core CPU), i.e. ~15 min per model for the
  1188-item test split, against 10-12 s per 1188 items for ``CarliniL2Method`` at batch 500 (measured the same
  way; 10 binary-search steps double that; with 2 torch threads on the loaded box it took 95 s). The
  C&W-L2 run does not depend on ``eps``, so :func:`robustness_table` runs it once per model and projects it onto
  every eps of the grid. Projection discards most of an L2-minimal perturbation (on LabelMe its median L-inf size
  is ~0.09), so this attack is much weaker than PGD at the same eps; the unprojected C&W-L2 accuracy is
  reported separately as attack ``cw-unbounded`` (eps = inf).
* ``cw-margin`` (extra, not ART): PGD-10 (random start, step eps/4) on the C&W margin loss
  ``max_{j != y} z_j - z_y`` in the L-inf ball — the "CW-inf" of the adversarial-training literature.

``eps = 0`` returns the inputs unchanged for every attack (the ball is a point), so it gives the clean accuracy.
Every attack runs under a fixed seed (numpy and torch global generators are seeded and restored afterwards).
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from robust_al.reproducible import seeded

ATTACKS = ("fgsm", "pgd", "cw", "mim")
ALL_ATTACKS = (*ATTACKS, "cw-margin")
EPS_GRID = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03)
CW_PARAMS = {"max_iter": 10, "binary_search_steps": 5, "learning_rate": 0.01, "initial_const": 0.01, "confidence": 0.0}
CW_BATCH = 500  # ART's C&W-L2 is numpy-bound per batch: larger batches are ~2x faster than 64


# ------------------------------------------------------------------------------------------------------------
# plumbing
# ------------------------------------------------------------------------------------------------------------
def _module(obj: Any) -> nn.Module:
    """The torch module of a learner (``.model``) or the module itself."""
    if isinstance(obj, nn.Module):
        return obj
    model = getattr(obj, "model", None)
    if isinstance(model, nn.Module):
        return model
    raise TypeError(f"expected a torch nn.Module or a fitted learner with .model, got {type(obj).__name__}")


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@torch.no_grad()
def _logits(model: nn.Module, X: np.ndarray, batch: int = 4096) -> np.ndarray:
    was = model.training
    model.eval()
    dev = _device(model)
    out = [model(torch.as_tensor(X[s:s + batch], device=dev)).cpu().numpy() for s in range(0, len(X), batch)]
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _predict(obj: Any, X: np.ndarray) -> np.ndarray:
    if hasattr(obj, "predict") and not isinstance(obj, nn.Module):
        return np.asarray(obj.predict(X))
    return _logits(_module(obj), X).argmax(axis=1)


def _n_classes(obj: Any, X: np.ndarray) -> int:
    n = getattr(obj, "n_classes", None)
    return int(n) if n is not None else int(_logits(_module(obj), X[:1]).shape[1])


def _check(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.ascontiguousarray(X, dtype=np.float32)  # ART's PyTorch attacks crash on float64
    y = np.asarray(y, dtype=np.int64)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if (y < 0).any():
        raise ValueError("y holds unknown (-1) labels: evaluate on items with ground truth only")
    if X.size and (X.min() < 0 or X.max() > 1):
        raise ValueError(f"inputs must lie in [0, 1], got [{X.min():.3g}, {X.max():.3g}]")
    return X, y


def art_classifier(model: nn.Module, input_shape: Sequence[int], n_classes: int):
    """ART ``PyTorchClassifier`` around the live module (no copy), inputs clipped to (0, 1), on the model's device.

    ART leaves the module in ``eval()`` after an attack and overwrites parameter ``.grad``.
    """
    from art.estimators.classification import PyTorchClassifier

    model = _module(model)
    dev = _device(model)
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
                             nb_classes=int(n_classes), clip_values=(0.0, 1.0), channels_first=True,
                             device_type="gpu" if dev.type == "cuda" else "cpu")


def project_linf(x_adv: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    """Nearest point of the L-inf ``eps``-ball around ``x`` intersected with [0, 1] (coordinate-wise clip)."""
    return np.clip(x + np.clip(x_adv - x, -eps, eps), 0.0, 1.0).astype(np.float32)


def _cw_l2(clf, X: np.ndarray, y: np.ndarray, cw_params: Mapping | None, batch_size: int) -> np.ndarray:
    from art.attacks.evasion import CarliniL2Method

    params = dict(CW_PARAMS, **(cw_params or {}))
    attack = CarliniL2Method(clf, batch_size=max(batch_size, CW_BATCH), verbose=False, **params)
    return attack.generate(X, y=y).astype(np.float32)


def _cw_margin(model: nn.Module, X: np.ndarray, y: np.ndarray, eps: float, batch_size: int, seed: int,
               steps: int = 10) -> np.ndarray:
    from robust_al.crowd.pgd import pgd

    dev = _device(model)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for s in range(0, len(X), batch_size):
        xb = torch.as_tensor(X[s:s + batch_size], device=dev)
        yb = torch.as_tensor(y[s:s + batch_size], device=dev)

        def margin(logits, yb=yb):
            z_y = logits.gather(1, yb[:, None])[:, 0]
            other = logits.scatter(1, yb[:, None], float("-inf")).max(dim=1).values
            return (other - z_y).sum()

        out.append(pgd(model, xb, margin, eps, steps=steps, generator=gen).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def _art_attack(clf, attack: str, eps: float, batch_size: int):
    from art.attacks.evasion import (
        FastGradientMethod,
        MomentumIterativeMethod,
        ProjectedGradientDescent,
    )

    if attack == "fgsm":
        return FastGradientMethod(clf, norm=np.inf, eps=eps, batch_size=batch_size)
    if attack == "pgd":
        return ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=10, num_random_init=1,
                                        batch_size=batch_size, verbose=False)
    if attack == "mim":
        return MomentumIterativeMethod(clf, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=10, decay=1.0,
                                       batch_size=batch_size, verbose=False)
    raise ValueError(f"unknown attack {attack!r}; expected one of {ALL_ATTACKS}")


def _craft_grid(obj: Any, X: np.ndarray, y: np.ndarray, attack: str, eps_grid: Sequence[float], batch_size: int,
                seed: int, cw_params: Mapping | None = None, unbounded_cw: bool = False
                ) -> Iterator[tuple[str, float, np.ndarray]]:
    """Yield ``(attack label, eps, X_adv)`` for every eps of the grid (C&W-L2 runs once and is projected)."""
    if attack not in ALL_ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; expected one of {ALL_ATTACKS}")
    model = _module(obj)
    was = model.training
    clf = art_classifier(model, X.shape[1:], _n_classes(obj, X))
    try:
        raw = None
        if attack == "cw" and (unbounded_cw or any(e > 0 for e in eps_grid)):
            with seeded(seed), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = _cw_l2(clf, X, y, cw_params, batch_size)
        for eps in eps_grid:
            eps = float(eps)
            if eps < 0:
                raise ValueError(f"eps must be >= 0, got {eps}")
            if eps == 0:
                yield attack, eps, X
            elif attack == "cw":
                yield attack, eps, project_linf(raw, X, eps)
            elif attack == "cw-margin":
                with seeded(seed):
                    x_adv = _cw_margin(model, X, y, eps, batch_size, seed)
                yield attack, eps, x_adv
            else:
                with seeded(seed), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    x_adv = _art_attack(clf, attack, eps, batch_size).generate(X, y=y).astype(np.float32)
                yield attack, eps, x_adv
        if attack == "cw" and unbounded_cw:
            yield "cw-unbounded", math.inf, raw
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)


def adversarial_examples(model: Any, X: np.ndarray, y: np.ndarray, attack: str, eps: float, batch_size: int = 256,
                         seed: int = 0, cw_params: Mapping | None = None) -> np.ndarray:
    """Adversarial versions of ``X`` against ``model`` (a learner or an nn.Module) for one attack and eps."""
    X, y = _check(X, y)
    return next(_craft_grid(model, X, y, attack, [eps], batch_size, seed, cw_params))[2]


# ------------------------------------------------------------------------------------------------------------
# accuracies
# ------------------------------------------------------------------------------------------------------------
def white_box_accuracy(learner: Any, X: np.ndarray, y: np.ndarray, attack: str, eps: float, batch_size: int = 256,
                       seed: int = 0, cw_params: Mapping | None = None) -> float:
    """Accuracy of ``learner`` on adversarial inputs crafted against its own model (white box).

    ``attack``: fgsm, pgd (10 steps of eps/4, one random start), mim (10 steps of eps/4, decay 1), cw
    (**C&W-L2 projected to the eps ball**, see the module docstring: ART's CarliniLInfMethod is ~15 min per model
    on LabelMe's test split on this CPU) or cw-margin (PGD on the C&W margin loss). ``eps = 0`` -> clean accuracy.
    """
    X, y = _check(X, y)
    x_adv = adversarial_examples(learner, X, y, attack, eps, batch_size, seed, cw_params)
    return float(np.mean(_predict(learner, x_adv) == y))


def black_box_accuracy(target: Any, substitute: Any, X: np.ndarray, y: np.ndarray, attack: str, eps: float,
                       batch_size: int = 256, seed: int = 0, cw_params: Mapping | None = None) -> float:
    """Transfer attack: craft on ``substitute`` (white box on it), evaluate ``target``'s accuracy."""
    X, y = _check(X, y)
    x_adv = adversarial_examples(substitute, X, y, attack, eps, batch_size, seed, cw_params)
    return float(np.mean(_predict(target, x_adv) == y))


def train_substitute(X: np.ndarray, annotations: pd.DataFrame, item_ids: np.ndarray | None, n_classes: int,
                     seed: int = 0, epochs: int = 100, **kw):
    """The black-box attacker's model, as in A-LFC: majority-vote labels, an MLP with ONE hidden layer of 32 units
    (other settings as the learners': ReLU, dropout 0.5, Adam 1e-3, batch 64)."""
    from robust_al.crowd.learners import make_learner

    X = np.asarray(X, dtype=np.float32)
    return make_learner("mv", n_classes, X.shape[1:], hidden=(32,), epochs=epochs, seed=seed, **kw).fit(
        X, annotations, item_ids)


def robustness_table(learners: Mapping[str, Any], X: np.ndarray, y: np.ndarray,
                     attacks: Sequence[str] = ATTACKS, eps_grid: Sequence[float] = EPS_GRID,
                     substitute: Any | None = None, seed: int = 0, batch_size: int = 256,
                     cw_params: Mapping | None = None, unbounded_cw: bool = True) -> pd.DataFrame:
    """Clean, white-box and (with a ``substitute``) black-box accuracies of fitted ``learners`` (name -> learner).

    Returns a tidy DataFrame with columns learner, seed, setting (clean / white / black), attack, eps, accuracy.
    Clean rows have setting = attack = 'clean' and eps = 0 (one per learner, plus one for ``'substitute'``).
    Black-box inputs are crafted once per (attack, eps) on the substitute and shared by all learners. With
    ``unbounded_cw`` the unprojected C&W-L2 accuracy is added as attack 'cw-unbounded', eps = inf.
    ``seed`` names the run in the table and seeds every attack (the same attack/eps always uses the same seed, so a
    cell equals the matching :func:`white_box_accuracy` call). ``df.attrs['craft_seconds']`` holds the time spent
    crafting per (setting, model, attack) over the whole eps grid.
    """
    X, y = _check(X, y)
    rows: list[dict] = []
    seconds: dict[str, float] = {}

    def add(name, setting, attack, eps, acc):
        rows.append({"learner": name, "seed": seed, "setting": setting, "attack": attack, "eps": float(eps),
                     "accuracy": float(acc)})

    for name, learner in learners.items():
        add(name, "clean", "clean", 0.0, np.mean(_predict(learner, X) == y))
    if substitute is not None:
        add("substitute", "clean", "clean", 0.0, np.mean(_predict(substitute, X) == y))

    for attack in attacks:
        for name, learner in learners.items():
            t = time.perf_counter()
            for label, eps, x_adv in _craft_grid(learner, X, y, attack, eps_grid, batch_size, seed, cw_params,
                                                 unbounded_cw):
                add(name, "white", label, eps, np.mean(_predict(learner, x_adv) == y))
            seconds[f"white/{name}/{attack}"] = time.perf_counter() - t
        if substitute is not None:
            t = time.perf_counter()
            for label, eps, x_adv in _craft_grid(substitute, X, y, attack, eps_grid, batch_size, seed, cw_params,
                                                 unbounded_cw):
                for name, learner in learners.items():
                    add(name, "black", label, eps, np.mean(_predict(learner, x_adv) == y))
            seconds[f"black/substitute/{attack}"] = time.perf_counter() - t
    df = pd.DataFrame(rows, columns=["learner", "seed", "setting", "attack", "eps", "accuracy"])
    df.attrs["craft_seconds"] = seconds
    return df


# ------------------------------------------------------------------------------------------------------------
# confusion matrices
# ------------------------------------------------------------------------------------------------------------
def true_confusions(annotations: pd.DataFrame, truth: Mapping[Any, int], workers: Sequence[str], n_classes: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Empirical confusion matrices from ground truth: ``pi[w, k, l]`` = share of worker w's labels on items of true
    class k that are l (rows = true class). Items whose truth is missing or -1 are ignored.

    Returns ``(pi, counts)``: pi (W, C, C) with NaN rows where the worker labelled no item of that class, and
    counts (W, C, C) of the labels behind each cell. Workers are matched by ``str(name)`` (as the learners do).
    """
    df = annotations[["task", "worker", "label"]]
    t = df["task"].map(lambda i: truth.get(i, -1)).to_numpy(dtype=np.int64)
    w_of = {str(w): k for k, w in enumerate(workers)}
    wk = df["worker"].astype(str).map(w_of).to_numpy(dtype=float)
    lab = df["label"].to_numpy(dtype=np.int64)
    ok = (t >= 0) & (t < n_classes) & ~np.isnan(wk)
    counts = np.zeros((len(workers), n_classes, n_classes))
    np.add.at(counts, (wk[ok].astype(np.int64), t[ok], lab[ok]), 1.0)
    tot = counts.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pi = np.where(tot > 0, counts / tot, np.nan)
    return pi, counts


def confusion_recovery_error(learner: Any, annotations: pd.DataFrame, truth: Mapping[Any, int]
                             ) -> tuple[dict[str, float], float]:
    """Frobenius error ``||Pi_learned^(w) - Pi_true^(w)||_F`` per worker of ``learner.workers_``, and its mean
    weighted by each worker's number of labels on items with known truth.

    The true matrices are :func:`true_confusions`; rows of classes a worker never saw (NaN) are left out of the
    norm. Workers without any label on a truth-known item get NaN and weight 0.
    """
    workers = [str(w) for w in learner.workers_]
    learned = np.asarray(learner.confusion_matrices_, dtype=float)
    C = learned.shape[1]
    pi, counts = true_confusions(annotations, truth, workers, C)
    sq = np.where(np.isnan(pi), 0.0, (learned - np.nan_to_num(pi)) ** 2)
    n = counts.sum(axis=(1, 2))
    err = np.where(n > 0, np.sqrt(sq.sum(axis=(1, 2))), np.nan)
    per_worker = {w: float(e) for w, e in zip(workers, err)}
    mean = float(np.sum(np.nan_to_num(err) * n) / n.sum()) if n.sum() > 0 else float("nan")
    return per_worker, mean
