"""Does a malicious labeler end least trusted, and what does it cost? Same campaign with and without it.

For each seed, runs CONFIG as is and with its malicious labelers removed (same seed, same everything else), and
reports: the malicious labelers' final trust vs the lowest honest trust, and the final test accuracy of both
runs. Writes config, seeds, versions and the table next to its outputs.

    python pipelines/malicious_effect.py configs/digits.yaml --seeds 0 1 2 3 4
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from robust_al.campaign import Campaign, versions
from robust_al.config import load_config


def run(cfg, run_dir: Path) -> dict:
    res = Campaign.create(cfg, run_dir, echo=None).run(progress=False)
    return res.metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default="results/malicious_effect")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'seed':>4} {'malicious trust':>16} {'lowest honest':>14} {'lowest?':>8} {'acc with':>9} "
          f"{'acc without':>12} {'diff':>6} {'secs':>6}")
    for seed in args.seeds:
        cfg = load_config(args.config, [*args.set, f"seed={seed}"])
        clean = cfg.model_copy(deep=True)
        clean.annotators.labelers = [lab for lab in clean.annotators.labelers if lab.kind != "malicious"]
        t = time.time()
        m_with = run(cfg, out / f"seed{seed}-with")
        m_without = run(clean, out / f"seed{seed}-without")
        trust = m_with["trust"]
        mal = {w: v for w, v in trust.items() if w.startswith("malicious")}
        honest = {w: v for w, v in trust.items() if not w.startswith("malicious")}
        row = {"seed": seed, "malicious_trust": max(mal.values()), "lowest_honest_trust": min(honest.values()),
               "test_acc_with": m_with["test_acc"], "test_acc_without": m_without["test_acc"],
               "labels_with": m_with["labels_used"], "labels_without": m_without["labels_used"],
               "seconds": time.time() - t}
        row["malicious_lowest"] = row["malicious_trust"] < row["lowest_honest_trust"]
        row["acc_diff"] = row["test_acc_without"] - row["test_acc_with"]
        rows.append(row)
        print(f"{seed:>4} {row['malicious_trust']:>16.3f} {row['lowest_honest_trust']:>14.3f} "
              f"{row['malicious_lowest']!s:>8} {row['test_acc_with']:>9.3f} {row['test_acc_without']:>12.3f} "
              f"{row['acc_diff']:>6.3f} {row['seconds']:>6.0f}", flush=True)
    diffs = np.array([r["acc_diff"] for r in rows])
    summary = {"malicious_lowest": f"{sum(r['malicious_lowest'] for r in rows)}/{len(rows)}",
               "acc_diff_mean": float(diffs.mean()), "acc_diff_max": float(diffs.max())}
    print(f"malicious lowest in {summary['malicious_lowest']} seeds; accuracy cost mean "
          f"{100 * summary['acc_diff_mean']:.2f} points, max {100 * summary['acc_diff_max']:.2f}")
    (out / "malicious_effect.json").write_text(json.dumps(
        {"config": load_config(args.config, args.set).model_dump(mode="json"), "seeds": args.seeds,
         "versions": versions(), "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
