"""Benchmark of adversarial crowd learning: (a) epoch time of A-LFC / MALC vs plain neural EM (AggNet) on LabelMe
(or synthetic 512-d data of the same size when LabelMe is absent); (b) ART's ProjectedGradientDescent vs
robust_al.crowd.pgd.pgd on the same batch (64 and 1000 items, same eps / step / 10 steps, random start off for
both so the outputs can be compared; max abs difference reported).

Epoch time = (fit time with E epochs - fit time with 0 epochs) / E, median over --repeats, so the encoding and
model set-up are not counted. PGD-10 costs 10 extra forward+backward passes per batch on top of the plain step,
so issue 3 expects A-LFC / AggNet of about 11x (aim <= 13x) when the network's forward+backward dominates the plain
epoch; the bench also times bare forward+backward epochs to show how much of the plain epoch that is.

    python pipelines/bench_lfc.py [--epochs 5] [--repeats 3] [--threads 1] [--out results/bench_lfc]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robust_al.crowd.learners import make_learner
from robust_al.crowd.pgd import pgd
from robust_al.data.loaders import default_datasets_dir, load_labelme
from robust_al.evaluate.robustness import art_classifier


def crowd_data(seed: int = 0):
    """LabelMe train split (1000 x 512, 8 classes, 59 workers), else synthetic data of the same size."""
    if (default_datasets_dir() / "labelme" / "answers.txt").exists():
        ds = load_labelme()
        return "labelme", ds.train.X, ds.recorded, ds.train.ids, ds.train.n_classes
    rng = np.random.default_rng(seed)
    n, d, C, W = 1000, 512, 8, 59
    y = rng.integers(C, size=n)
    X = np.clip(rng.normal(0.5, 0.15, size=(n, d)) + 0.1 * np.eye(C)[y] @ rng.normal(size=(C, d)), 0, 1)
    rows = [(i, f"w{w}", int(y[i] if rng.random() < 0.7 else rng.integers(C)))
            for i in range(n) for w in rng.choice(W, size=3, replace=False)]
    return "synthetic", X.astype(np.float32), pd.DataFrame(rows, columns=["task", "worker", "label"]), None, C


def fit_seconds(name, X, ann, ids, C, epochs, **kw) -> float:
    t = time.perf_counter()
    make_learner(name, C, X.shape[1:], epochs=epochs, seed=0, **kw).fit(X, ann, ids)
    return time.perf_counter() - t


def epoch_seconds(name, X, ann, ids, C, epochs, repeats, **kw) -> float:
    base = statistics.median(fit_seconds(name, X, ann, ids, C, 0, **kw) for _ in range(repeats))
    full = statistics.median(fit_seconds(name, X, ann, ids, C, epochs, **kw) for _ in range(repeats))
    return (full - base) / epochs


def fwd_bwd_epoch_seconds(X: np.ndarray, C: int, batch: int = 64, repeats: int = 3) -> float:
    """One epoch of bare forward + backward passes of the same network (no optimizer, no EM), median of repeats."""
    from robust_al.crowd.network import build_network

    model = build_network(X.shape[1:], C, "auto", (128,), 0.5)
    xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    yt = torch.zeros(len(xt), dtype=torch.long)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for s in range(0, len(xt), batch):
            torch.nn.functional.cross_entropy(model(xt[s:s + batch]), yt[s:s + batch]).backward()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pgd-repeats", type=int, default=7)
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/bench_lfc"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    source, X, ann, ids, C = crowd_data()
    print(f"data: {source}, {X.shape[0]} items x {X.shape[1]} features, {C} classes, {ann.worker.nunique()} workers, "
          f"{len(ann)} labels; batch 64, {args.epochs} epochs x median of {args.repeats}; "
          f"{torch.get_num_threads()} torch thread(s)", flush=True)

    # (a) epoch times
    adv = {"eps": args.eps, "pgd_steps": args.steps}
    ep = {"aggnet": epoch_seconds("aggnet", X, ann, ids, C, args.epochs, args.repeats),
          "alfc": epoch_seconds("alfc", X, ann, ids, C, args.epochs, args.repeats, **adv),
          "malc": epoch_seconds("malc", X, ann, ids, C, args.epochs, args.repeats, **adv),
          "mv": epoch_seconds("mv", X, ann, ids, C, args.epochs, args.repeats)}
    print("\n(a) epoch time")
    for k, v in ep.items():
        print(f"  {k:>7}: {1000 * v:8.1f} ms/epoch   {v / ep['aggnet']:5.1f}x AggNet")
    fb = fwd_bwd_epoch_seconds(X, C, repeats=args.repeats)
    print(f"  network forward+backward alone: {1000 * fb:.1f} ms/epoch = {100 * fb / ep['aggnet']:.0f}% of an AggNet "
          "epoch (the rest: Adam, the per-batch E-step and eq. 6 over all labels)")
    print(f"  A-LFC / AggNet = {ep['alfc'] / ep['aggnet']:.1f}x, MALC / AggNet = {ep['malc'] / ep['aggnet']:.1f}x "
          f"(issue 3: PGD-{args.steps} ~ {args.steps + 1}x the forward+backward floor, aim <= 13x; the ratio is lower "
          "when fixed per-batch costs dominate the plain epoch)")

    # (b) ART PGD vs plain torch PGD on the same batch, same model
    learner = make_learner("aggnet", C, X.shape[1:], epochs=3, seed=0).fit(X, ann, ids)
    model = learner.model.eval()
    dev = next(model.parameters()).device
    clf = art_classifier(model, X.shape[1:], C)
    from art.attacks.evasion import ProjectedGradientDescent

    rows = []
    print(f"\n(b) PGD-{args.steps}, eps {args.eps:.4f}, step eps/4, no random start; median of {args.pgd_repeats}")
    for n in (64, 1000):
        xb = np.ascontiguousarray(X[:n], dtype=np.float32)
        yb = learner.predict(xb)
        attack = ProjectedGradientDescent(clf, norm=np.inf, eps=args.eps, eps_step=args.eps / 4, max_iter=args.steps,
                                          num_random_init=0, batch_size=n, verbose=False)
        xt, yt = torch.as_tensor(xb, device=dev), torch.as_tensor(yb, device=dev)

        def plain(xt=xt, yt=yt):
            return pgd(model, xt, lambda logits: torch.nn.functional.cross_entropy(logits, yt), args.eps,
                       steps=args.steps, random_start=False)

        art_out, plain_out = attack.generate(xb, y=yb), plain()  # warm-up, and the outputs compared
        t_art, t_plain = [], []
        for _ in range(args.pgd_repeats):
            t = time.perf_counter()
            attack.generate(xb, y=yb)
            t_art.append(time.perf_counter() - t)
            t = time.perf_counter()
            plain()
            t_plain.append(time.perf_counter() - t)
        diff = float(np.abs(art_out - plain_out.cpu().numpy()).max())
        moved = float(np.abs(plain_out.cpu().numpy() - xb).max())
        row = {"batch": n, "art_ms": 1000 * statistics.median(t_art),
               "plain_ms": 1000 * statistics.median(t_plain), "max_abs_diff": diff, "max_perturbation": moved}
        row["ratio"] = row["art_ms"] / row["plain_ms"]
        rows.append(row)
        print(f"  batch {n:>4}: ART {row['art_ms']:7.2f} ms   plain torch {row['plain_ms']:7.2f} ms   "
              f"ART/plain {row['ratio']:4.1f}x   max |ART - plain| = {diff:.2e} (max |x' - x| = {moved:.4f})")
    out = {"data": source, "epochs": args.epochs, "repeats": args.repeats, "threads": torch.get_num_threads(),
           "epoch_seconds": ep, "fwd_bwd_epoch_seconds": fb, "alfc_over_aggnet": ep["alfc"] / ep["aggnet"],
           "malc_over_aggnet": ep["malc"] / ep["aggnet"], "pgd": rows}
    (args.out / "bench.json").write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.out / 'bench.json'}")


if __name__ == "__main__":
    main()
