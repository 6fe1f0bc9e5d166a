"""Trust per labeler (robust-active-learning paper, section III-B and Fig. 3)."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

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
    """Trust in [0, 1] per labeler; every change is an event written to the store when it happens."""

    def __init__(self, workers: Iterable[str], store: RunStore | None, initial: float = 0.9,
                 eta: float = 0.05):
        self.store = store
        self.initial, self.eta = initial, eta
        self.trust: dict[str, float] = {str(w): initial for w in workers}
        if store is not None:
            # replay the stored events (of completed iterations) to rebuild the table
            for row in store.trust_events().itertuples():
                self.trust[row.worker] = float(row.trust)

    def __call__(self, worker: str) -> float:
        return self.trust.get(worker, self.initial)

    def table(self) -> dict[str, float]:
        return dict(sorted(self.trust.items()))

    def change(self, iteration: int, worker: str, delta: float, reason: str, item_id: int | None = None) -> float:
        before = self(worker)
        after = float(np.clip(before + delta, 0.0, 1.0))
        self.trust[worker] = after
        if self.store is not None:
            self.store.add_trust_event(iteration, worker, after - before, after, reason, item_id)
        return after

    def set(self, iteration: int, worker: str, value: float, reason: str) -> float:
        return self.change(iteration, worker, value - self(worker), reason)

    def p1(self, workers: Iterable[str] | None = None) -> float:
        """P_1 of eq. 3: the average trust (a labeler's estimated accuracy) over ``workers``."""
        ws = list(self.trust) if workers is None else list(workers)
        return float(np.mean([self(w) for w in ws])) if ws else self.initial

    def agreement_update(self, iteration: int, answers: Iterable[tuple[int, str, int]],
                         estimate: Mapping[int, int]) -> None:
        """Move each labeler's trust toward its agreement with the current label estimate.

        One aggregated event per labeler and iteration: t <- t + eta * sum_j (1[agree_j] - t), applied
        answer by answer (an exponential moving average of agreement, so trust tracks accuracy).
        """
        per_worker: dict[str, list[bool]] = {}
        for item, worker, label in answers:
            if item in estimate:
                per_worker.setdefault(worker, []).append(int(label) == int(estimate[item]))
        for worker in sorted(per_worker):
            t = self(worker)
            for agree in per_worker[worker]:
                t += self.eta * (float(agree) - t)
            n = len(per_worker[worker])
            self.change(iteration, worker, t - self(worker), f"agreement {sum(per_worker[worker])}/{n}")

    def penalize(self, iteration: int, worker: str, confidence: float, n_classes: int, amount: float,
                 item_id: int | None = None) -> float:
        """A consistent relabel contradicted ``worker``: cut trust by a ∝ 1/confidence (Fig. 3).

        ``confidence`` is F_i's probability for the label it predicted; a = amount * (1/|C|) / confidence, so
        a = amount for a model at chance and amount/|C| for a certain one.
        """
        a = amount * (1.0 / n_classes) / max(confidence, 1.0 / n_classes)
        return self.change(iteration, worker, -a, f"contradicted by relabel (conf {confidence:.2f})", item_id)
