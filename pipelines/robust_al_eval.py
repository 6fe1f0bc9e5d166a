"""Labels needed to reach the target accuracy, per query strategy (first step of the Q1/Q2 evaluation).

Target accuracy = test accuracy of the same network trained on every training item with clean labels (the
robust-active-learning paper's 89% on CIFAR-2). Each repetition is a whole campaign (its own run directory,
seed = repetition) with one strategy and one threat scenario; repetitions run in parallel worker processes
and are aggregated afterwards from their run directories, so a crashed or repeated run never corrupts the
others. Prints the Table III layout (mean, std, min, quartiles, max of the labels used when the test accuracy
first reaches the target; runs that never reach it are counted apart) and writes config, seeds, versions,
the table and the learning curves next to the runs.

    python pipelines/robust_al_eval.py configs/digits.yaml --reps 5 --workers 2
    python pipelines/robust_al_eval.py configs/digits.yaml --scenario malicious --strategies maxmin random

Not yet here (issue #5): CIFAR-2 CNN and frozen-feature variants, poisoning (Q3), Ray, the HTML report.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SCENARIOS = {
    "none": [{"kind": "benign", "count": 11, "pr": 0.05}],
    "malicious": [{"kind": "benign", "count": 10, "pr": 0.05},
                  {"kind": "malicious", "count": 1, "pr": 0.05, "target": 1, "to": 7}],
    "spammer": [{"kind": "benign", "count": 10, "pr": 0.05}, {"kind": "spammer", "count": 1}],
    "colluding": [{"kind": "benign", "count": 8, "pr": 0.05},
                  {"kind": "colluding", "count": 3, "rate": 0.3, "pr": 0.05}],
}


def target_accuracy(config: str, overrides: list[str], seed: int = 0) -> float:
    """Test accuracy of the campaign's network trained on all training items with their true labels."""
    from robust_al.config import load_config
    from robust_al.crowd import NetworkTrainer
    from robust_al.data.loaders import load_dataset

    cfg = load_config(config, overrides)
    ds = load_dataset(cfg.data.name, **cfg.data.options)
    m = cfg.model
    net = NetworkTrainer(ds.train.input_shape, ds.train.n_classes, m.network, m.hidden, m.dropout, m.epochs,
                         m.batch_size, m.lr, m.weight_decay, m.device, seed=seed, min_steps=m.min_steps)
    net.set_input_statistics(ds.train.X)
    net.fit(ds.train.X, ds.train.y, seed=seed)
    return float((net.predict_proba(ds.test.X).argmax(1) == ds.test.y).mean())


def one_run(job: dict) -> dict:
    """A whole campaign; returns its learning curve (labels used -> test accuracy)."""
    from robust_al.campaign import Campaign
    from robust_al.config import load_config
    from robust_al.store import RunStore

    import torch

    torch.set_num_threads(1)
    run_dir = Path(job["run_dir"])
    if (run_dir / "campaign.sqlite").exists():  # a repeated run resumes (or just reads) its own folder
        Campaign.resume(run_dir, echo=None).run(progress=False)
    else:
        cfg = load_config(job["config"], job["overrides"] + [f"seed={job['seed']}",
                                                              f"query.strategy={job['strategy']}"])
        cfg.annotators.labelers = [type(cfg.annotators.labelers[0]).model_validate(x)
                                   for x in SCENARIOS[job["scenario"]]]
        Campaign.create(cfg, run_dir, echo=None).run(progress=False)
    curve = [(m["labels_used"], m["test_acc"]) for m in RunStore(run_dir).metrics()]
    (run_dir / "curve.json").write_text(json.dumps(curve))
    return {**job, "curve": curve}


def table_iii(budgets: dict[str, list[float]], never: dict[str, int]) -> str:
    rows = ["| Strategy | Mean | Std | Min | 25% | 50% | 75% | Max | never reached |", "|---|" + "---:|" * 8]
    for s, b in budgets.items():
        if b:
            q = np.percentile(b, [0, 25, 50, 75, 100])
            rows.append(f"| {s} | {np.mean(b):.1f} | {np.std(b, ddof=1) if len(b) > 1 else 0:.1f} | {q[0]:.0f} | "
                        f"{q[1]:.0f} | {q[2]:.0f} | {q[3]:.0f} | {q[4]:.0f} | {never[s]} |")
        else:
            rows.append(f"| {s} | - | - | - | - | - | - | - | {never[s]} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--strategies", nargs="+", default=["maxmin", "random", "entropy", "coreset"])
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="none")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--target", type=float, help="default: full-data clean-label accuracy")
    ap.add_argument("--set", action="append", default=[], help="config overrides, e.g. annotators.k=1")
    ap.add_argument("--out", default="results/robust_al_eval")
    args = ap.parse_args()
    overrides = ["annotators.k=1", "stop.max_iterations=100", *args.set]
    out = Path(args.out) / args.scenario
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    target = args.target if args.target is not None else target_accuracy(args.config, overrides)
    print(f"target test accuracy: {target:.4f}", flush=True)
    jobs = [{"config": args.config, "overrides": overrides, "strategy": s, "scenario": args.scenario, "seed": r,
             "run_dir": str(out / f"{s}-rep{r}")} for s in args.strategies for r in range(args.reps)]
    # spawn, not fork: the parent already ran torch (OpenMP) to measure the target, and forked OpenMP deadlocks
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(one_run, jobs))
    budgets = {s: [] for s in args.strategies}
    never = {s: 0 for s in args.strategies}
    for r in results:
        hit = next((labels for labels, acc in r["curve"] if acc >= target), None)
        if hit is None:
            never[r["strategy"]] += 1
        else:
            budgets[r["strategy"]].append(hit)
    table = table_iii(budgets, never)
    print(table)
    from robust_al.campaign import versions

    (out / "table.md").write_text(f"# Labels to reach {target:.4f} test accuracy ({args.scenario})\n\n{table}\n")
    (out / "summary.json").write_text(json.dumps({
        "args": vars(args), "overrides": overrides, "target": target, "versions": versions(),
        "budgets": budgets, "never": never, "wall_seconds": time.time() - t0,
        "curves": {f"{r['strategy']}-rep{r['seed']}": r["curve"] for r in results}}, indent=1))
    print(f"wall time {time.time() - t0:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
