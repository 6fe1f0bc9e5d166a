"""Plain-text views of a run directory (they read the store only; nothing is recomputed)."""
from __future__ import annotations

from pathlib import Path

from robust_al.store import RunStore


def _open(run_dir: Path) -> RunStore:
    return RunStore(run_dir, create=False)


def status_text(run_dir: Path) -> str:
    store = _open(run_dir)
    cfg = store.get_meta("config", {})
    rows = store.metrics()
    n_ann = store.db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
    lines = [f"campaign {cfg.get('name')!r} seed {store.get_meta('seed')} in {run_dir}",
             f"stored annotations: {n_ann} (budget {cfg.get('stop', {}).get('budget')})",
             f"{'iter':>4} {'labels':>6} {'items':>5} {'S acc':>6} {'test':>6} {'min-pert':>8}  check"]
    for m in rows:
        pert = m.get("mean_min_perturbation")
        lines.append(f"{m['iteration']:>4} {m['labels_used']:>6} {m['labeled_items']:>5} {m['secured_acc']:>6.3f} "
                     f"{m['test_acc']:>6.3f} {'-' if pert is None else f'{pert:.3f}':>8}  {m.get('secured_check')}")
    last = rows[-1] if rows else {}
    done = store.db.execute("SELECT MAX(iteration) FROM annotations").fetchone()[0]
    if last.get("stop"):
        lines.append(f"finished: {last['stop']}")
    elif done is not None and (not rows or done > rows[-1]["iteration"]):
        lines.append(f"iteration {done} did not complete: resume with `robust-al run --resume {run_dir}`")
    else:
        lines.append("not finished")
    return "\n".join(lines)


def trust_text(run_dir: Path) -> str:
    store = _open(run_dir)
    table = store.trust_summary()
    if table.empty:
        return "no trust events yet"
    lines = [f"{'labeler':<16} {'trust':>6} {'labels':>6} {'events':>6}  flagged"]
    for row in table.itertuples():
        lines.append(f"{row.worker:<16} {row.trust:>6.3f} {int(row.labels):>6} {int(row.events):>6}  "
                     f"{'yes' if row.flags else ''}")
    return "\n".join(lines)
