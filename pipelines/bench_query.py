"""Learning curves of the query strategies in a frozen feature space: is the query ever worse than random?

A light stand-in for the campaign's Q1 (issue #13): the pool's features are fixed (LabelMe's VGG16 features,
or CIFAR-2 through a pretrained trunk), the model is a logistic-regression head on them (what the campaign's
frozen network trains), labels come from one simulated benign labeler per item (pr = 0.05 wrong, the
evaluation's crowd), the first ``--initial`` items are random, then ``--batch`` per round by each strategy,
``--reps`` seeded repetitions (the same initial set for every strategy of a repetition). Prints mean test
accuracy per budget, each strategy minus random with a paired 95 % interval, and writes results.csv, the
curves' figure, config, seed and versions to ``--out``.

    python pipelines/bench_query.py --data labelme --reps 20
    python pipelines/bench_query.py --data cifar2 --weights results/pretrained/cifar8-resnet18.pt --reps 20
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from robust_al.query import MinDistance, QueryContext, make_strategy
from robust_al.versions import versions

STRATEGIES = {  # name -> (strategy, options)
    "random": ("random", {}),
    "entropy": ("entropy", {}),
    "coreset": ("coreset", {}),
    "maxmin": ("maxmin", {"typicality": 0.0, "uncertainty": 0.0}),
    "maxmin-typ1": ("maxmin", {"typicality": 1.0, "uncertainty": 0.0}),
    "maxmin-typ2": ("maxmin", {"typicality": 2.0, "uncertainty": 0.0}),
    "maxmin-typ4": ("maxmin", {"typicality": 4.0, "uncertainty": 0.0}),
    "maxmin-typ8": ("maxmin", {"typicality": 8.0, "uncertainty": 0.0}),
    "maxmin-typ1-unc1": ("maxmin", {"typicality": 1.0, "uncertainty": 1.0}),
    "maxmin-typ1-unc2": ("maxmin", {"typicality": 1.0, "uncertainty": 2.0}),
    "maxmin-typ1-unc4": ("maxmin", {"typicality": 1.0, "uncertainty": 4.0}),
    "maxmin-typ1-unc8": ("maxmin", {"typicality": 1.0, "uncertainty": 8.0}),
    "margin": ("margin", {}),
}


def load(args):
    from robust_al.data.loaders import load_cifar2, load_labelme

    if args.data == "labelme":
        ds = load_labelme()
    else:
        ds = load_cifar2(backbone={"arch": args.arch, "weights": args.weights})
    return ds.train.X.astype(np.float32), ds.train.y, ds.test.X.astype(np.float32), ds.test.y, ds.train.n_classes


def curve(strategy: str, X, y, Xt, yt, C, seed: int, args) -> list[tuple[int, float]]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng([seed, 1])
    noisy = np.where(rng.random(len(y)) < 0.05, (y + rng.integers(1, C, len(y))) % C, y)  # the labeler's answers
    init = np.random.default_rng([seed, 0]).choice(len(X), args.initial, replace=False)
    labeled = np.zeros(len(X), bool)
    labeled[init] = True
    name, opts = STRATEGIES[strategy]
    kw = {"n_clusters": args.n_clusters, **opts} if name == "maxmin" else {}
    strat = make_strategy(name, **kw)
    mind = MinDistance(X)
    mind.add(X[labeled])
    out = []
    for rnd in range(args.rounds + 1):
        clf = LogisticRegression(C=args.C, max_iter=300).fit(X[labeled], noisy[labeled])
        out.append((int(labeled.sum()), float((clf.predict(Xt) == yt).mean())))
        if rnd == args.rounds:
            break
        pos = np.flatnonzero(~labeled)
        proba = np.zeros((len(pos), C))
        proba[:, clf.classes_] = clf.predict_proba(X[pos])
        ctx = QueryContext(positions=pos, embed=None, rng=np.random.default_rng([seed, 2, rnd]), proba=proba,
                           mind=mind)
        picked = pos[strat.query(ctx, args.batch)]
        labeled[picked] = True
        mind.add(X[picked])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=["labelme", "cifar2"], default="labelme")
    ap.add_argument("--weights", help="cifar2: the pretrained trunk's state_dict file")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--strategies", nargs="+", choices=sorted(STRATEGIES), default=list(STRATEGIES))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--initial", type=int, default=20)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--n-clusters", type=int, default=None, help="maxmin clusters (default: silhouette)")
    ap.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic head")
    ap.add_argument("--out", default="results/bench_query")
    args = ap.parse_args()
    out = Path(args.out) / args.data
    out.mkdir(parents=True, exist_ok=True)
    X, y, Xt, yt, C = load(args)
    mu, sd = X.mean(0), X.std(0) + 1e-6  # the head sees standardized features, as the campaign's network does
    X, Xt = (X - mu) / sd, (Xt - mu) / sd
    rows, t0 = [], time.time()
    for seed in range(args.reps):
        for s in args.strategies:
            for n, acc in curve(s, X, y, Xt, yt, C, seed, args):
                rows.append({"strategy": s, "seed": seed, "labels": n, "accuracy": acc})
        print(f"rep {seed + 1}/{args.reps} done ({time.time() - t0:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    mean = df.pivot_table(index="labels", columns="strategy", values="accuracy", aggfunc="mean")
    wide = df.pivot_table(index=["labels", "seed"], columns="strategy", values="accuracy")
    lines = ["mean test accuracy:", mean.round(4).to_string(), "",
             "minus random, mean [paired 95% interval] (points):"]
    summary = {}
    for s in [s for s in args.strategies if s != "random"]:
        d = (wide[s] - wide["random"]).groupby(level="labels")
        m, h = d.mean() * 100, 1.96 * d.std(ddof=1) / np.sqrt(d.count()) * 100
        worst = float(m.min())
        summary[s] = {"worst_gap_points": worst, "at": int(m.idxmin()), "mean_gap_points": float(m.mean()),
                      "ahead_at": int((m > 0).sum()), "budgets": int(len(m))}
        lines.append(f"{s:12s} worst {worst:+.2f} at {int(m.idxmin())} labels; mean {m.mean():+.2f}; ahead at "
                     f"{int((m > 0).sum())}/{len(m)} budgets; " + " ".join(
                         f"{n}:{a:+.1f}[{a - b:+.1f},{a + b:+.1f}]" for n, a, b in zip(m.index, m, h)))
    text = "\n".join(lines)
    print(text)
    (out / "summary.txt").write_text(text + "\n")
    (out / "config.json").write_text(json.dumps({"args": vars(args), "seeds": list(range(args.reps)),
                                                 "versions": versions(), "summary": summary,
                                                 "seconds": time.time() - t0}, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = mean.plot(figsize=(7, 4.5), marker=".")
        ax.set_xlabel("labels"), ax.set_ylabel("mean test accuracy"), ax.set_title(f"{args.data}, {args.reps} reps")
        plt.tight_layout()
        plt.savefig(out / "curves.png", dpi=110)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
