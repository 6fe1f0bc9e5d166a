"""Benchmark: robust-al's TrustWeightedDS (method ds) against crowd-kit's DawidSkene(n_iter=100).

Both fit the same long table ``task,worker,label`` with STRING task and worker ids (as a real crowd export
has them), in the same run, so the ratio ours / crowd-kit does not depend on the machine. Synthetic crowds of
10k, 100k and 1M labels (5 labels per item, 4 classes, workers of accuracy 0.55..0.95), and the Zheng et al.
VLDB'17 product crowd (``zheng_vldb17_product/answer.csv`` in the shared datasets) when it is there.
Target: ours below crowd-kit DS at every size. Each time is the best of ``--repeat`` fits.

    python pipelines/bench_aggregate.py [--sizes 10000 100000 1000000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from crowdkit.aggregation import DawidSkene

from robust_al.crowd.aggregate import TrustWeightedDS
from robust_al.data.loaders import default_datasets_dir
from robust_al.evaluate.bench import best_time


def synthetic(n_labels: int, k: int = 5, C: int = 4, seed: int = 0) -> pd.DataFrame:
    """``n_labels // k`` items, each answered by k distinct workers; ids are strings."""
    rng = np.random.default_rng(seed)
    T = n_labels // k
    W = max(20, n_labels // 500)
    acc = rng.uniform(0.55, 0.95, size=W)
    truth = rng.integers(C, size=T)
    base = rng.integers(W, size=T)
    task = np.repeat(np.arange(T), k)
    worker = (base[:, None] + np.arange(k)[None, :] * (W // k)).ravel() % W
    right = rng.random(T * k) < acc[worker]
    label = np.where(right, truth[task], (truth[task] + rng.integers(1, C, size=T * k)) % C)
    return pd.DataFrame({"task": pd.Series(task).map("item-{:08d}".format).astype(object),
                         "worker": pd.Series(worker).map("A{:013X}".format).astype(object),
                         "label": label.astype(int)})


def compare(name: str, df: pd.DataFrame, repeat: int) -> None:
    C = int(df["label"].max()) + 1
    ours = best_time(lambda: TrustWeightedDS(C, "ds").fit(df), repeat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = best_time(lambda: DawidSkene(n_iter=100).fit(df), repeat)
    print(f"{name:>28}: {len(df):>9,} labels  TrustWeightedDS(ds) {ours:8.3f} s  crowd-kit DS {ref:8.3f} s  "
          f"ratio {ours / ref:5.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for n in args.sizes:
        compare(f"synthetic {n:,}", synthetic(n), args.repeat if n < 1_000_000 else 1)
    product = default_datasets_dir() / "zheng_vldb17_product" / "answer.csv"
    if product.is_file():
        df = pd.read_csv(product, dtype=str).rename(columns={"question": "task", "answer": "label"})
        compare("zheng product answer.csv", df.astype({"label": int}), args.repeat)
    else:
        print(f"(no {product}: the real crowd is skipped)")


if __name__ == "__main__":
    main()
