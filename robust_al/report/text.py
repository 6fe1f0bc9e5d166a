"""Plain-text views of a run directory (they read the store only; nothing is recomputed)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from robust_al.store import RunStore


def _open(run_dir: Path) -> RunStore:
    return RunStore(run_dir, create=False)


def trust_table(store: RunStore) -> pd.DataFrame:
    """One row per labeler (least trusted first): worker, name (Label Studio display name, '' if unknown),
    trust (its latest value; the configured initial one before any event), lower/upper (credible interval of
    its accuracy, shifted by cuts; empty before it is scored), labels given, trust events, routed_out (routed
    out by trust while routing is on: it gets no more queries), flags (count) and flag_reasons.
    ``robust-al trust`` prints it; exports write it. Counts are aggregated in SQL, so it stays fast with
    millions of stored answers."""
    from robust_al.trust.ledger import TrustLedger

    full = store.get_meta("config", {})
    cfg = full.get("trust", {})
    initial = cfg.get("initial", 0.9)
    ledger = TrustLedger.configured([], store, cfg, full.get("annotators", {}).get("k", 1))
    summary = store.trust_summary().set_index("worker")
    labels = store.labels_per_worker()
    flags = store.flags()
    names = store.get_meta("ls_users", {}) or {}
    rows = []
    for w in sorted(set(summary.index) | set(labels.index)):
        t = float(summary["trust"].get(w, initial))
        mine = flags[flags["worker"] == w]["reason"].tolist() if not flags.empty else []
        lo, hi = ledger.interval(w) if w in ledger.bounds else (None, None)
        rows.append({"worker": w, "name": names.get(w, ""), "trust": t, "lower": lo, "upper": hi,
                     "labels": int(labels.get(w, 0)), "events": int(summary["events"].get(w, 0)),
                     "routed_out": not ledger.allowed(w),
                     "flags": len(mine), "flag_reasons": "; ".join(dict.fromkeys(mine))})
    cols = ["worker", "name", "trust", "lower", "upper", "labels", "events", "routed_out", "flags", "flag_reasons"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["trust", "worker"], kind="stable").reset_index(drop=True)


def status_text(run_dir: Path) -> str:
    store = _open(run_dir)
    cfg = store.get_meta("config", {})
    rows = store.metrics()
    n_ann = store.count_annotations()
    lines = [f"campaign {cfg.get('name')!r} seed {store.get_meta('seed')} in {run_dir}",
             f"stored annotations: {n_ann} (budget {cfg.get('stop', {}).get('budget')})",
             f"{'iter':>4} {'labels':>6} {'items':>5} {'S acc':>6} {'test':>6} {'min-pert':>8}  check"]
    for m in rows:
        pert = m.get("mean_min_perturbation")
        lines.append(f"{m['iteration']:>4} {m['labels_used']:>6} {m['labeled_items']:>5} {m['secured_acc']:>6.3f} "
                     f"{m['test_acc']:>6.3f} {'-' if pert is None else f'{pert:.3f}':>8}  {m.get('secured_check')}")
    last = rows[-1] if rows else {}
    done = store.last_annotated_iteration()
    if last.get("stop"):
        lines.append(f"finished: {last['stop']}")
    elif done is not None and (not rows or done > rows[-1]["iteration"]):
        lines.append(f"iteration {done} did not complete: resume with `robust-al run --resume {run_dir}`")
    else:
        lines.append("not finished")
    late = store.late_answers()
    if late:
        lines.append(f"{late} answers arrived after the batch they were asked for had closed (stored; used from "
                     "the next training on)")
    return "\n".join(lines)


def trust_text(run_dir: Path) -> str:
    store = _open(run_dir)
    table = trust_table(store)
    if table.empty:
        return "no trust events yet"
    width = max(16, int(table["worker"].str.len().max()) + 1)
    named = table["name"].astype(bool).any()  # a Label Studio crowd: show who each labeler is
    nwidth = max(4, int(table["name"].str.len().max()) + 1) if named else 0
    head = f"{'labeler':<{width}} " + (f"{'name':<{nwidth}} " if named else "")
    lines = [head + f"{'trust':>6} {'90% interval':>13} {'labels':>6} {'events':>6}  flagged"]
    for r in table.itertuples():
        iv = "" if pd.isna(r.lower) else f"[{r.lower:.2f}, {r.upper:.2f}]"
        lines.append(f"{r.worker:<{width}} " + (f"{r.name:<{nwidth}} " if named else "")
                     + f"{r.trust:>6.3f} {iv:>13} {r.labels:>6} {r.events:>6}  {'yes' if r.flags else ''}"
                     + ("  routed out" if r.routed_out else ""))
    return "\n".join(lines)
