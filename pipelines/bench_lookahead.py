"""Benchmark (not a test): do people wait for the model? The synchronous loop (``annotators.lookahead: 0``)
against the default that queues the next batch ahead (``1``), on a real Label Studio server.

For each seed and mode, the commands a team types: ``robust-al labelstudio simulate CONFIG`` (simulated people,
each giving one answer every ``--seconds-per-answer`` seconds: four honest, one who labels every 1 as a 7) and
``robust-al run CONFIG``, on the embedded digits. Prints, per run:
  - the seconds a labeler had no task between two tasks, per batch after the first (mean over labelers; the
    wait before the first task and after the last are not counted), and the longest single wait;
  - labels to the target: the labels in the model (``labels_in_model``; the batch ahead's answers are not in
    it) when S accuracy first reached ``--target`` (the campaigns run to their budget, so that the malicious
    person has the labels it takes to be routed out), and the labels paid in all;
  - whether the malicious person ended routed out, and their trust.

    python pipelines/bench_lookahead.py --out results/bench-lookahead.json     # 5 seeds, ~30 min on 2 cores

Writes the per-run figures, the config, the commit and the versions with ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from robust_al.labelstudio import server as ls_server
from robust_al.store import RunStore
from robust_al.versions import CAMPAIGN_MODULES, git_commit, versions

TOKEN_ENV = "ROBUST_AL_BENCH_TOKEN"


def config(url: str, seed: int, lookahead: int, args: argparse.Namespace) -> dict:
    return {
        "name": f"bench-s{seed}-la{lookahead}", "seed": seed, "data": {"name": "digits"},
        "holdout": {"size": args.holdout},
        "annotators": {"kind": "labelstudio", "k": 3, "lookahead": lookahead,
                       "labelers": [{"kind": "benign", "count": 4, "pr": 0.05},
                                    {"kind": "malicious", "count": 1, "pr": 0.05, "target": 1, "to": 7}],
                       "labelstudio": {"url": url, "token_env": TOKEN_ENV, "poll_seconds": 1.0,
                                       "title": "bench"}},
        "query": {"strategy": "maxmin", "initial": args.batch, "batch": args.batch, "n_clusters": 5},
        "augment": {"attacks": ["deepfool"], "noise_copies": 1},
        "model": {"epochs": args.epochs, "hidden": [128]},
        "stop": {"budget": args.budget, "max_iterations": 100},
    }


def store_ahead_taken_back(run_dir: Path) -> int:
    """Items of batches queued ahead that were taken back when settled (not in their iteration's batch)."""
    store = RunStore(run_dir)
    try:
        out = 0
        for it in range(1, (store.last_iteration() or 0) + 2):
            ahead, final = store.batch(it, "ahead"), store.batch(it, "query")
            if ahead is not None:
                out += int((~np.isin(ahead, final if final is not None else [])).sum())
        return out
    finally:
        store.close()


def one_run(url: str, token: str, seed: int, lookahead: int, root: Path, args) -> dict:
    cfg = config(url, seed, lookahead, args)
    path = root / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, TOKEN_ENV: token}
    cli = [sys.executable, "-m", "robust_al.cli"]
    report = root / f"{cfg['name']}-users.json"
    users = subprocess.Popen([*cli, "labelstudio", "simulate", str(path), "--run-dir", str(root / cfg["name"]),
                              "--seconds-per-answer", str(args.seconds_per_answer), "--report", str(report)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(8)  # the users sign up before the first batch is posted
        t0 = time.time()
        run = subprocess.run([*cli, "run", str(path), "--run-dir", str(root / cfg["name"]), "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=3600)
        wall = time.time() - t0
    finally:
        users.send_signal(signal.SIGINT)
        said, _ = users.communicate(timeout=120)
    if not report.exists():
        raise SystemExit(f"the simulated users wrote no report:\n{said[-3000:]}")
    if run.returncode != 0:
        raise SystemExit(f"{cfg['name']} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    waits = json.loads(report.read_text())
    store = RunStore(root / cfg["name"])
    metrics = store.metrics()
    store.close()
    n_batches = len(metrics)
    per_user = {w: sum(b - a for a, b in g) for w, g in waits["idle_gaps"].items()}
    longest = max((b - a for g in waits["idle_gaps"].values() for a, b in g), default=0.0)
    reached = [m for m in metrics if m["secured_acc"] >= args.target]
    last = metrics[-1]
    malicious = waits["users"]["malicious0"]
    return {
        "seed": seed, "lookahead": lookahead, "batches": n_batches, "wall_s": wall,
        "idle_per_batch_s": statistics.mean(per_user.values()) / max(n_batches - 1, 1),
        "idle_longest_s": longest,
        "labels_to_target": (reached[0].get("labels_in_model", reached[0]["labels_used"]) if reached else None),
        "labels_paid": last["labels_used"], "stop": last["stop"],
        "kept_ahead": sum(m.get("ahead_items", 0) for m in metrics) - store_ahead_taken_back(root / cfg["name"]),
        "malicious_routed_out": malicious in last["routed_out"],
        "malicious_trust": last["trust"].get(malicious), "posted": waits["posted"],
        "seconds_per_iteration": statistics.mean(m["seconds"] for m in metrics),
    }


def summary(raw: dict) -> dict:
    """The committed summary of one benchmark run (``docs/results/bench-lookahead.json``)."""
    a = raw["args"]
    rows = []
    for r in raw["runs"]:
        rows.append([r["seed"], "queued ahead" if r["lookahead"] else "synchronous", r["batches"],
                     round(r["idle_per_batch_s"], 2), round(r["idle_longest_s"], 2),
                     r["labels_to_target"] if r["labels_to_target"] is not None else "not reached",
                     r["labels_paid"], "yes" if r["malicious_routed_out"] else "no", round(r["malicious_trust"], 3),
                     round(r["seconds_per_iteration"], 1), round(r["wall_s"])])
    means = []
    for la, name in ((0, "synchronous"), (1, "queued ahead")):
        mine = [r for r in raw["runs"] if r["lookahead"] == la]
        reached = [r["labels_to_target"] for r in mine if r["labels_to_target"] is not None]
        means.append([name, len(mine), round(statistics.mean(r["idle_per_batch_s"] for r in mine), 2),
                      round(max(r["idle_per_batch_s"] for r in mine), 2),
                      round(max(r["idle_longest_s"] for r in mine), 2),
                      round(statistics.mean(reached), 1) if reached else "not reached", len(reached),
                      sum(r["malicious_routed_out"] for r in mine)])
    return {
        "page": "performance", "order": 6, "title": "Label Studio: do people wait for the model?",
        "setup": (f"`pipelines/bench_lookahead.py` on a real Label Studio server: the embedded digits, batches of "
                  f"{a['batch']} items, k = 3, S of {a['holdout']} items, an MLP ({a['epochs']} epochs) with DeepFool "
                  f"augmentation, a budget of {a['budget']} labels; five simulated people (`robust-al labelstudio "
                  f"simulate`, one answer every {a['seconds_per_answer']} s each; one labels every 1 as a 7). "
                  "Per seed, the synchronous loop (`annotators.lookahead: 0`, the default) and `1` (a batch queued "
                  "ahead, settled when the model is ready). Idle: seconds a person had no task between two tasks, "
                  "per batch after the first, mean over the five; labels to target: labels in the model when S "
                  f"accuracy first reached {a['target']}."),
        "command": [f"python pipelines/bench_lookahead.py --seeds {len({r['seed'] for r in raw['runs']})} "
                    f"--seconds-per-answer {a['seconds_per_answer']} --batch {a['batch']} --budget {a['budget']} "
                    f"--target {a['target']} --holdout {a['holdout']} --epochs {a['epochs']} "
                    "--out results/bench-lookahead.json --summary docs/results/bench-lookahead.json"],
        "config": {"file": None, "overrides": [], "data": "scikit-learn's digits (embedded)"},
        "seeds": sorted({r["seed"] for r in raw["runs"]}),
        "commit": raw["commit"], "versions": raw["versions"], "machine": "the 2-core development machine",
        "figures": [
            {"caption": "Per mode, over the seeds",
             "columns": ["mode", "runs", "idle s per batch (mean)", "idle s per batch (worst run)",
                         "longest wait (s)", "labels to target (mean)", "runs reaching it",
                         "malicious routed out"], "rows": means},
            {"caption": "Each run",
             "columns": ["seed", "mode", "batches", "idle s per batch", "longest wait (s)", "labels to target",
                         "labels paid", "malicious routed out", "malicious trust", "s per iteration", "wall (s)"],
             "rows": rows}],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seconds-per-answer", type=float, default=1.0, help="each simulated person's pace")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--target", type=float, default=0.95, help="the S accuracy whose labels are counted")
    ap.add_argument("--holdout", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--summary", type=Path, metavar="JSON", help="with --out: also write the documentation's summary "
                    "(docs/results/<name>.json, rendered by pipelines/make_docs.py)")
    ap.add_argument("--summarize", type=Path, metavar="OUT", help="only write --summary from an earlier --out")
    args = ap.parse_args()
    if args.summarize:
        raw = json.loads(args.summarize.read_text())
        args.summary.write_text(json.dumps(summary(raw), indent=1) + "\n")
        return
    if not ls_server.installed():
        raise SystemExit(f"label-studio is not installed at {ls_server.executable()}: "
                         "run `robust-al labelstudio install` first")
    base = Path(tempfile.mkdtemp(prefix="robust-al-lookahead-",
                                 dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    rows = []
    try:
        srv = ls_server.LabelStudioServer()
        srv.start(base / "labelstudio")
        print(f"server {srv.url}", flush=True)
        for seed in range(args.seeds):
            for lookahead in (0, 1):
                r = one_run(srv.url, srv.token, seed, lookahead, base, args)
                rows.append(r)
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}),
                      flush=True)
                if args.out:  # after each run: a long benchmark keeps what it measured
                    args.out.write_text(json.dumps({"runs": rows, "args": vars(args) | {"out": str(args.out)},
                                                    "config": config("URL", 0, 1, args),
                                                    "commit": git_commit(Path(__file__).parent),
                                                    "versions": versions(*CAMPAIGN_MODULES)},
                                                   indent=1, default=str))
        srv.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.out and args.summary:
        args.summary.write_text(json.dumps(summary(json.loads(args.out.read_text())), indent=1) + "\n")
    for la in (0, 1):
        mine = [r for r in rows if r["lookahead"] == la]
        reached = [r["labels_to_target"] for r in mine if r["labels_to_target"] is not None]
        print(f"lookahead {la}: idle per batch {statistics.mean(r['idle_per_batch_s'] for r in mine):.1f} s "
              f"(max {max(r['idle_per_batch_s'] for r in mine):.1f}), longest wait "
              f"{max(r['idle_longest_s'] for r in mine):.1f} s, labels to target "
              f"{statistics.mean(reached) if reached else float('nan'):.0f} ({len(reached)}/{len(mine)} reached), "
              f"malicious routed out {sum(r['malicious_routed_out'] for r in mine)}/{len(mine)}")


if __name__ == "__main__":
    main()
