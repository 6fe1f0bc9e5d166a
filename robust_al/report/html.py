"""Static HTML report of evaluation results (``robust-al report RESULTS_DIR``).

Reads what ``pipelines/robust_al_eval.py`` writes: every ``summary.json`` under RESULTS_DIR is one section
(one question / scenario), and the run folders next to it each hold a ``result.json``. Writes
``index.html`` and its PNG figures into one folder; the page is self-contained (inline CSS, images by
relative path, no script) so the folder can be copied or archived as it is.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from robust_al.report.schema import SUMMARY_HINT, Run, number, read_result, read_summary

# kinds whose labels are meant to be correct; every other kind is an adversary and is drawn in red
HONEST_KINDS = {"benign": "0.6", "replayed": "tab:blue"}
ADVERSARY_STYLE = {"spammer": "--", "colluding": ":"}  # any other adversary kind: solid


CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ccc; padding-bottom: 0.2em; margin-top: 2.5em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #555; } .note { color: #666; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
details { margin: 0.5em 0; }
"""


@dataclass
class Section:
    """One summary.json and the runs next to it."""
    path: Path
    summary: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """The summary's methods in its order, then any method only the runs name."""
        listed = [str(m) for m in self.summary.get("methods") or []]
        return listed + sorted({r.method for r in self.runs} - set(listed))

    def runs_of(self, method: str) -> list[Run]:
        return sorted((r for r in self.runs if r.method == method), key=lambda r: r.rep)


# ---------------------------------------------------------------------------------------------- reading

def load_sections(results_dir: Path) -> list[Section]:
    """Every summary.json under RESULTS_DIR with the result.json of the run folders beside it."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"{results_dir}: no such results directory")
    summaries = sorted(results_dir.rglob("summary.json"))
    if not summaries:
        raise FileNotFoundError(f"{results_dir}: no summary.json found below it; expected {SUMMARY_HINT} "
                                "(e.g. RESULTS_DIR/<dataset>/<question>/summary.json)")
    sections = []
    for path in summaries:
        sec = Section(path=path, summary=read_summary(path))
        sec.runs = [read_result(p) for p in sorted(path.parent.glob("*/result.json"))]
        sections.append(sec)
    return sections


# ---------------------------------------------------------------------------------------------- HTML bits

def esc(value: Any) -> str:
    return html.escape(str(value))


def _cell(text: str) -> str:
    """Escape a markdown cell, keeping **bold** and `code` (the pipeline marks best values that way)."""
    out = esc(text.strip())
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _split_row(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


_SEPARATOR = re.compile(r"^\s*:?-+:?\s*$")


def markdown_table_html(text: str) -> str:
    """A markdown pipe table (plus any plain lines around it) as HTML; cells are escaped."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith("|"):
            out.append(f"<p>{_cell(lines[i].lstrip('# '))}</p>")
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            block.append(_split_row(lines[i]))
            i += 1
        header: list[str] = []
        align: list[str] = []
        if len(block) > 1 and all(_SEPARATOR.match(c) for c in block[1]):
            header, sep, block = block[0], block[1], block[2:]
            align = ["right" if c.strip().endswith(":") and not c.strip().startswith(":")
                     else "center" if c.strip().startswith(":") and c.strip().endswith(":") else "" for c in sep]
        rows = ["<table>"]
        if header:
            rows.append("<tr>" + "".join(f"<th>{_cell(c)}</th>" for c in header) + "</tr>")
        for row in block:
            cells = []
            for j, c in enumerate(row):
                a = align[j] if j < len(align) else ""
                cells.append(f'<td style="text-align:{a}">{_cell(c)}</td>' if a else f"<td>{_cell(c)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        rows.append("</table>")
        out.append("\n".join(rows))
    return "\n".join(out)


def table_html(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; numbers are right-aligned."""
    def td(v: Any) -> str:
        return f'<td class="num">{esc(v)}</td>' if isinstance(v, (int, float)) or _is_numeric(v) \
            else f"<td>{esc(v)}</td>"
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>\n"
            + "\n".join("<tr>" + "".join(td(v) for v in row) + "</tr>" for row in rows) + "</table>")


def _is_numeric(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"[-+]?[\d.]+%?", v) is not None


def format_value(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{seconds:.1f} s"


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


# ---------------------------------------------------------------------------------------------- figures

def figure_html(width: float, height: float):
    # a bare Figure on an Agg canvas: no pyplot, so no display is needed and nothing global is touched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(methods: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def mean_curve(curves: list[list[tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels grid and mean/min/max accuracy over the repetitions' curves.

    Each curve is linearly interpolated onto the union of the label counts the runs logged, but only over the
    range every run covers (from the latest first point to the earliest last point): past the end of a
    shorter run the mean would otherwise mix in fewer runs, or invented values if the last one were carried
    forward. Empty arrays when the runs share no range.
    """
    cleaned = []
    for c in curves:
        # one value per label count (the last logged one), sorted, as np.interp needs
        pts = dict(sorted(c, key=lambda p: p[0]))
        if pts:
            cleaned.append((np.array(list(pts)), np.array(list(pts.values()))))
    if not cleaned:
        empty = np.array([])
        return empty, empty, empty, empty
    lo, hi = max(x[0] for x, _ in cleaned), min(x[-1] for x, _ in cleaned)
    grid = np.unique(np.concatenate([x for x, _ in cleaned]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if grid.size == 0:
        return grid, grid, grid, grid
    ys = np.stack([np.interp(grid, x, y) for x, y in cleaned])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def _plot_curves(sec: Section, colors: dict[str, Any], path: Path) -> list[str]:
    """Learning curves; returns notes on methods that could not be drawn."""
    fig = figure_html(7, 4.2)
    ax = fig.add_subplot()
    notes = []
    for m in sec.methods:
        runs = [r for r in sec.runs_of(m) if r.curve]
        grid, mean, lo, hi = mean_curve([r.curve for r in runs])
        if grid.size == 0:
            notes.append(f"{m}: no curve" if not runs else f"{m}: its runs share no range of label counts")
            continue
        ax.plot(grid, mean, color=colors[m], marker="." if grid.size < 30 else None,
                label=f"{m} (mean of {len(runs)})")
        if len(runs) > 1:
            ax.fill_between(grid, lo, hi, color=colors[m], alpha=0.2, linewidth=0)
    target = sec.summary.get("target")
    if target is not None:
        ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("labels used")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path, dpi=100)
    return notes


def _plot_budget(sec: Section, colors: dict[str, Any], path: Path) -> None:
    """Box plot of labels to target; runs that never reached it are counted in the tick label."""
    from matplotlib.ticker import MaxNLocator

    fig = figure_html(max(4.5, 1.3 * len(sec.methods) + 2), 4)
    ax = fig.add_subplot()
    ticks = []
    for i, m in enumerate(sec.methods, start=1):
        runs = sec.runs_of(m)
        reached = [r.labels_to_target for r in runs if r.labels_to_target is not None]
        never = len(runs) - len(reached)
        ticks.append(f"{m} ({never} never)" if never else m)
        if reached:
            ax.boxplot([reached], positions=[i], widths=0.5, medianprops={"color": colors[m]})
            # the points too: with a few repetitions a box alone hides how many there were
            jitter = np.linspace(-0.12, 0.12, len(reached)) if len(reached) > 1 else [0.0]
            ax.scatter(np.add(i, jitter), reached, color=colors[m], s=14, zorder=3)
        elif runs:
            ax.text(i, 0.5, "no run reached\nthe target", transform=ax.get_xaxis_transform(), ha="center",
                    va="center", color="0.4", fontsize="small")
    ax.set_xticks(range(1, len(sec.methods) + 1), ticks, rotation=15 if len(sec.methods) > 3 else 0)
    ax.set_xlim(0.4, len(sec.methods) + 0.6)
    ax.set_ylabel("labels to reach target")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)


def _is_adversary(kind: str | None) -> bool:
    return kind is not None and kind not in HONEST_KINDS


def _plot_trust(sec: Section, path: Path) -> None:
    """Trust per labeler vs iteration, first repetition of each method, one subplot per method."""
    from matplotlib.ticker import MaxNLocator

    methods = [m for m in sec.methods if sec.runs_of(m) and sec.runs_of(m)[0].trust]
    fig = figure_html(min(5 * len(methods), 15), 3.8)
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    for ax, m in zip(axes, methods):
        run = sec.runs_of(m)[0]
        # honest first so the adversaries are drawn on top
        for worker in sorted(run.trust, key=lambda w: (_is_adversary(run.kinds.get(w)), w)):
            events = run.trust[worker]
            if not events:
                continue
            kind = run.kinds.get(worker)
            x, y = [e[0] for e in events], [e[2] for e in events]
            if _is_adversary(kind):
                ax.plot(x, y, color="tab:red", linewidth=2.5, linestyle=ADVERSARY_STYLE.get(kind, "-"),
                        label=f"{worker} ({kind})", zorder=3)
            else:
                # a labeler without a kind is unknown, not accused: drawn like an honest one
                ax.plot(x, y, color=HONEST_KINDS.get(kind or "benign", "0.6"), linewidth=0.8, alpha=0.8)
        ax.set_title(f"{m} (rep {run.rep})", fontsize="medium")
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="lower left")
    axes[0].set_ylabel("trust")
    fig.savefig(path, dpi=100)


def _detection_means(sec: Section) -> dict[str, dict[str, dict[str, float | None]]]:
    """detector -> method -> runs and mean precision / recall / flagged over the runs reporting the detector."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for d in sorted({d for r in sec.runs for d in (r.detection or {})}):
        for m in sec.methods:
            runs = [r for r in sec.runs_of(m) if r.detection and d in r.detection]
            if runs:
                out.setdefault(d, {})[m] = {"runs": float(len(runs))} | {
                    k: _mean([number(r.detection[d].get(k), r.path, f"detection.{d}.{k}") for r in runs])
                    for k in ("precision", "recall", "flagged")}
    return out


def _plot_detection(means: dict[str, dict[str, dict[str, float | None]]], methods: list[str],
                    colors: dict[str, Any], path: Path) -> None:
    """Grouped bars: one panel per score (precision, recall), a group per detector, a bar per method."""
    detectors = list(means)
    fig = figure_html(max(7, 2.2 * len(detectors) * 2), 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / max(1, len(methods))
    for ax, score in zip(axes, ("precision", "recall")):
        for j, m in enumerate(methods):
            vals = [means[d].get(m, {}).get(score) for d in detectors]
            xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(detectors))]
            ax.bar(xs, [np.nan if v is None else v for v in vals], width, color=colors[m], label=m)
        ax.set_xticks(range(len(detectors)), detectors, fontsize="small")
        ax.set_title(f"mean {score}", fontsize="medium")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------------- page

def _slug(sec: Section, root: Path, index: int) -> str:
    rel = sec.path.parent.relative_to(root).as_posix() if sec.path.parent != root else "results"
    return f"{index:02d}-" + (re.sub(r"[^A-Za-z0-9]+", "-", rel).strip("-") or "results")


def _title(sec: Section) -> str:
    s = sec.summary
    parts = [str(s.get("question") or sec.path.parent.name)]
    if s.get("scenario"):
        parts.append(f"scenario {s['scenario']}")
    if s.get("dataset"):
        parts.append(str(s["dataset"]))
    return " · ".join(parts)


def _section_html(sec: Section, root: Path, out_dir: Path, index: int) -> tuple[str, str]:
    """The section's HTML (figures written into out_dir) and its anchor id."""
    s = sec.summary
    slug = _slug(sec, root, index)
    colors = _colors(sec.methods)
    target = s.get("target")
    seeds = s.get("seeds")
    overrides = s.get("overrides") or []
    h = [f'<h2 id="{slug}">{esc(_title(sec))}</h2>',
         f'<p class="meta">from <code>{esc(sec.path)}</code><br>'
         f"config <code>{esc(s.get('config', 'unknown'))}</code>; overrides "
         + (", ".join(f"<code>{esc(o)}</code>" for o in overrides) if overrides else "none")
         + f"; seeds {esc(', '.join(map(str, seeds)) if seeds else 'unknown')}"
         + f"; target accuracy {esc(format_value(target, 4))}; wall time {esc(_duration(s.get('wall_seconds')))}</p>"]
    versions = s.get("versions") or {}
    if versions:
        h.append("<details open><summary>versions</summary>"
                 + table_html(["package", "version"], [[k, str(v)] for k, v in versions.items()]) + "</details>")

    if s.get("table"):
        h.append("<h3>Results</h3>" + markdown_table_html(s["table"]))
    for name, text in (s.get("extra_tables") or {}).items():
        h.append(f"<h3>{esc(name)}</h3>" + markdown_table_html(str(text)))

    if not sec.runs:
        h.append(f'<p class="note">no run folders with a result.json next to {esc(sec.path.name)}.</p>')
        return "\n".join(h), slug

    # the runs found, so a missing or crashed repetition shows up here rather than only as a thinner band
    rows = []
    for m in sec.methods:
        runs = sec.runs_of(m)
        reached = [r.labels_to_target for r in runs if r.labels_to_target is not None]
        rows.append([m, len(runs), f"{len(reached)}/{len(runs)}", len(runs) - len(reached),
                     format_value(float(np.median(reached)), 0) if reached else "-",
                     format_value(_mean([r.final_acc for r in runs]))])
    h.append("<h3>Runs</h3>" + table_html(["method", "runs", "reached target", "never reached",
                                       "median labels to target", "mean final accuracy"], rows))

    curves, budget, trust = f"{slug}-curves.png", f"{slug}-budget.png", f"{slug}-trust.png"
    notes = _plot_curves(sec, colors, out_dir / curves)
    h.append("<h3>Learning curves</h3>"
             f'<img src="{curves}" alt="test accuracy vs labels used: {esc(", ".join(sec.methods))}">'
             '<p class="note">line: mean over repetitions, each run linearly interpolated onto the label counts '
             "logged, only up to the largest label count every run of the method reached; band: min-max over "
             "repetitions; dashed: target accuracy."
             + "".join(f"<br>{esc(n)}" for n in notes) + "</p>")
    _plot_budget(sec, colors, out_dir / budget)
    h.append("<h3>Labels to reach the target</h3>"
             f'<img src="{budget}" alt="labels to target per method">'
             '<p class="note">one box per method over the runs that reached the target; runs that never did are '
             'counted in the method\'s label, e.g. "random (2 never)".</p>')

    if any(r.trust for r in sec.runs):
        _plot_trust(sec, out_dir / trust)
        adversaries = sorted({(w, k) for r in sec.runs for w, k in r.kinds.items() if _is_adversary(k)})
        h.append("<h3>Trust</h3>"
                 f'<img src="{trust}" alt="trust per labeler vs iteration">'
                 '<p class="note">first repetition of each method; thin grey: benign labelers, thin blue: '
                 "replayed; thick red: adversaries (dashed: spammer, dotted: colluding).<br>adversarial labelers: "
                 + (", ".join(f"<strong>{esc(w)}</strong> ({esc(k)})" for w, k in adversaries) or "none")
                 + "</p>")

    means = _detection_means(sec)
    if means:
        det = f"{slug}-detection.png"
        det_methods = [m for m in sec.methods if any(m in v for v in means.values())]
        _plot_detection(means, det_methods, colors, out_dir / det)
        rows = [[d, m, int(v["runs"] or 0), format_value(v["precision"]), format_value(v["recall"]),
                 format_value(v["flagged"], 1)]
                for d, per in means.items() for m, v in per.items()]
        h.append("<h3>Poison detection</h3>" + f'<img src="{det}" alt="detection precision and recall">'
                 + table_html(["detector", "method", "runs", "mean precision", "mean recall", "mean flagged"], rows))

    poisoned = {m: [r for r in sec.runs_of(m) if r.poison] for m in sec.methods}
    if any(poisoned.values()):
        rows = []
        for m, runs in poisoned.items():
            if runs:
                wins = sum(bool(r.poison.get("success")) for r in runs)
                labeled = _mean([number(r.poison.get("labeled"), r.path, "poison.labeled") for r in runs])
                rows.append([m, len(runs), f"{wins}/{len(runs)}", f"{100 * wins / len(runs):.0f}%",
                             format_value(labeled, 1)])
        h.append("<h3>Poisoning attack</h3>" + table_html(
            ["method", "runs", "attack succeeded", "success rate", "mean poisons labeled"], rows))
    return "\n".join(h), slug


def write_report(results_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write index.html and its PNGs (default: RESULTS_DIR/report); returns the path of index.html."""
    results_dir = Path(results_dir)
    sections = load_sections(results_dir)  # every input is read and checked before anything is written
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    bodies, toc = [], []
    for i, sec in enumerate(sections, start=1):
        body, anchor = _section_html(sec, results_dir, out, i)
        bodies.append(body)
        toc.append(f'<li><a href="#{anchor}">{esc(_title(sec))}</a> '
                   f'<span class="note">({len(sec.runs)} runs, {esc(", ".join(sec.methods) or "no methods")})'
                   "</span></li>")
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>robust-al report: {esc(results_dir.name)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>robust-al evaluation report</h1>\n"
            f'<p class="meta">results <code>{esc(results_dir)}</code>; generated {esc(generated)}</p>\n'
            f"<h2>Sections</h2><ol>{''.join(toc)}</ol>\n" + "\n".join(bodies) + "\n</body></html>\n")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
