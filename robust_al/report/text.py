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
    flagged = set(flags["worker"]) if not flags.empty else set()  # e.g. an impersonator with no answer stored
    for w in sorted(set(summary.index) | set(labels.index) | flagged):
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


def metric_text(x, spec: str = ".3f") -> str:
    """A metric, or 'n/a' where there is none (an attached Label Studio project has no test split: NaN)."""
    try:
        return "n/a" if x is None or x != x else format(float(x), spec)
    except (TypeError, ValueError):
        return "n/a"


def waiting_for(store: RunStore) -> list[tuple[int, str, int, int]]:
    """(iteration, purpose, project, answers still missing) per open batch of a Label Studio campaign, from
    the store: a batch's tasks (``ls_tasks``), the answers each task already holds, and how many each takes
    (the project key ``query:k`` / ``reexam:h``)."""
    per_task = {int(pid): int(str(key).split(":")[1]) for key, pid in (store.get_meta("ls_projects", {}) or {}).items()}
    tasks = store.ls_tasks()
    out = []
    for iteration, purpose, items in store.open_batches():
        if purpose == "ahead":  # queued ahead, not settled yet (annotators.lookahead): its tasks are query tasks
            purpose = "query"
        mine = tasks[(tasks["iteration"] == iteration) & (tasks["purpose"] == purpose)
                     & tasks["item_id"].isin(items.tolist())]
        for project in sorted(mine["project"].astype(int).unique()):
            want = set(mine.loc[mine["project"] == project, "item_id"].astype(int))
            held: dict[int, int] = dict.fromkeys(want, 0)
            for item, *_ in store.external_answers(f"{project}:"):
                if item in held:
                    held[item] += 1
            n = per_task.get(int(project), 1)
            out.append((iteration, purpose, int(project), sum(max(0, n - h) for h in held.values())))
    return out


def status_text(run_dir: Path) -> str:
    from robust_al.store.lock import RunLock

    store = _open(run_dir)
    cfg = store.get_meta("config", {})
    rows = store.metrics()
    n_ann = store.count_annotations()
    lines = [f"campaign {cfg.get('name')!r} seed {store.get_meta('seed')} in {run_dir}",
             f"stored annotations: {n_ann} (budget {cfg.get('stop', {}).get('budget')})",
             f"{'iter':>4} {'labels':>6} {'items':>5} {'S acc':>6} {'test':>6} {'min-pert':>8}  check"]
    for m in rows:
        pert = m.get("mean_min_perturbation")
        lines.append(f"{m['iteration']:>4} {m['labels_used']:>6} {m['labeled_items']:>5} "
                     f"{metric_text(m['secured_acc']):>6} {metric_text(m['test_acc']):>6} "
                     f"{'-' if pert is None else f'{pert:.3f}':>8}  {m.get('secured_check')}")
    last = rows[-1] if rows else {}
    done = store.last_annotated_iteration()
    holder = None if last.get("stop") else RunLock(run_dir).holder()  # the flock dies with its process
    ann_cfg = cfg.get("annotators", {}) or {}
    url = (ann_cfg.get("labelstudio") or {}).get("url") if ann_cfg.get("kind") == "labelstudio" else None
    resume = f"resume with `robust-al run --resume {run_dir}`" + (
        " (if Label Studio moved: --set annotators.labelstudio.url=...)" if url else "")
    if last.get("stop"):
        lines.append(f"finished: {last['stop']}")
    elif holder is not None:
        waits = waiting_for(store) if url else []
        current = min((it for it, *_ in waits), default=None)
        for iteration, purpose, project, missing in waits:
            if current is not None and iteration > current:  # annotators.lookahead: labeled while F_i trains
                lines.append(f"  and the next batch (iteration {iteration}, {purpose}) is queued behind it: "
                             f"{missing} answers to give in project {project}")
                continue
            lines.append(f"running (process {holder}): iteration {iteration} ({purpose}) is waiting for {missing} "
                         f"answers in project {project} (Label Studio at {url})")
        if not waits:
            lines.append(f"running (process {holder}): iteration {len(rows)} in progress")
    elif done is not None and (not rows or done > rows[-1]["iteration"]):
        lines.append(f"iteration {done} did not complete and no process is running it (killed or stopped): {resume}")
    else:
        lines.append(f"not finished and no process is running it: {resume}")
    late = store.late_answers()
    if late:
        lines.append(f"{late} answers arrived after the batch they were asked for had closed (stored; used from "
                     "the next training on)")
    return "\n".join(lines)


def below_interval_reason(ledger, events: pd.DataFrame, worker: str) -> str:
    """Why a labeler's trust lies below its 90 % interval, from its trust events: the interval is the estimate
    of its accuracy over all its labels (shifted by its cuts), while the trust is capped at the upper bound of a
    class it labels confidently badly (the worst-class term of its accuracy events), and cut by re-examinations
    that contradicted it (the paper's Fig. 3) or set by an audit."""
    from robust_al.trust.ledger import AGREEMENT

    mine = events[events["worker"] == worker]
    reasons = mine["reason"].astype(str)
    parts = []
    score = ledger.score.get(worker, (ledger.initial, 0.0))[0]
    bounds = ledger.bounds.get(worker)
    if bounds is not None and score < bounds[0] - 1e-9:
        acc = reasons[reasons.str.startswith(AGREEMENT)]
        worst = acc.iloc[-1].split("worst class ", 1)[-1].split(",")[0].split(" <= ") if len(acc) else []
        parts.append(f"capped by its worst class {worst[0]}, right at most {worst[1]} of the time" if len(worst) == 2
                     else f"capped at {score:.2f} by its worst class")
    cut = mine[reasons.str.startswith("contradicted")]
    if len(cut):
        parts.append(f"{len(cut)} re-examination cut(s) {cut['delta'].sum():+.2f} (Fig. 3)")
    audit = reasons[reasons.str.startswith("audit")]
    if len(audit):
        parts.append(audit.iloc[-1])
    return "below its interval: " + ("; ".join(parts) if parts else "cuts beyond its interval")


def trust_text(run_dir: Path) -> str:
    from robust_al.trust.ledger import TrustLedger

    store = _open(run_dir)
    table = trust_table(store)
    if table.empty:
        return "no trust events yet"
    width = max(16, int(table["worker"].str.len().max()) + 1)
    named = table["name"].astype(bool).any()  # a Label Studio crowd: show who each labeler is
    nwidth = max(4, int(table["name"].str.len().max()) + 1) if named else 0
    head = f"{'labeler':<{width}} " + (f"{'name':<{nwidth}} " if named else "")
    lines = [head + f"{'trust':>6} {'90% interval':>13} {'labels':>6} {'events':>6}  flagged"]
    below = table[table["lower"].notna() & (table["trust"] < table["lower"].astype(float) - 0.005)]
    ledger, events = None, pd.DataFrame()
    if len(below):  # explained in the same line: the events say why
        full = store.get_meta("config", {})
        ledger = TrustLedger.configured([], store, full.get("trust", {}), full.get("annotators", {}).get("k", 1))
        events = store.trust_events()
    for r in table.itertuples():
        iv = "" if pd.isna(r.lower) else f"[{r.lower:.2f}, {r.upper:.2f}]"
        why = f"  ({below_interval_reason(ledger, events, r.worker)})" if r.worker in set(below["worker"]) else ""
        lines.append(f"{r.worker:<{width}} " + (f"{r.name:<{nwidth}} " if named else "")
                     + f"{r.trust:>6.3f} {iv:>13} {r.labels:>6} {r.events:>6}  {'yes' if r.flags else ''}"
                     + ("  routed out" if r.routed_out else "") + why)
    return "\n".join(lines)
