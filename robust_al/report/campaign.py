"""Static HTML report of one campaign (``robust-al report RUN_DIR`` when RUN_DIR holds ``campaign.sqlite``).

Reads the run's store only (nothing is recomputed) and writes ``index.html`` and its PNG figures into one
folder (default ``RUN_DIR/report``): learning curves, labels per labeler, trust over iterations against the
routing threshold, secured-check re-examinations and quarantines, and the class balance of the inferred
labels. The page is self-contained like the evaluation report (inline CSS, images by relative path).
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from robust_al.report.html import CSS, esc, figure_html, format_value, table_html
from robust_al.report.text import trust_table
from robust_al.store import RunStore

# the labeler lines of a large (replayed) crowd are drawn thin and unlabeled; this many of the least trusted
# are named in the legend
LEGEND_MAX = 12
EXTRA_CSS = """
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0.5em 1.5em; }
.grid figure { margin: 0; } figcaption { color: #555; font-size: 0.85em; }
td.warn { color: #b00; font-weight: bold; }
"""


def trust_history(store: RunStore, iterations: list[int], initial: float) -> pd.DataFrame:
    """Trust per labeler (columns) at the end of each iteration (rows); a labeler is at ``initial`` until its
    first event."""
    ev = store.trust_events()
    if ev.empty:
        return pd.DataFrame(index=iterations)
    last = ev.groupby(["iteration", "worker"])["trust"].last().unstack()
    return last.reindex(iterations).ffill().fillna(initial)


def accuracy_figure(metrics: list[dict]):
    fig = figure_html(6.4, 3.8)
    ax = fig.add_subplot()
    x = [m["labels_used"] for m in metrics]
    ax.plot(x, [m["secured_acc"] for m in metrics], marker="o", label="secured set S")
    ax.plot(x, [m["test_acc"] for m in metrics], marker="s", label="test split")
    if any(m.get("label_acc") is not None for m in metrics):
        ax.plot(x, [np.nan if m.get("label_acc") is None else m["label_acc"] for m in metrics], marker=".",
                linestyle=":", color="0.4", label="inferred labels (vs truth)")
    failed = [m for m in metrics if m.get("secured_check", "accepted") != "accepted"]
    if failed:  # where the secured check rolled the model back
        ax.scatter([m["labels_used"] for m in failed], [m["secured_acc"] for m in failed], s=120,
                   facecolors="none", edgecolors="tab:red", linewidths=1.5, zorder=3, label="re-examined")
    ax.set_xlabel("labels used")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs labels used", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def labels_figure(store: RunStore, order: list[str], routed: set[str]):
    """Labels per labeler, split by purpose (queries, re-examinations, audits); least trusted on top."""
    ann = store.annotations()
    purpose = ann["purpose"].str.split(":").str[0]  # audit:<worker> -> audit
    counts = pd.crosstab(ann["worker"], purpose).reindex(order[::-1]).fillna(0)
    fig = figure_html(6.4, max(2.5, 0.6 + 0.24 * len(order)))
    ax = fig.add_subplot()
    left = np.zeros(len(counts))
    colors = {"query": "tab:blue", "reexam": "tab:orange", "audit": "tab:purple"}
    for p in [c for c in ("query", "reexam", "audit") if c in counts] + [c for c in counts if c not in colors]:
        ax.barh(counts.index, counts[p], left=left, color=colors.get(p), label=p)
        left += counts[p].to_numpy()
    for tick in ax.get_yticklabels():
        if tick.get_text() in routed:
            tick.set_color("tab:red")
    ax.set_xlabel("labels given")
    ax.set_title("Labels per labeler (routed out in red)", fontsize="medium")
    ax.tick_params(axis="y", labelsize="small")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def trust_figure(history: pd.DataFrame, threshold: float, routing: bool):
    """Trust per labeler over iterations, with the routing threshold as a horizontal line."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    fig = figure_html(6.4, 3.8)
    ax = fig.add_subplot()
    final = history.iloc[-1].sort_values() if len(history) else pd.Series(dtype=float)
    named = list(final.index[:LEGEND_MAX])  # the least trusted: each its own colour and a legend entry
    # tab20 without its two reds, which belong to labelers under the threshold
    palette = [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (6, 7)]
    reds = colormaps["Reds"]
    n_below = int((final < threshold).sum())
    handles = {}
    for rank, w in reversed(list(enumerate(final.index))):  # least trusted drawn last (on top)
        below = final[w] < threshold
        # under the threshold: shades of red, darkest = least trusted; grey past LEGEND_MAX
        color = (reds(1.0 - 0.5 * rank / max(n_below - 1, 1)) if below else palette[rank % len(palette)] if w in named
                 else "0.75")
        (handles[w],) = ax.plot(history.index, history[w], color=color,
                                drawstyle="steps-post" if len(history) > 1 else "default",
                                marker="." if len(history) < 15 else None,
                                linewidth=2.2 if below or rank < 3 else 1.2 if w in named else 0.7)
    line = ax.axhline(threshold, color="k", linestyle="--", linewidth=1.2)
    rest = len(final) - len(named)
    labels = ([f"routing threshold {threshold:.2f}" + ("" if routing else " (routing off)")]
              + [f"{w} {final[w]:.2f}" for w in named] + ([f"{rest} more (grey)"] if rest else []))
    extra = [handles[final.index[len(named)]]] if rest else []
    ax.legend([line] + [handles[w] for w in named] + extra, labels, fontsize="x-small", loc="lower left",
              ncol=2 if len(labels) > 7 else 1, title="least trusted first", title_fontsize="x-small")
    ax.set_xlabel("iteration")
    ax.set_ylabel("trust")
    ax.set_ylim(min(0.0, float(np.nanmin(history.to_numpy())) if history.size else 0.0), 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Trust per labeler", fontsize="medium")
    ax.grid(alpha=0.3)
    return fig


def filtered_html(store, limit: int = 200) -> str:
    """The poison filter's removals, each with its reason (the first ``limit``; all are in the store)."""
    rows = store.filtered()
    if rows.empty:
        return ""
    keys = store.item_keys()  # the user's own ids, where the pool has them
    body = [[r.iteration, keys.get(int(r.item_id), int(r.item_id)), r.reason] for r in rows.head(limit).itertuples()]
    more = (f'<p class="note">{len(rows) - limit} more in the store (<code>filtered</code>).</p>'
            if len(rows) > limit else "")
    return ("\n<h2>Kept out of training by the poison filter</h2>"
            + table_html(["iteration", "item", "reason"], body) + more)


def checks_figure(metrics: list[dict]):
    """Per iteration: items re-examined, discarded and quarantined after a failed secured check, and kept out of
    training by the poison filter."""
    from matplotlib.ticker import MaxNLocator

    it = np.array([m["iteration"] for m in metrics])
    series = {"re-examined": [m.get("reexamined", 0) for m in metrics],
              "discarded": [m.get("discarded", 0) for m in metrics],
              "quarantined": [m.get("quarantined", 0) or 0 for m in metrics],
              "poison filter": [m.get("filtered", 0) for m in metrics],
              "labelers flagged": [len(m.get("flagged") or []) for m in metrics]}
    fig = figure_html(6.4, 3.8)
    ax = fig.add_subplot()
    w = 0.8 / len(series)
    for k, (name, vals) in enumerate(series.items()):
        ax.bar(it + (k - (len(series) - 1) / 2) * w, vals, width=w, label=name)
    top = max(max(v) for v in series.values()) if len(it) else 0
    ax.set_ylim(0, max(1, top) * 1.15)  # no negative axis when nothing failed
    if top == 0:
        ax.text(0.5, 0.5, "the secured check never failed, the filter removed nothing", transform=ax.transAxes,
                ha="center", color="0.4")
    ax.set_xlabel("iteration")
    ax.set_ylabel("items / labelers")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Secured-check re-examinations and quarantines", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def classes_figure(labels: pd.DataFrame, class_names: list[str]):
    """Inferred labels per class, stacked by status (S's trusted labels apart)."""
    fig = figure_html(6.4, 3.8)
    ax = fig.add_subplot()
    x = np.arange(len(class_names))
    bottom = np.zeros(len(class_names))
    colors = {"labeled": "tab:green", "quarantined": "tab:red", "discarded": "0.6"}
    for status, color in colors.items():
        lab = labels.loc[(labels["status"] == status) & labels["label"].notna(), "label"].astype(int)
        n = np.bincount(lab, minlength=len(class_names))
        if n.any():
            ax.bar(x, n, bottom=bottom, color=color, label=status)
            bottom += n
    ax.set_xticks(x, class_names, rotation=30 if max(map(len, class_names)) > 4 else 0, fontsize="small")
    ax.set_xlabel("inferred class")
    ax.set_ylabel("items")
    ax.set_title("Class balance of the inferred labels", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return fig


def write_campaign_report(run_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write index.html and its PNGs (default RUN_DIR/report); returns the path of index.html."""
    from robust_al.export.model import run_model_info
    from robust_al.trust.ledger import TrustLedger

    run_dir = Path(run_dir)
    store = RunStore.existing(run_dir)
    metrics = store.metrics()
    if not metrics:
        raise ValueError(f"{run_dir}: no iteration has completed yet; nothing to report")
    cfg = store.get_meta("config", {})
    tcfg = cfg.get("trust", {})
    routing = bool(tcfg.get("routing", True))
    threshold = TrustLedger.configured([], store, tcfg).tau  # the threshold in force at the end (eq. 6)
    class_names = run_model_info(store)["class_names"]
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)

    workers = trust_table(store)
    labels = store.inferred()
    history = trust_history(store, [m["iteration"] for m in metrics], float(tcfg.get("initial", 0.9)))
    routed = set(workers.loc[workers["routed_out"], "worker"])
    figures = [
        ("accuracy.png", accuracy_figure(metrics), "Accuracy on the secured set S and the test split after each "
         "iteration; red circles: the secured check failed and the batch was re-examined."),
        ("trust.png", trust_figure(history, threshold, routing), "Trust at the end of each iteration; under the "
         "dashed line a labeler gets no more queries" + ("" if routing else " (routing is off in this run)") + "."),
        ("labels_per_labeler.png", labels_figure(store, list(workers["worker"]), routed),
         "Answers stored per labeler, least trusted on top."),
        ("checks.png", checks_figure(metrics),
         "What each failed secured check cost and removed, and what the poison filter kept out."),
        ("classes.png", classes_figure(labels, class_names), "Inferred labels of the last iteration per class."),
    ]
    for name, fig, _ in figures:
        fig.savefig(out / name, dpi=100)

    last = metrics[-1]
    counts = labels["status"].value_counts()
    budget = cfg.get("stop", {}).get("budget")
    summary = [["iterations completed", len(metrics)],
               ["labels used", f"{last['labels_used']} of {budget}"],
               ["items labeled (passed the secured check)", int(counts.get("labeled", 0))],
               ["items discarded", int(counts.get("discarded", 0))],
               ["items quarantined", int(counts.get("quarantined", 0))],
               ["items kept out of training by the poison filter",
                int(counts.get("filtered", 0)) if cfg.get("poison_filter", {}).get("enabled") else "filter off"],
               ["secured set S", f"{int(counts.get('holdout', 0))} items"],
               ["accuracy on S", format_value(last["secured_acc"])], ["test accuracy", format_value(last["test_acc"])],
               ["inferred-label accuracy", format_value(last.get("label_acc"))],
               ["labelers routed out", f"{len(routed)} of {len(workers)}"],
               ["stopped", last.get("stop") or "not finished"]]
    named = workers["name"].astype(bool).any()
    wrows = [[r.worker] + ([r.name] if named else []) + [format_value(r.trust), r.labels,
             "yes" if r.routed_out else "", r.flag_reasons or ""] for r in workers.itertuples()]
    whead = ["labeler"] + (["name"] if named else []) + ["trust", "labels", "routed out", "flags"]
    irows = [[m["iteration"], m["labels_used"], format_value(m["secured_acc"]), format_value(m["test_acc"]),
              format_value(m.get("label_acc")), m.get("secured_check", "accepted"), m.get("stop") or ""]
             for m in metrics]
    figs = "".join(f'<figure><img src="{n}" alt="{esc(n)}"><figcaption>{esc(c)}</figcaption></figure>'
                   for n, _, c in figures)
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>robust-al campaign: {esc(cfg.get('name'))}</title><style>{CSS}{EXTRA_CSS}</style>"
            f"</head><body>\n<h1>Campaign {esc(cfg.get('name'))}</h1>\n"
            f'<p class="meta">run <code>{esc(run_dir)}</code>; data {esc(cfg.get("data", {}).get("name"))}, '
            f"seed {esc(cfg.get('seed'))}; generated {esc(generated)}</p>\n"
            + table_html(["summary", "value"], summary) + f'\n<h2>Figures</h2><div class="grid">{figs}</div>\n'
            f"<h2>Labelers</h2>" + table_html(whead, wrows)
            + filtered_html(store)
            + "\n<h2>Iterations</h2>" + table_html(["iteration", "labels used", "S acc", "test acc", "label acc",
                                                 "secured check", "stop"], irows)
            + f'\n<h2>Next</h2><p class="note"><code>robust-al export {esc(run_dir)}</code> writes the labels, '
              f"annotations, labelers and model; <code>robust-al predict {esc(run_dir)} INPUT</code> applies "
              "the final model to new inputs.</p>\n</body></html>\n")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
