"""Trust on real crowds (issue #12): label accuracy, Spearman(trust, true accuracy) and adversary AUC of robust-al
and the crowd-kit baselines, on every recorded crowd, clean and with injected adversaries.

For every crowd of ``robust_al.data.crowds.CROWDS`` (``--crowds``), clean and with adversaries of each kind
(spammer, flipper, colluding bloc; see ``robust_al/evaluate/trust.py``) at each rate (share of ALL workers),
for each seed: MV, Dawid-Skene, GLAD, MMSR (crowd-kit) and robust-al's ``assess_crowd`` without and with routing.
One unit = (crowd, kind, rate, seed); units run in ``--jobs`` processes. GLAD gets ``--glad-timeout`` CPU
seconds per fit, MMSR ``--mmsr-timeout`` (CPU time, so that a limit does not depend on how loaded the machine
is). The clean units run first; a crowd-kit method that ran past its limit on a clean crowd is skipped on that
crowd's units with adversaries (a note in results.csv and summary.md). A fit that fails (crowd-kit 1.4.2's MMSR
on the clean Zheng ``product`` crowd: "Skill value is missing"; on LabelMe with 40% spammers: "Encountered all
NA values") or times out later is noted in its row and in summary.md; failures depend on the data, so a method
that failed clean is still tried with adversaries.

Writes to --out: results.csv (one row per crowd, kind, rate, seed, method: label_accuracy, spearman, auc,
n_workers_ge10, seconds (wall) and cpu_seconds per fit, note, ...; rewritten after every unit), summary.md
(crowd counts, the acceptance checks PASS/FAIL with figures, mean-over-seeds tables of accuracy / AUC /
Spearman / seconds), config.json (arguments, seeds, versions, git commit, crowd counts, wall time),
accuracy_vs_rate.png (mean over crowds and seeds per kind, if matplotlib is installed); one progress line per
finished unit on stdout.

    python pipelines/trust_eval.py --quick --out results/trust_eval_quick          # smoke: 2 small crowds, 1 seed
    python pipelines/trust_eval.py --jobs 16 --out results/trust_eval                # the full grid
    python pipelines/trust_eval.py --crowds dog rte --seeds 5 --glad-timeout 120
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per unit process
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from robust_al.data.crowds import CROWDS, load_crowd  # noqa: E402
from robust_al.evaluate.bench import apply_profile  # noqa: E402
from robust_al.evaluate.trust import (  # noqa: E402
    ADVERSARY_KINDS,
    BASELINES,
    CLEAN,
    METHODS,
    ROBUST_AL,
    acceptance_checks,
    evaluate_crowd,
    markdown,
    mean_table,
)

RATES = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4]
QUICK = {"crowds": ["wsd", "labelme"], "seeds": 1, "rates": [0.0, 0.2]}
COLUMNS = ["crowd", "kind", "rate", "seed", "method", "label_accuracy", "spearman", "auc", "n_workers_ge10",
           "seconds", "cpu_seconds", "n_workers", "n_adversaries", "n_labels", "note"]


@functools.cache
def _crowd(name: str):
    return load_crowd(name)


def run_unit(unit: dict) -> list[dict]:
    """One (crowd, kind, rate, seed): every method (runs in a worker process; the crowd is read once per process)."""
    return evaluate_crowd(_crowd(unit["crowd"]), unit["kind"], unit["rate"], unit["seed"], unit["methods"],
                          timeouts=unit["timeouts"], skip=unit["skip"], robust_al_method=unit["robust_al_method"])


def _progress(done: int, total: int, rows: list[dict]) -> str:
    r0 = rows[0]
    parts = []
    for r in rows:
        if r["note"]:
            parts.append(f"{r['method']} {r['note'].split(':')[0]}")
        else:
            auc = f"/auc {r['auc']:.2f}" if np.isfinite(r["auc"]) else ""
            parts.append(f"{r['method']} {r['label_accuracy']:.3f}{auc} ({r['seconds']:.1f}s)")
    return (f"[{done}/{total}] {r0['crowd']} {r0['kind']} {100 * r0['rate']:g}% seed {r0['seed']} "
            f"({r0['n_workers']} workers, {r0['n_adversaries']} adversaries): " + "; ".join(parts))


def _run(units: list[dict], jobs: int, done: list[int], total: int, out: Path, all_rows: list[dict]) -> None:
    def finish(rows: list[dict]) -> None:
        done[0] += 1
        all_rows.extend(rows)
        print(_progress(done[0], total, rows), flush=True)
        pd.DataFrame(all_rows, columns=COLUMNS).to_csv(out / "results.csv", index=False)

    if jobs <= 1:
        for u in units:
            finish(run_unit(u))
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_unit, u) for u in units]
        for f in as_completed(futures):
            finish(f.result())


def _versions() -> dict:
    from robust_al.versions import git_commit, versions

    return {**versions("numpy", "pandas", "scipy", "sklearn", "crowdkit"),
            "git_commit": git_commit(Path(__file__).parent)}


def _plot(results: pd.DataFrame, out: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    kinds = [k for k in ADVERSARY_KINDS if k in set(results["kind"])]
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.6), squeeze=False, sharey=True)
    clean = results[results["kind"] == CLEAN]
    for ax, kind in zip(axes[0], kinds):
        sub = pd.concat([clean.assign(kind=kind), results[results["kind"] == kind]])
        # mean over seeds per crowd, then over crowds (every crowd weighs the same); a method that did not run
        # on every crowd (GLAD past its limit) is averaged over its crowds, and the legend says over how many
        per_crowd = sub.groupby(["method", "rate", "crowd"])["label_accuracy"].mean().dropna()
        n_crowds = sub["crowd"].nunique()
        for m in METHODS:
            if m in per_crowd.index.get_level_values(0):
                s = per_crowd[m].groupby(level="rate").mean()
                k = per_crowd[m].index.get_level_values("crowd").nunique()
                ax.plot(100 * s.index.to_numpy(), s.to_numpy(), marker="o",
                        label=m if k == n_crowds else f"{m} ({k}/{n_crowds} crowds)",
                        lw=2.2 if m in ROBUST_AL else 1.2, ls="-" if k == n_crowds else ":")
        ax.set_title(kind)
        ax.set_xlabel("adversaries (% of workers)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("label accuracy (mean over crowds)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    p = out / "accuracy_vs_rate.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _summary(results: pd.DataFrame, stats: list[dict], args, wall: float, notes: list[str]) -> str:
    lines = ["# Trust on real crowds (issue #12)\n",
             f"Crowds {', '.join(args.crowds)}; kinds {', '.join(args.kinds)}; rates "
             f"{', '.join(f'{100 * r:g}%' for r in args.rates)} (share of all workers); seeds {args.seeds}; "
             f"methods {', '.join(args.methods)}; GLAD time limit {args.glad_timeout:g} CPU s per fit; "
             f"wall time {wall:.0f} s with {args.jobs} process(es).\n",
             "## Crowds\n", markdown(pd.DataFrame(stats).drop(columns=["replayable"]), digits=1), "",
             "## Acceptance checks\n"]
    for c in acceptance_checks(results):
        lines.append(f"- **{c.verdict}** {c.name}: {c.figures}")
    lines.append("\nCells = (crowd, kind, rate); every number is a mean over seeds first. Spearman is over the "
                 "workers with >= 10 labels of known truth (real workers on a clean crowd, adversaries included "
                 "otherwise); AUC ranks adversaries by lowest trust.\n")
    if notes:
        lines += ["## Notes\n", *[f"- {n}" for n in notes], ""]
    for title, value, digits in (("Label accuracy", "label_accuracy", 3), ("Adversary AUC (by lowest trust)", "auc", 3),
                                 ("Spearman(trust, true accuracy)", "spearman", 3),
                                 ("Seconds per fit (wall)", "seconds", 1), ("CPU seconds per fit", "cpu_seconds", 1)):
        t = mean_table(results, value, args.methods).reset_index()
        t["rate"] = [f"{100 * r:g}%" for r in t["rate"]]
        lines += [f"## {title} (mean over seeds)\n", markdown(t, digits), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--crowds", nargs="+", choices=list(CROWDS), default=list(CROWDS))
    ap.add_argument("--kinds", nargs="+", choices=list(ADVERSARY_KINDS), default=list(ADVERSARY_KINDS))
    ap.add_argument("--rates", nargs="+", type=float, default=RATES,
                    help="adversaries as a share of all workers (0 = the clean crowd, run once per crowd and seed)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--glad-timeout", type=float, default=60.0, help="CPU seconds per GLAD fit (0 = no limit)")
    ap.add_argument("--mmsr-timeout", type=float, default=300.0, help="CPU seconds per MMSR fit (0 = no limit)")
    ap.add_argument("--robust-al-method", default="twds", help="assess_crowd's method")
    ap.add_argument("--jobs", type=int, default=1, help="parallel unit processes")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke profile: crowds {QUICK['crowds']}, {QUICK['seeds']} seed, rates {QUICK['rates']} "
                         "(explicit --crowds/--seeds/--rates win)")
    ap.add_argument("--out", type=Path, default=Path("results/trust_eval"))
    ap.add_argument("--summarize", nargs="+", type=Path, metavar="RESULTS_CSV",
                    help="run nothing: write summary.md, the figure and the checks of results.csv files from "
                         "earlier runs (e.g. a grid split over machines) into --out; the other options describe them")
    args = ap.parse_args(argv)
    if args.quick:
        apply_profile(args, QUICK, argv)
    if any(not 0 <= r < 1 for r in args.rates):
        ap.error(f"--rates must lie in [0, 1), got {args.rates}")
    if any(m in ROBUST_AL for m in args.methods) and importlib.util.find_spec("robust_al.trust.assess") is None:
        ap.error("robust_al.trust.assess (assess_crowd) is not in this checkout; merge main or leave out "
                 f"--methods {' '.join(ROBUST_AL)}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.summarize:
        results = pd.concat([pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in args.summarize],
                            ignore_index=True).drop_duplicates(["crowd", "kind", "rate", "seed", "method"], keep="last")
        results["note"] = results["note"].fillna("").astype(str)
        args.crowds = [c for c in args.crowds if c in set(results["crowd"])]
        results.to_csv(args.out / "results.csv", index=False)
        notes = [f"summarised from {', '.join(map(str, args.summarize))}"]
        (args.out / "summary.md").write_text(_summary(results, [_crowd(c).stats() for c in args.crowds], args,
                                                      float("nan"), notes))
        _plot(results, args.out)
        for c in acceptance_checks(results):
            print(f"{c.verdict} {c.name}: {c.figures}")
        return

    stats = [_crowd(c).stats() for c in args.crowds]  # also fails early on a missing data set
    timeouts = {"glad": args.glad_timeout, "mmsr": args.mmsr_timeout}
    seeds = list(range(args.seeds))
    rates = sorted(set(args.rates))

    def unit(crowd: str, kind: str, rate: float, seed: int, skip: dict | None = None) -> dict:
        return {"crowd": crowd, "kind": kind, "rate": rate, "seed": seed, "methods": list(args.methods),
                "timeouts": timeouts, "skip": skip or {}, "robust_al_method": args.robust_al_method}

    clean_units = [unit(c, CLEAN, 0.0, s) for c in args.crowds for s in seeds] if 0.0 in rates else []
    attacked = [(c, k, r, s) for c in args.crowds for k in args.kinds for r in rates if r > 0 for s in seeds]
    total = len(clean_units) + len(attacked)
    print(f"{total} units ({len(clean_units)} clean first), {len(args.methods)} methods, {args.jobs} process(es); "
          f"writing to {args.out}", flush=True)
    rows: list[dict] = []
    done = [0]
    notes: list[str] = []
    _run(clean_units, args.jobs, done, total, args.out, rows)
    skip: dict[str, dict] = {}  # a crowd-kit method that timed out clean is not tried with adversaries
    for r in rows:
        if r["method"] in BASELINES and r["note"].startswith("timeout") and r["method"] not in skip.get(r["crowd"], {}):
            skip.setdefault(r["crowd"], {})[r["method"]] = f"{r['note']} on the clean crowd"
    for c, s in skip.items():
        notes += [f"{c}: {m} skipped with adversaries ({why})" for m, why in s.items()]
    _run([unit(c, k, r, s, skip.get(c)) for c, k, r, s in attacked], args.jobs, done, total, args.out, rows)

    results = pd.DataFrame(rows, columns=COLUMNS).sort_values(["crowd", "kind", "rate", "seed", "method"],
                                                             key=lambda col: col.map(
                                                                 {m: i for i, m in enumerate(METHODS)})
                                                             if col.name == "method" else col)
    results.to_csv(args.out / "results.csv", index=False)
    later = results[results["note"].str.startswith(("timeout", "error"))]
    for (c, m, note), g in later.groupby(["crowd", "method", "note"]):
        notes.append(f"{c} / {m}: {note} ({len(g)} unit(s))")
    wall = time.time() - t0
    (args.out / "summary.md").write_text(_summary(results, stats, args, wall, notes))
    png = _plot(results, args.out)
    (args.out / "config.json").write_text(json.dumps(
        {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "seeds": seeds,
         "injection_seed": "numpy default_rng([seed, kind index in ADVERSARY_KINDS, round(rate * 1000)])",
         "methods_random_state": "seed", "versions": _versions(), "crowds": stats, "wall_seconds": wall,
         "units": total, "notes": notes, "figure": png.name if png else None}, indent=1, default=str))
    for c in acceptance_checks(results):
        print(f"{c.verdict} {c.name}: {c.figures}")
    print(f"wall time {wall:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
