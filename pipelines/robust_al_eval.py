"""The robust-active-learning evaluation (paper section IV): labels needed to reach the target accuracy, per
method and threat scenario, repeated, in parallel processes or on a Ray cluster.

    python pipelines/robust_al_eval.py q1 configs/eval-cifar2.yaml --profile quick   # no attack (Table III)
    python pipelines/robust_al_eval.py q2 configs/eval-cifar2.yaml --scenario malicious  # mislabeling (Table IV)
    python pipelines/robust_al_eval.py q3 configs/eval-cifar2.yaml                   # clean-label poisoning (Table V)
    python pipelines/robust_al_eval.py q1 configs/eval-cifar2.yaml --ray-address auto  # on a Ray cluster
    robust-al report results/robust_al_eval                                            # HTML page + PNGs

Target accuracy = test accuracy of the same network trained on every training item with its clean label (the
paper's 89%). Each repetition is a whole campaign in its own run folder (seed = repetition, shared by all
methods, so methods are compared on the same draws); a repeated command resumes or re-reads finished folders,
and a crashed repetition never touches the others. Results are aggregated from the folders afterwards.

Methods (``--methods``):
  proposed          max-min per-cluster queries + trust-weighted DS + trust routing + secured check with
                    re-examination + ART adversarial augmentation (the config as written)
  random            the paper's baseline: random sampling, majority vote, no routing, no secured check, no
                    augmentation
  uncertainty       entropy sampling inside the same defended loop as 'proposed' (only the query differs)
  coreset           greedy k-center (core-set) inside the same defended loop
  proposed-norouting  'proposed' without trust-based routing (untrusted labels keep full weight), to show
                    what routing buys under an attack
  proposed-pure-maxmin  'proposed' with the paper's pure farthest-first max-min (query.typicality = 0,
                    query.uncertainty = 0)
  proposed-nomargin  'proposed' without the margin-uncertainty weight (query.uncertainty = 0)
  proposed-model-vote  'proposed' with F_{i-1}'s prediction voting on labels (aggregation.model_as_worker)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from robust_al.evaluate.experiment import (METHODS, PROFILES, QUESTIONS, SCENARIOS, malicious_pair, paired_table,
                                           poison_tables, run_all, run_overrides, scenario_overrides, table,
                                           target_accuracy)
from robust_al.report.schema import write_summary
from robust_al.versions import git_commit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("question", choices=sorted(QUESTIONS))
    ap.add_argument("config")
    ap.add_argument("--scenario", choices=SCENARIOS,
                    help="threat scenario: 'config' keeps the config's crowd (q1, q3 default); the others put 11 "
                         "simulated labelers with one attacker (or inject the attacker next to a replayed crowd); "
                         "q2 default: malicious")
    ap.add_argument("--methods", nargs="+", choices=sorted(METHODS))
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick", help="quick = 3, full = 30 repetitions")
    ap.add_argument("--reps", type=int, help="repetitions (overrides --profile)")
    ap.add_argument("--workers", type=int, default=2, help="parallel repetitions on this machine")
    ap.add_argument("--ray-address", help="run repetitions as Ray tasks: 'auto', ray://host:10001, or 'local'")
    ap.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs a Ray task asks for")
    ap.add_argument("--malicious", nargs=2, type=int, metavar=("TARGET", "TO"),
                    help="the malicious labeler labels class TARGET as TO (default: the config's malicious "
                         "labeler's classes, else 0 -> 1)")
    ap.add_argument("--target", type=float, help="default: full-data clean-label accuracy")
    ap.add_argument("--fractions", nargs="*", type=float, default=[0.97],
                    help="also tabulate labels to reach these fractions of the target")
    ap.add_argument("--set", action="append", default=[], help="config overrides, e.g. stop.budget=1500")
    ap.add_argument("--out", default="results/robust_al_eval")
    args = ap.parse_args()
    args.scenario = args.scenario or {"q1": "config", "q2": "malicious", "q3": "config"}[args.question]
    methods = args.methods or QUESTIONS[args.question]
    reps = args.reps or PROFILES[args.profile]
    from robust_al.config import load_config

    cfg = load_config(args.config, args.set)
    if args.scenario == "malicious":
        args.malicious = tuple(args.malicious) if args.malicious else malicious_pair(cfg)
        print(f"scenario malicious: one labeler turns class {args.malicious[0]} into {args.malicious[1]}", flush=True)
    print(f"crowd: {scenario_overrides(cfg, args.scenario, args.malicious)[1]}", flush=True)
    out = Path(args.out) / cfg.name / f"{args.question}-{args.scenario}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.target is None:  # cached per config + overrides: every repetition and method shares it
        key = hashlib.sha256(json.dumps([Path(args.config).read_text(), args.set]).encode()).hexdigest()[:16]
        cache = Path(args.out) / cfg.name / f"target-{key}.json"
        if not cache.exists():
            cache.write_text(json.dumps({"target": target_accuracy(args.config, args.set)}))
        args.target = json.loads(cache.read_text())["target"]
    print(f"target test accuracy: {args.target:.4f}; {reps} repetitions x {len(methods)} methods", flush=True)
    jobs = [{"config": args.config, "overrides": run_overrides(args, m), "method": m, "rep": r, "seed": r,
             "target": args.target, "poison": args.question == "q3", "run_dir": str(out / f"{m}-rep{r}")}
            for r in range(reps) for m in methods]
    failures: list[dict] = []
    results = run_all(jobs, args.workers, args.ray_address, args.gpus_per_run, failures)
    for f in failures:
        print(f"FAILED {f['run_dir']}: {f['error']} (run the same command again to resume it)")
    tab = table(results, methods, args.target)
    extra = {f"Labels to reach {f:g} x target = {f * args.target:.4f}": table(results, methods, f * args.target)
             for f in args.fractions}
    if "random" in methods:
        extra.update({f"Paired by seed, against random, labels to reach {f:g} x target":
                      paired_table(results, methods, f * args.target) for f in args.fractions})
    for m in methods:  # the poison filter's cost in labels: each -filter method against its method
        base = m.removesuffix("-filter")
        if m.endswith("-filter") and base in methods:
            extra.update({f"Paired by seed, {m} against {base}, labels to reach {f:g} x target":
                          paired_table(results, [base, m], f * args.target, baseline=base)
                          for f in (1.0, *args.fractions)})
    extra.update(poison_tables(results, methods) if args.question == "q3" else {})
    print(tab)
    for name, t in extra.items():
        print(f"\n{name}\n{t}")
    from robust_al.campaign import versions

    wall = time.time() - t0
    (out / "table.md").write_text(f"# {args.question.upper()} ({args.scenario}): labels to reach {args.target:.4f}"
                                  f"\n\n{tab}\n" + "".join(f"\n## {k}\n\n{v}\n" for k, v in extra.items()))
    write_summary(out / "summary.json", {
        "question": args.question.upper(), "scenario": args.scenario, "dataset": cfg.data.name,
        "config": args.config, "overrides": args.set, "target": args.target, "seeds": list(range(reps)),
        "methods": methods, "method_overrides": {m: METHODS[m] for m in methods}, "versions": versions(),
        "commit": git_commit(Path(__file__).resolve().parent),
        "wall_seconds": wall, "failures": failures, "workers": args.workers, "ray_address": args.ray_address,
        "table": tab, "extra_tables": extra})
    print(f"wall time {wall:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
