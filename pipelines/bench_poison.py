"""Benchmark (not a test): robust-al's batched feature collision against ART's ``FeatureCollisionAttack``.

Builds a Q3 campaign of ``--config`` (default configs/eval-cifar2-transfer.yaml: the frozen CIFAR-8 ResNet18,
needs ``pipelines/pretrain_backbone.py`` first), runs its iteration 0, and crafts poisons against that model
for the first target: all ``--n-base`` base images batched (robust_al.augment.poison.feature_collision), then
the first ``--n-art`` of them with ART's attack (one image after another, as ART runs them). Prints the seconds
of each, the time per image as a ratio (one run, same process: the machine is shared), and the relative
feature distance of the poisons to the target.

    python pipelines/bench_poison.py --out results/bench_poison

Writes the figures (and config, seed, versions) as JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robust_al.augment.poison import feature_collision, feature_distance
from robust_al.campaign import Campaign, versions
from robust_al.config import load_config


def art_collision(model: nn.Module, input_shape, n_classes: int, target_x: np.ndarray, base_X: np.ndarray,
                  watermark: float, learning_rate: float, similarity_coeff: float, max_iter: int) -> np.ndarray:
    from art.attacks.poisoning import FeatureCollisionAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=n_classes,
                            clip_values=(0.0, 1.0), channels_first=True, device_type="cpu")
    attack = FeatureCollisionAttack(clf, target_x[None], "features", learning_rate=learning_rate,
                                    similarity_coeff=similarity_coeff, max_iter=max_iter, watermark=watermark,
                                    verbose=False)
    return attack.poison(base_X)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/eval-cifar2-transfer.yaml")
    ap.add_argument("--n-base", type=int, default=50)
    ap.add_argument("--n-art", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench_poison")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, ["poison.enabled=true", f"seed={args.seed}"])
    with tempfile.TemporaryDirectory() as tmp:
        c = Campaign.create(cfg, Path(tmp) / "run", echo=None)
        c.load_state()
        c.iterate(0)
        p, T, model = cfg.poison, c.dataset.test, c.net.model
        target_class, base_class = c.poison_classes()
        ok = np.where((T.y == target_class) & (c.learner.predict(T.X) == target_class))[0]
        free = c.pool.ids[(~c.taken) & (c.pool.y == base_class)][:args.n_base]
        B, t = c.pool.X[c.pool.positions(free)], T.X[ok[0]]
        wm = p.watermarks[0]
        start = time.perf_counter()
        ours = feature_collision(model, c.pool.input_shape, c.pool.n_classes, t, B, wm, p.learning_rate,
                                 p.similarity_coeff, p.max_iter)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        art = art_collision(model, c.pool.input_shape, c.pool.n_classes, t, B[:args.n_art], wm, p.learning_rate,
                            p.similarity_coeff, p.max_iter)
        t_art = time.perf_counter() - start
        fig = {"batched_seconds": t_ours, "batched_images": len(B), "art_seconds": t_art, "art_images": len(art),
               "time_per_image_ratio": (t_ours / len(B)) / (t_art / len(art)),
               "distance_base": feature_distance(model, t, B),
               "distance_batched": feature_distance(model, t, ours),
               "distance_batched_first": feature_distance(model, t, ours[:len(art)]),
               "distance_art": feature_distance(model, t, art)}
    for k, v in fig.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_poison.json").write_text(json.dumps({"args": vars(args), "config": cfg.model_dump(mode="json"),
                                                        "versions": versions(), "figures": fig}, indent=1))


if __name__ == "__main__":
    main()
