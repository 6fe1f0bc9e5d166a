"""Benchmark (not a test): what two options of the loop cost in labels, on clean simulated campaigns, paired by seed.

- ``lookahead``: ``annotators.lookahead: 1`` with people who answer every queued item before the model it waited
  for is ready (the worst case for staleness, and the case of the Label Studio benchmark at one answer a second:
  docs/performance.md#bench-lookahead). The simulated crowd answers only when asked, so the experiment stands in
  for those people by keeping every queued item when the batch is settled (``crowd.keep_ahead``).
- ``filter``: the poison filter on (``poison_filter.enabled``): labels to target, test accuracy, and the honest
  items it keeps out of training (all items are honest here; "correct" ones: the majority of their answers is
  the true label).

Against ``sync``, the synchronous loop with the filter off (today's default). The embedded digits, four honest
simulated labelers and one malicious (1 -> 7), k = 3, max-min batches of ``--batch``, S of 100, an MLP.

    python pipelines/bench_loop_variants.py --seeds 10 --out results/loop-variants.json \
        --summary docs/results/bench-loop-variants.json

Writes per-run curves, the config, seeds, commit and versions with ``--out``; ``--summary`` the docs' table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import yaml

from robust_al.campaign import Campaign
from robust_al.config import load_config
from robust_al.evaluate.experiment import labels_to_reach
from robust_al.versions import git_commit, versions

VARIANTS = ("sync", "lookahead", "filter")


def config(seed: int, variant: str, args: argparse.Namespace) -> dict:
    return {"name": f"variants-{variant}-s{seed}", "seed": seed, "data": {"name": "digits"},
            "holdout": {"size": 100},
            "annotators": {"kind": "simulated", "k": 3, "lookahead": int(variant == "lookahead"),
                           "labelers": [{"kind": "benign", "count": 4, "pr": 0.05},
                                        {"kind": "malicious", "count": 1, "pr": 0.05, "target": 1, "to": 7}]},
            "query": {"strategy": "maxmin", "initial": args.batch, "batch": args.batch, "n_clusters": 5},
            "augment": {"attacks": ["deepfool"], "noise_copies": 1},
            "model": {"epochs": 20, "hidden": [128]},
            "stop": {"budget": args.budget, "max_iterations": 200},
            "poison_filter": {"enabled": variant == "filter"}}  # its defaults: what the measurement is about


def one_run(seed: int, variant: str, args: argparse.Namespace) -> dict:
    cfg = config(seed, variant, args)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        c = Campaign.create(load_config(path), Path(tmp) / "run", echo=None)
        if variant == "lookahead":  # people answered all of it while the model trained (see the docstring)
            c.crowd.keep_ahead = lambda ids, iteration: [int(i) for i in ids]
        c.run(progress=False)
        curve = [(m.get("labels_in_model", m["labels_used"]), m["secured_acc"], m["test_acc"])
                 for m in c.store.metrics()]
        out = c.store.filtered()["item_id"].to_numpy(np.int64)
        correct = 0
        if len(out):
            ann = c.store.annotations(out.tolist())
            majority = ann.groupby("task")["label"].agg(lambda v: v.value_counts().idxmax())
            correct = int((majority.loc[out].to_numpy() == c.pool.y[c.pool.positions(out)]).sum())
        return {"seed": seed, "variant": variant, "curve": curve, "filtered": int(len(out)),
                "filtered_correct": correct, "labeled": int(len(c.ids_with("labeled"))) + int(len(out))}


def labels_to(curve: list, target: float) -> int | None:
    """Labels in the model when S accuracy first reached ``target`` (None: never)."""
    return labels_to_reach([(int(n), s) for n, s, _ in curve], target)


def mean_s(curve: list, lo: int, hi: int, step: int) -> float:
    n, s = np.array([c[0] for c in curve], float), np.array([c[1] for c in curve], float)
    return float(np.interp(np.arange(lo, hi + 1, step), n, s).mean())


def summary(raw: dict) -> dict:
    a, runs = raw["args"], raw["runs"]
    by = {(r["variant"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    lo, hi, step = 2 * a["batch"] * 3, a["budget"], a["batch"] * 3
    rows = []
    for v in [v for v in VARIANTS if any(r["variant"] == v for r in runs)]:
        mine = [by[(v, s)] for s in seeds if (v, s) in by]
        row = [v, len(mine)]
        for t in a["targets"]:
            reached = [labels_to(r["curve"], t) for r in mine]
            sync = [labels_to(by[("sync", r["seed"])]["curve"], t) if ("sync", r["seed"]) in by else None
                    for r in mine]
            both = [(b, x) for b, x in zip(sync, reached) if b is not None and x is not None]
            row += [sum(x is not None for x in reached),
                    round(statistics.mean(x for _, x in both) / statistics.mean(s for s, _ in both), 3)
                    if both else "n/a"]
        row += [round(statistics.mean(mean_s(r["curve"], lo, hi, step) for r in mine), 4),
                round(statistics.mean(r["curve"][-1][2] for r in mine), 4),
                f"{sum(r['filtered_correct'] for r in mine) / max(1, sum(r['labeled'] for r in mine)):.1%}"]
        rows.append(row)
    cols = ["variant", "runs"]
    for t in a["targets"]:
        cols += [f"runs reaching S {t}", f"labels to S {t} / sync's (seeds both reach)"]
    cols += [f"mean S accuracy over {lo}-{hi} labels", "final test accuracy", "honest items filtered"]
    return {
        "page": "performance", "order": 7, "title": "What lookahead and the poison filter cost in labels",
        "setup": (f"`pipelines/bench_loop_variants.py`: clean simulated campaigns on the embedded digits, paired by "
                  f"seed: four honest labelers and one malicious (1 -> 7), k = 3, max-min batches of {a['batch']}, "
                  f"S of 100, an MLP (20 epochs) with DeepFool augmentation, a budget of {a['budget']} labels. "
                  "`sync`: today's default. `lookahead`: `annotators.lookahead: 1` with every queued item "
                  "answered before the model it waited for is ready (the worst case, and the Label Studio "
                  "benchmark's at one answer a second). `filter`: `poison_filter.enabled` with its defaults "
                  "(trusted-knn and clump); there are no poisons, so every item it removes is honest "
                  "(counted when the majority of its answers is the true label)."),
        "command": [raw["command"]], "config": {"file": None, "overrides": [], "data": "scikit-learn's digits"},
        "seeds": seeds, "commit": raw["commit"], "versions": raw["versions"],
        "machine": "the 2-core development machine",
        "figures": [{"caption": "Per variant, over the seeds (labels: labels in the model when S first reached "
                                "the accuracy)", "columns": cols, "rows": rows}],
        "notes": raw.get("notes", []),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--budget", type=int, default=450)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.93, 0.95])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--summary", type=Path)
    ap.add_argument("--summarize", action="store_true", help="only write --summary from an earlier --out")
    args = ap.parse_args()
    if args.summarize:
        args.summary.write_text(json.dumps(summary(json.loads(args.out.read_text())), indent=1) + "\n")
        return
    import sys

    raw = {"args": {k: v for k, v in vars(args).items() if k not in ("out", "summary", "summarize")},
           "command": "python pipelines/bench_loop_variants.py " + " ".join(sys.argv[1:]),
           "commit": git_commit(Path(__file__).parent), "versions": versions(), "runs": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for v in args.variants:
            r = one_run(seed, v, args)
            raw["runs"].append(r)
            print(json.dumps({k: r[k] for k in ("seed", "variant", "filtered", "filtered_correct", "labeled")}
                             | {"to_0.95": labels_to(r["curve"], 0.95), "final_test": round(r["curve"][-1][2], 4)}),
                  flush=True)
            args.out.write_text(json.dumps(raw, indent=1))
    if args.summary:
        args.summary.write_text(json.dumps(summary(raw), indent=1) + "\n")


if __name__ == "__main__":
    main()
