"""Benchmark: the run store with a million stored answers.

Prints answers/s written (one transaction per labeler's batch, as a replayed crowd writes them), the time of
``annotations()``, ``annotations(100 ids)``, ``robust-al trust`` and the reads one resume makes, and how the
per-iteration reads scale with the table's size (the same 100-item read at 10k, 100k and 1M answers).
Targets (issue: the store scales): 1M answers written in under 60 s, ``trust`` under 2 s, per-iteration
reads independent of the table's size. Writes ``bench_store.json`` (figures, seed, versions) to --out.

    python pipelines/bench_store.py --answers 1000000 --out results/bench_store
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from robust_al.evaluate.bench import best_time
from robust_al.report.text import trust_text
from robust_al.store import RunStore


def fill(store: RunStore, n: int, n_items: int, group: int, rng: np.random.Generator, start: int = 0,
         per_batch: int = 1000) -> float:
    """Write answers ``start..n`` in batches of ``per_batch`` (a replayed crowd's iteration writes one batch
    per labeler); answer g is about item g % n_items, by labeler (g // n_items) * group + item % group, whom no
    other answer on that item has.
    Returns seconds."""
    t = time.perf_counter()
    for lo in range(start, n, per_batch):
        g = np.arange(lo, min(n, lo + per_batch))
        items, rounds = g % n_items, g // n_items
        workers = rounds * group + items % group
        labels = rng.integers(0, 10, size=len(g))
        store.add_annotations([(int(i), f"w{int(w)}", int(lab)) for i, w, lab in zip(items, workers, labels)],
                              int(lo // 10_000), "query")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=747)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench_store")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        store = RunStore(Path(tmp) / "run")
        store.set_meta("config", {"trust": {"initial": 0.9, "threshold": 0.5}})
        probe = rng.choice(args.items, size=100, replace=False)
        written, scaling = 0, {}
        for size in sorted({10_000, 100_000, args.answers}):
            if size > args.answers:
                continue
            group = max(1, args.workers // max(1, -(-args.answers // args.items)))
            secs = fill(store, size, args.items, group, rng, start=written)
            figures.setdefault("write_seconds", 0.0)
            figures["write_seconds"] += secs
            written = size
            scaling[size] = {"annotations_100_ids_s": best_time(lambda: store.annotations(probe)),
                             "labels_before_s": best_time(lambda size=size: store.labels_before(size // 10_000)),
                             "stored_labels_100_s": best_time(lambda: store.stored_labels(probe))}
            print(f"{size:>9,} answers: annotations(100 ids) {scaling[size]['annotations_100_ids_s'] * 1e3:.1f} ms, "
                  f"stored_labels(100) {scaling[size]['stored_labels_100_s'] * 1e3:.1f} ms, "
                  f"labels_before {scaling[size]['labels_before_s'] * 1e3:.1f} ms", flush=True)
        figures["answers"] = written
        figures["answers_per_s"] = written / figures["write_seconds"]
        for w in range(args.workers):  # one trust event per labeler and ten iterations
            for it in range(10):
                store.add_trust_event(it, f"w{w}", 0.0, 0.9, "agreement")
        figures["annotations_all_s"] = best_time(lambda: store.annotations(), repeat=1)
        figures["trust_s"] = best_time(lambda: trust_text(Path(tmp) / "run"), repeat=1)
        figures["resume_reads_s"] = best_time(lambda: (store.drop_incomplete(), store.statuses(),
                                                  store.labels_before(10), store.trust_events()), repeat=1)
        figures["scaling"] = scaling
        store.close()
    print(f"written: {figures['answers']:,} answers in {figures['write_seconds']:.1f} s "
          f"({figures['answers_per_s']:,.0f}/s; target: 1M in < 60 s)")
    print(f"annotations() of all: {figures['annotations_all_s']:.2f} s; robust-al trust: {figures['trust_s']:.2f} s "
          f"(target < 2 s); one resume's store reads: {figures['resume_reads_s']:.2f} s")
    import robust_al

    (out / "bench_store.json").write_text(json.dumps(
        {"args": vars(args), "seed": args.seed, "figures": figures,
         "versions": {"robust_al": robust_al.__version__, "python": platform.python_version(),
                      "numpy": np.__version__}}, indent=2, default=str))


if __name__ == "__main__":
    main()
