"""Labels only: a crowd's answers in, inferred labels and a trust per labeler out (``robust-al aggregate``).

No model, no features, no campaign: the long table is read once into integer codes
(:mod:`robust_al.crowd.longtable`, which states the input rules), the labels are inferred and every labeler
scored by :func:`robust_al.trust.assess.assess_crowd`, and the results are decoded back to the user's ids
and label values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from robust_al.crowd.longtable import AnnotationError, LongTable, Truth, read_annotations, read_truth
from robust_al.files import atomic_write
from robust_al.trust.assess import METHODS, assess_crowd


@dataclass
class AggregateResult:
    """What :func:`aggregate_labels` found.

    ``labels``: one row per task: ``task`` (your id), ``label`` (your label value), ``confidence`` (the
    posterior of that label; 1.0 with ``mmsr``, which gives no probabilities). ``workers``: one row per
    labeler: ``worker``, ``trust`` (its estimated accuracy), ``lower``/``upper`` (the credible interval of
    it), ``labels`` (answers it gave), ``flags`` (';'-joined reasons, '' if none), ``routed`` (True: it
    should get no more queries; with ``route=True`` the labels were inferred again without it).
    ``accuracy``: share of the truth's tasks labeled right (None without truth, or when the truth covers no
    answered task).
    """

    labels: pd.DataFrame
    workers: pd.DataFrame
    accuracy: float | None
    method: str
    route: bool
    n_answers: int
    classes: list
    repeated: int = 0  # answers given twice (same worker, task and label), counted once
    truth_given: bool = False
    truth_tasks: int = 0  # tasks scored against the truth
    truth_ignored: int = 0  # truth rows about tasks nobody answered
    truth_unseen: int = 0  # truth labels no worker ever gave (scored as wrong)
    info: dict = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines: items, workers, labels, classes, method, accuracy, routed/flagged labelers."""
        w = self.workers
        lines = [f"items: {len(self.labels)}  workers: {len(w)}  labels: {self.n_answers}  "
                 f"classes: {len(self.classes)} ({', '.join(str(c) for c in self.classes[:10])}"
                 f"{', ...' if len(self.classes) > 10 else ''})",
                 f"method: {self.method}{' + routing' if self.route else ''}"]
        if self.repeated:
            lines.append(f"repeated answers counted once: {self.repeated}")
        if self.truth_given:
            acc = "n/a" if self.accuracy is None else f"{self.accuracy:.4f}"
            extra = []
            if self.truth_ignored:
                extra.append(f"{self.truth_ignored} truth rows about unanswered tasks ignored")
            if self.truth_unseen:
                extra.append(f"{self.truth_unseen} truths no worker gave, scored as wrong")
            lines.append(f"accuracy: {acc} on {self.truth_tasks} items" + (f" ({'; '.join(extra)})" if extra else ""))
        flagged = int((w["flags"] != "").sum()) if len(w) else 0
        lines.append(f"routed: {int(w['routed'].sum()) if len(w) else 0}  flagged: {flagged}")
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``labels.csv`` and ``workers.csv`` into ``out_dir`` (created); each file is written to a
        temporary file beside it and moved into place, so none is ever half-written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, frame in (("labels.csv", self.labels), ("workers.csv", self.workers)):
            atomic_write(out / name, partial(frame.to_csv, index=False, lineterminator="\n"))
            written.append(out / name)
        return written


def aggregate_labels(annotations: str | Path | pd.DataFrame, method: str = "twds", route: bool = False,
                     truth: str | Path | pd.DataFrame | None = None, random_state: int = 0) -> AggregateResult:
    """Infer one label per task and a trust per worker from a long table of answers.

    ``annotations``: a CSV path or a DataFrame with columns ``task`` (or ``item``/``question``), ``worker``,
    ``label`` (or ``answer``); ids and labels may be strings (rules: :mod:`robust_al.crowd.longtable`).
    ``method``: ``twds`` robust-al's trust pipeline (Dawid-Skene with Dirichlet-smoothed confusions, labelers
    scored against the leave-one-out posteriors), ``ds`` / ``mv`` robust-al's Dawid-Skene / majority vote
    without trust weighting, ``mmsr`` crowd-kit's MMSR. ``route``: leave labelers confidently under the
    routing threshold out and infer again. ``truth``: a CSV path or DataFrame ``task,truth`` to score the
    labels against. Raises :class:`AnnotationError` (a ValueError) naming the file and line of a bad input.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    table = read_annotations(annotations)
    known = read_truth(truth, table) if truth is not None else None
    if table.n_classes < 2:
        raise AnnotationError(table.source, None, f"every answer is {table.classes[0]!r}; expected at least two "
                                                  "classes among the labels")
    try:
        found = assess_crowd(table.annotations, table.n_classes, method=method, route=route,
                             random_state=random_state)
    except ValueError as e:
        if method != "mmsr":
            raise
        # crowd-kit's MMSR leaves every skill NaN on some sparse crowds (the Zheng product crowd) and then
        # refuses to vote: say so in one line rather than fall back to another method silently
        raise ValueError(f"{table.source}: crowd-kit's MMSR failed on this crowd ({e}); use method twds, ds "
                         "or mv") from None
    return _decode(table, known, found, method, route)


def _decode(table: LongTable, truth: Truth | None, found, method: str, route: bool) -> AggregateResult:
    post = found.posteriors.sort_index()
    codes = found.labels.reindex(post.index).to_numpy().astype(np.int64)
    task_codes = post.index.to_numpy().astype(np.int64)
    labels = pd.DataFrame({"task": table.tasks[task_codes], "label": table.classes[codes],
                           "confidence": post.to_numpy()[np.arange(len(post)), codes]})
    w = found.workers.sort_index()
    wc = w.index.to_numpy().astype(np.int64)
    workers = pd.DataFrame({"worker": table.workers[wc], "trust": w["trust"].to_numpy(dtype=float),
                            "lower": w["lower"].to_numpy(dtype=float), "upper": w["upper"].to_numpy(dtype=float),
                            "labels": w["n"].to_numpy(dtype=np.int64),
                            "flags": w["flags"].fillna("").astype(str).to_numpy(dtype=object),
                            "routed": w["routed"].to_numpy(dtype=bool)})
    result = AggregateResult(labels, workers, None, method, route, len(table.annotations), list(table.classes),
                             table.repeated, info=dict(getattr(found, "info", {}) or {}))
    if truth is not None:
        pred = found.labels.reindex(truth.labels.index).to_numpy()
        result.truth_given = True
        result.truth_tasks, result.truth_ignored, result.truth_unseen = len(truth.labels), truth.ignored, truth.unseen
        if len(truth.labels):
            result.accuracy = float((pred == truth.labels.to_numpy()).mean())
    return result
