"""Trust per labeler (robust-active-learning paper, section III-B and Fig. 3)."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from robust_al.store import RunStore


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

    trust_w = (n0 * initial + A_w) / (n0 + N_w) + offset_w, where A_w sums the agreement of w's N_w labels
    with the other evidence on the same items (a Beta posterior mean of w's accuracy with a prior
    worth ``n0`` labels at ``initial``), and offset_w collects the cuts of the secured-check re-examination
    (Fig. 3) and audits. All of it is rebuilt from the stored events on resume.
    """

    def __init__(self, workers: Iterable[str], store: RunStore | None, initial: float = 0.9,
                 prior_strength: float = 10.0):
        self.store = store
        self.initial, self.n0 = initial, prior_strength
        self.trust: dict[str, float] = {str(w): initial for w in workers}
        self.tally: dict[str, tuple[float, float]] = {w: (0.0, 0.0) for w in self.trust}
        if store is not None:
            for row in store.trust_events().itertuples():
                self.trust[row.worker] = float(row.trust)
                self.tally[row.worker] = (float(row.agree), float(row.n))

    def __call__(self, worker: str) -> float:
        return self.trust.get(worker, self.initial)

    def table(self) -> dict[str, float]:
        return dict(sorted(self.trust.items()))

    def _beta(self, worker: str) -> float:
        a, n = self.tally.get(worker, (0.0, 0.0))
        return (self.n0 * self.initial + a) / (self.n0 + n)

    def change(self, iteration: int, worker: str, delta: float, reason: str, item_id: int | None = None) -> float:
        before = self(worker)
        after = float(np.clip(before + delta, 0.0, 1.0))
        self.trust[worker] = after
        if self.store is not None:
            a, n = self.tally.get(worker, (0.0, 0.0))
            self.store.add_trust_event(iteration, worker, after - before, after, reason, item_id, a, n)
        return after

    def set(self, iteration: int, worker: str, value: float, reason: str) -> float:
        return self.change(iteration, worker, value - self(worker), reason)

    def p1(self, workers: Iterable[str] | None = None) -> float:
        """P_1 of eq. 3: the average trust (a labeler's estimated accuracy) over ``workers``."""
        ws = list(self.trust) if workers is None else list(workers)
        return float(np.mean([self(w) for w in ws])) if ws else self.initial

    def agreement_update(self, iteration: int, agreement: pd.DataFrame) -> None:
        """Re-score every labeler on all its labels: ``agreement`` has columns worker and agreement (in [0, 1],
        the leave-one-out posterior of each label given, from the current aggregation). Scores are recomputed
        with each new model rather than frozen when a label arrives, so early, poorly informed estimates stop
        counting once better ones exist. One event per labeler whose score moved."""
        sums = agreement.groupby("worker")["agreement"].agg(["sum", "count"])
        for worker in sorted(self.trust):
            old = self._beta(worker)
            a, n = (float(sums.loc[worker, "sum"]), float(sums.loc[worker, "count"])) if worker in sums.index \
                else (0.0, 0.0)
            if (a, n) == self.tally.get(worker):
                continue
            self.tally[worker] = (a, n)
            self.change(iteration, worker, self._beta(worker) - old, f"agreement {a:.1f}/{n:.0f}")

    def penalize(self, iteration: int, worker: str, confidence: float, n_classes: int, amount: float,
                 item_id: int | None = None) -> float:
        """A consistent relabel contradicted ``worker``: cut trust by a ∝ 1/confidence (Fig. 3).

        ``confidence`` is F_i's probability for the label it predicted; a = amount * (1/|C|) / confidence, so
        a = amount for a model at chance and amount/|C| for a certain one.
        """
        a = amount * (1.0 / n_classes) / max(confidence, 1.0 / n_classes)
        return self.change(iteration, worker, -a, f"contradicted by relabel (conf {confidence:.2f})", item_id)
