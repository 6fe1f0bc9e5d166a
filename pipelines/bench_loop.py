"""Benchmark (not a test): seconds per loop stage for pools of 10k, 100k and 1M 512-d items.

Part 1 runs real campaigns (the library's Campaign, simulated crowd, DeepFool augmentation, SQLite store) on a
synthetic 512-d pool and prints the stage timings each iteration records. The pool is re-embedded only at the
first query (``query.refresh_every`` large), as one would for a large pool; re-embedding costs one forward pass
plus a full min-distance recompute, also printed.

Part 2 isolates selection (clustering + per-cluster max-min with the incremental min-distance update) at a
fixed pool size while the labeled set grows 1k -> 100k, to show that its cost does not grow with |D|.

    python pipelines/bench_loop.py                   # 10k, 100k, 1M
    python pipelines/bench_loop.py --sizes 10000     # quicker

Part 3 measures each strategy's peak memory (numpy allocations traced by tracemalloc) on a pool of
``--memory-size`` x 512 embeddings, as a multiple of the pool's own size (goal: <= 1.5x in all). Part 4 times
the core-set query against scikit-activeml's ``CoreSet`` on the same embeddings and labeled set, side by side in
one process, and how many of the picked items are the same (``pip install scikit-activeml``; skipped without it).

    python pipelines/bench_loop.py --parts 3 4 --memory-size 1000000

Writes the figures (and config, seed, versions) as JSON next to its output (``--out``).
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from robust_al.campaign import Campaign, versions
from robust_al.config import load_config
from robust_al.data.pool import Dataset, Pool
from robust_al.query import ClusterMaxMin, MinDistance, QueryContext
from robust_al.query.strategies import STRATEGIES, make_strategy

D, C = 512, 10


def synthetic(n: int, seed: int = 0) -> Dataset:
    """A 10-class Gaussian mixture in [0, 1]^512, made in chunks to keep peak memory at the pool's size."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.3, 0.7, size=(C, D)).astype(np.float32)
    y = rng.integers(C, size=n + 2000)
    X = np.empty((n + 2000, D), dtype=np.float32)
    for s in range(0, len(X), 100_000):
        e = min(s + 100_000, len(X))
        X[s:e] = centers[y[s:e]] + rng.normal(0, 0.12, size=(e - s, D)).astype(np.float32)
    np.clip(X, 0, 1, out=X)
    train = Pool(np.arange(n), X[:n], y[:n], C)
    test = Pool(np.arange(n, n + 2000), X[n:], y[n:], C)
    return Dataset(f"synthetic{n}", train, test)


def bench_campaign(n: int, iterations: int, seed: int) -> list[dict]:
    cfg = load_config(data={
        "name": f"bench{n}", "seed": seed, "holdout": {"size": 200},
        "annotators": {"k": 1, "labelers": [{"kind": "benign", "count": 11, "pr": 0.05}]},
        "query": {"initial": 200, "batch": 200, "n_clusters": 10, "refresh_every": 10_000},
        "augment": {"attacks": ["deepfool"], "noise_copies": 1},
        "model": {"epochs": 5, "min_steps": 100, "hidden": [128]},
        "stop": {"budget": 10**9, "max_iterations": iterations}})
    ds = synthetic(n, seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        camp = Campaign.create(cfg, Path(tmp) / "run", dataset=ds, echo=None)
        camp.load_state()
        for it in range(iterations):
            m = camp.iterate(it).metrics
            rows.append({"pool": n, "iteration": it, "labeled": m["labeled_items"], **m["timings"],
                         "total": round(m["seconds"], 3), "test_acc": round(m["test_acc"], 3)})
    return rows


def bench_selection(n: int, labeled_sizes: list[int], batch: int, seed: int) -> list[dict]:
    """Selection cost at pool size n as |D| grows: incremental update with the new batch + clustering +
    per-cluster greedy max-min, in a 128-d feature space (the MLP's penultimate layer)."""
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n, 128)).astype(np.float32)
    rows = []
    for L in labeled_sizes:
        labeled = rng.choice(n, size=L, replace=False)
        mind = MinDistance(E)
        t = time.perf_counter()
        mind.reset(E, E[labeled])
        full = time.perf_counter() - t
        free = np.setdiff1d(np.arange(n), labeled)
        new = rng.choice(free, size=batch, replace=False)
        t = time.perf_counter()
        mind.add_positions(new)  # what an iteration pays to keep the distances
        incr = time.perf_counter() - t
        cand = np.setdiff1d(free, new)
        ctx = QueryContext(positions=cand, embed=E[cand], rng=np.random.default_rng(0), mind=mind)
        t = time.perf_counter()
        ClusterMaxMin(n_clusters=10).query(ctx, batch)
        select = time.perf_counter() - t
        rows.append({"pool": n, "labeled": L, "incremental_update_s": round(incr, 3),
                     "cluster_and_select_s": round(select, 3), "full_recompute_s": round(full, 3)})
    return rows


def _embedded_pool(n: int, d: int, n_labeled: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E, labeled positions, candidate positions) of a random n x d embedding."""
    rng = np.random.default_rng(seed)
    E = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        E[s:s + 100_000] = rng.random((min(100_000, n - s), d), dtype=np.float32)
    labeled = rng.choice(n, size=n_labeled, replace=False)
    mask = np.ones(n, dtype=bool)
    mask[labeled] = False
    return E, labeled, np.flatnonzero(mask)


def bench_memory(n: int, batch: int, seed: int) -> list[dict]:
    """Peak memory of one query per strategy, as a multiple of the pool's embedding (the pool itself = 1)."""
    import tracemalloc

    E, labeled, cand = _embedded_pool(n, D, 200, seed)
    mind = MinDistance(E)
    mind.reset(E, E[labeled])
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(C), size=len(cand)).astype(np.float32)
    rows = []
    for name in sorted(STRATEGIES):
        strategy = make_strategy(name, n_clusters=10) if name == "maxmin" else make_strategy(name)
        tracemalloc.start()
        t = time.perf_counter()
        # as in a campaign: the candidates are rows of the pool's embedding (mind.E), not a copy
        ctx = QueryContext(positions=cand, embed=None, rng=np.random.default_rng(0),
                           proba=proba if strategy.needs_proba else None, mind=mind)
        strategy.query(ctx, batch)
        secs = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"strategy": name, "pool": n, "peak_x_pool": round(1 + peak / E.nbytes, 3),
                     "seconds": round(secs, 2)})
    return rows


def bench_vs_skactiveml(sizes: list[int], batch: int, seed: int) -> list[dict]:
    """Cold core-set query (distances to the labeled set + greedy picks): ours vs scikit-activeml's CoreSet."""
    try:
        from skactiveml.pool import CoreSet as SkCoreSet
    except ImportError:
        print("  scikit-activeml is not installed (pip install scikit-activeml): skipped")
        return []
    rows = []
    for n in sizes:
        E, labeled, cand = _embedded_pool(n, D, 500, seed)
        y = np.full(n, np.nan)
        y[labeled] = 0
        t = time.perf_counter()
        theirs = SkCoreSet(random_state=seed).query(E, y, batch_size=batch)
        t_sk = time.perf_counter() - t
        t = time.perf_counter()
        mind = MinDistance(E)
        mind.reset(E, E[labeled])
        ours = cand[make_strategy("coreset").query(
            QueryContext(positions=cand, embed=E[:0], rng=np.random.default_rng(0), mind=mind), batch)]
        t_ours = time.perf_counter() - t
        rows.append({"pool": n, "ours_s": round(t_ours, 3), "skactiveml_s": round(t_sk, 3),
                     "ratio": round(t_ours / t_sk, 3),
                     # same items; the order can differ at near-ties (float32 here, float64 there)
                     "same_items": len(set(ours.tolist()) & set(theirs.tolist())) / batch,
                     "same_order_until": next((i for i in range(batch) if ours[i] != theirs[i]), batch)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench_loop")
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--memory-size", type=int, default=1_000_000, help="pool size of part 3")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    stages = ["query", "embed", "annotate", "train", "secured_check", "trust", "augment", "evaluate", "total"]
    campaign_rows, sel_rows, mem_rows, sk_rows = [], [], [], []
    if 1 in args.parts:
        campaign_rows = part1(args, stages)
    if 2 in args.parts:
        sel_rows = part2(args)
    if 3 in args.parts:
        print(f"\nPart 3: peak memory of one query (batch 200) on a {args.memory_size:,} x {D} pool, x the pool")
        for r in bench_memory(args.memory_size, 200, args.seed):
            mem_rows.append(r)
            print(f"  {r['strategy']:>8}: {r['peak_x_pool']:.2f}x  ({r['seconds']:.1f} s)", flush=True)
    if 4 in args.parts:
        print(f"\nPart 4: cold core-set query (batch 200, 500 labeled, {D}-d), ours vs scikit-activeml's CoreSet")
        for r in bench_vs_skactiveml([10_000, 100_000], 200, args.seed):
            sk_rows.append(r)
            print(f"  {r['pool']:>7,}: ours {r['ours_s']:.2f} s, scikit-activeml {r['skactiveml_s']:.2f} s, "
                  f"ratio {r['ratio']:.3f}, same items {r['same_items']:.0%} (same order for the first "
                  f"{r['same_order_until']})", flush=True)
    (out / "bench_loop.json").write_text(json.dumps({
        "args": vars(args), "versions": versions(), "campaign": campaign_rows, "selection": sel_rows,
        "memory": mem_rows, "vs_skactiveml": sk_rows,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, indent=1))
    print(f"\nfigures written to {out / 'bench_loop.json'}")


def part1(args, stages: list[str]) -> list[dict]:
    print("Part 1: seconds per loop stage (a real campaign per pool size)")
    print(f"{'pool':>8} {'iter':>4} {'|D|':>5} " + " ".join(f"{s:>9}" for s in stages) + f" {'test':>5}")
    campaign_rows = []
    for n in args.sizes:
        for r in bench_campaign(n, args.iterations, args.seed):
            campaign_rows.append(r)
            print(f"{r['pool']:>8} {r['iteration']:>4} {r['labeled']:>5} "
                  + " ".join(f"{r.get(s, 0.0):>9.3f}" for s in stages) + f" {r['test_acc']:>5}", flush=True)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{'':>8} peak RSS so far: {rss:.0f} MiB", flush=True)
    return campaign_rows


def part2(args) -> list[dict]:
    print("\nPart 2: selection per iteration (batch 200) as the labeled set grows, 128-d features")
    print(f"{'pool':>8} {'|D|':>7} {'incremental':>12} {'select':>8} {'(full recompute)':>17}")
    sel_rows = []
    n_sel = min(max(args.sizes), 100_000)  # the full recompute (for comparison) at 1M x 100k would take minutes
    for r in bench_selection(n_sel, [1_000, 10_000, 50_000], 200, args.seed):
        sel_rows.append(r)
        print(f"{r['pool']:>8} {r['labeled']:>7} {r['incremental_update_s']:>12.3f} {r['cluster_and_select_s']:>8.3f}"
              f" {r['full_recompute_s']:>17.3f}", flush=True)
    return sel_rows


if __name__ == "__main__":
    main()
