"""Trust per labeler in a campaign (robust-active-learning paper, section III-B and Fig. 3).

The estimate itself is :func:`robust_al.trust.model.worker_accuracy`; the ledger keeps it per labeler, adds the
secured check's cuts, decides routing, and writes every change to the store."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from robust_al.faults import kill_point
from robust_al.store import RunStore
from robust_al.trust.model import routing_threshold, safe_route, worker_accuracy

# the reason every agreement_update event starts with: a re-training after the fact tells the trust a model
# was trained with (before its iteration's agreement update) from the events that came after it
AGREEMENT = "accuracy"


def independent_labelers(p1: float, ph: float = 0.9995) -> int:
    """Eq. 3 solved for h: the fewest independent labelers so that at least one is right with prob. ``ph``.

    P_h = 1 - (1 - P_1)^h  =>  h = ceil(log(1 - P_h) / log(1 - P_1)).
    """
    if not 0.0 < ph < 1.0:
        raise ValueError(f"P_h must lie in (0, 1), got {ph}")
    p1 = min(max(p1, 1e-6), 1 - 1e-9)
    # round before ceil so that float noise in the ratio does not add a labeler
    return max(1, math.ceil(round(math.log(1 - ph) / math.log(1 - p1), 9)))


class TrustLedger:
    """Trust in [0, 1] per labeler; every change is an event written to the store when it happens.

    trust_w = score_w + offset_w: ``score_w`` is eq. 4 of :mod:`robust_al.trust.model` (the expected share of
    w's labels that are right, lowered to a confidently bad class's upper bound), recomputed with each new
    aggregation; ``offset_w`` collects the cuts of the secured-check re-examination (Fig. 3) and audits, and
    shifts w's credible interval with it, so a cut is evidence in the same estimate. Routing (eq. 7,
    :func:`safe_route`) uses the interval against tau (eq. 6, relative to chance and the crowd unless
    ``threshold`` fixes it) and, with ``detect``, the flags of the agreement-structure detectors
    (:func:`robust_al.trust.assess.detected_flags`: spammers, colluding blocs), re-run with every update.
    Everything is rebuilt from the stored events on resume.
    """

    def __init__(self, workers: Iterable[str], store: RunStore | None, initial: float = 0.9,
                 prior_strength: float = 4.0, *, routing: bool = True, threshold: float | None = None,
                 relative: float = 0.5, level: float = 0.9, min_kept: int = 1, max_share: float = 0.5,
                 detect: bool = True, random_state: int = 0):
        self.store = store
        self.initial, self.n0 = initial, prior_strength
        self.routing, self.fixed_tau, self.relative, self.level = routing, threshold, relative, level
        self.min_kept, self.max_share = min_kept, max_share
        self.detect, self.random_state = detect, random_state
        self.flags: dict[str, str] = {}  # the detectors' ';'-joined flags per labeler ('' or absent: none)
        self.trust: dict[str, float] = {str(w): initial for w in workers}
        self.score: dict[str, tuple[float, float]] = dict.fromkeys(self.trust, (initial, 0.0))
        self.bounds: dict[str, tuple[float, float, float]] = {}  # lower, upper, class_upper of the score
        self.tau = 0.0 if threshold is None else threshold
        if store is not None:
            for row in store.trust_events().itertuples():
                self.trust[row.worker] = float(row.trust)
                if row.score is not None and not np.isnan(row.score):
                    self.score[row.worker] = (float(row.score), float(row.n))
                if row.upper is not None and not np.isnan(row.upper):
                    self.bounds[row.worker] = (float(row.lower), float(row.upper), float(row.class_upper))
                    self.tau = float(row.tau)
                if isinstance(getattr(row, "flags", None), str):
                    self.flags[row.worker] = row.flags
        self.routed: set[str] = set()
        self._route()

    @classmethod
    def configured(cls, workers: Iterable[str], store: RunStore | None, trust_cfg: dict, k: int = 1,
                   seed: int = 0) -> TrustLedger:
        """The ledger a campaign with config section ``trust`` (a dict or TrustConfig) keeps; rebuilt from
        ``store``'s events (reports read routing this way: the same rule, never a second copy of it)."""
        c = trust_cfg if isinstance(trust_cfg, dict) else trust_cfg.model_dump()
        return cls(workers, store, c.get("initial", 0.9), c.get("prior_strength", 4.0),
                   routing=c.get("routing", True), threshold=c.get("threshold"), relative=c.get("relative", 0.5),
                   level=c.get("level", 0.9), min_kept=k, detect=c.get("detect", True), random_state=seed)

    def __call__(self, worker: str) -> float:
        return self.trust.get(worker, self.initial)

    def table(self) -> dict[str, float]:
        return dict(sorted(self.trust.items()))

    # -- routing -----------------------------------------------------------------------------------------------
    def trusted(self, worker: str) -> bool:
        """Not routed out by trust (eq. 7); labels of an untrusted labeler are down-weighted."""
        return worker not in self.routed

    def allowed(self, worker: str) -> bool:
        """May ``worker`` receive queries? (Always, with routing off.)"""
        return not self.routing or worker not in self.routed

    def interval(self, worker: str) -> tuple[float, float]:
        """w's credible interval of accuracy, shifted by its cuts."""
        if worker not in self.bounds:
            return 0.0, 1.0
        lo, hi, _ = self.bounds[worker]
        off = self(worker) - self.score.get(worker, (self.initial, 0.0))[0]
        return float(np.clip(lo + off, 0, 1)), float(np.clip(hi + off, 0, 1))

    def _route(self) -> None:
        ws = sorted(self.bounds)
        if not ws:
            self.routed = set()
            return
        iv = [self.interval(w) for w in ws]
        table = pd.DataFrame({"lower": [a for a, _ in iv], "upper": [b for _, b in iv],
                              "class_upper": [self.bounds[w][2] for w in ws],
                              "trust": [self(w) for w in ws]}, index=ws)
        n_all = max(len(self.trust), len(ws))  # labelers not scored yet count as kept
        share = self.max_share * n_all / len(ws)
        flagged = {w for w in ws if self.flags.get(w)}
        routed = safe_route(table, self.tau, flagged, min_kept=max(0, self.min_kept - (n_all - len(ws))),
                            max_share=share)
        self.routed = set(routed[routed].index)

    # -- events ------------------------------------------------------------------------------------------------
    def change(self, iteration: int, worker: str, delta: float, reason: str, item_id: int | None = None) -> float:
        after = self._record(iteration, worker, delta, reason, item_id)
        self._route()
        return after

    def _record(self, iteration: int, worker: str, delta: float, reason: str, item_id: int | None = None
                ) -> float:
        before = self(worker)
        after = float(np.clip(before + delta, 0.0, 1.0))
        self.trust[worker] = after
        if self.store is not None:
            score, n = self.score.get(worker, (self.initial, 0.0))
            lo, hi, cls = self.bounds.get(worker, (None, None, None))
            self.store.add_trust_event(iteration, worker, after - before, after, reason, item_id, score, n,
                                       lower=lo, upper=hi, class_upper=cls, tau=self.tau,
                                       flags=self.flags.get(worker, ""))
            kill_point("trust-event", iteration)
        return after

    def set(self, iteration: int, worker: str, value: float, reason: str) -> float:
        return self.change(iteration, worker, value - self(worker), reason)

    def p1(self, workers: Iterable[str] | None = None) -> float:
        """P_1 of eq. 3: the average trust (a labeler's estimated accuracy) over ``workers``."""
        ws = list(self.trust) if workers is None else list(workers)
        return float(np.mean([self(w) for w in ws])) if ws else self.initial

    def agreement_update(self, iteration: int, loo: pd.DataFrame, n_classes: int,
                         flags: dict[str, str] | None = None) -> None:
        """Re-score every labeler on all its labels from leave-one-out posteriors (see
        :func:`robust_al.trust.model.worker_accuracy`). Scores are recomputed with each new model rather than
        frozen when a label arrives, so early, poorly informed estimates stop counting once better ones exist.
        One event per labeler whose score, interval or detector flags moved (routing reads all three, and a
        resumed campaign must route from what the uninterrupted one had). ``flags``: detections made outside
        the ledger (:func:`robust_al.trust.witness.witness_outliers`), joined with its own detectors'."""
        # pseudo-workers (the model's predictions) testify in the posteriors but are not labelers
        loo = loo[~loo["worker"].astype(str).str.startswith("__")]
        table = worker_accuracy(loo, n_classes, self.initial, self.n0, self.level)
        if table.empty:
            return
        if self.fixed_tau is None:
            self.tau = routing_threshold(n_classes, float(table["prior"].iloc[0]), self.relative)
        outside = dict(flags or {})
        flags, rescored = self._detect(loo, n_classes) if self.detect else ({}, None)
        # a flagged labeler is judged against the evidence without the flagged, as assess_crowd does (flags are
        # only ever found by _detect, which always returns its rescored table)
        if flags and rescored is not None:
            judged = [w for w in flags if w in table.index and w in rescored.index]
            table.loc[judged] = rescored.loc[judged, table.columns].to_numpy()
        for w, f in outside.items():  # judged on the usual evidence: the flag only lowers the bar to lower < tau
            flags[w] = ";".join(x for x in (flags.get(w, ""), f) if x)
        moved = []
        # labelers appear as they first answer (a live Label Studio crowd)
        for worker in table.index:
            row = table.loc[worker]
            new = (float(row["trust"]), float(row["n"]))
            bounds = (float(row["lower"]), float(row["upper"]), float(row["class_upper"]))
            old = self.score.get(worker, (self.initial, 0.0))
            if new != old or bounds != self.bounds.get(worker) or flags.get(worker, "") != self.flags.get(worker, ""):
                moved.append((worker, new[0] - old[0], row))
            self.score[worker], self.bounds[worker] = new, bounds
            self.flags[worker] = flags.get(worker, "")
        for worker, delta, row in moved:
            flag = f", flagged {self.flags[worker]}" if self.flags[worker] else ""
            self._record(iteration, worker, delta,
                         f"{AGREEMENT} {row['accuracy']:.3f} [{row['lower']:.2f}, {row['upper']:.2f}] over "
                         f"{int(row['n'])} labels, worst class {int(row['worst_class'])} <= "
                         f"{row['class_upper']:.2f}{flag}")
        self._route()

    def _detect(self, loo: pd.DataFrame, n_classes: int) -> tuple[dict[str, str], pd.DataFrame]:
        """Spammers and colluding blocs among the labelers of ``loo`` (its task, worker, label columns), and
        everyone scored without them (see :func:`robust_al.trust.assess.detected_flags`)."""
        from robust_al.trust.assess import detected_flags

        if "task" not in loo or loo["worker"].nunique() < 5:  # too few labelers for either test (see detect)
            return {}, pd.DataFrame()
        found, rescored = detected_flags(loo[["task", "worker", "label"]], n_classes, self.random_state,
                                         prior_strength=self.n0, level=self.level, relative=self.relative)
        rescored.index = rescored.index.map(str)
        return {str(w): ";".join(f) for w, f in found.items()}, rescored

    def penalize(self, iteration: int, worker: str, confidence: float, n_classes: int, amount: float,
                 item_id: int | None = None) -> float:
        """A consistent relabel contradicted ``worker``: cut trust by a ∝ 1/confidence (Fig. 3).

        ``confidence`` is F_i's probability for the label it predicted; a = amount * (1/|C|) / confidence, so
        a = amount for a model at chance and amount/|C| for a certain one.
        """
        a = amount * (1.0 / n_classes) / max(confidence, 1.0 / n_classes)
        return self.change(iteration, worker, -a, f"contradicted by relabel (conf {confidence:.2f})", item_id)
