"""Trust per labeler (robust-active-learning paper, section III-B and Fig. 3)."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from robust_al.faults import kill_point
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


def reliability(loo: pd.DataFrame, n_classes: int, initial: float = 0.9, prior_strength: float = 10.0
                ) -> pd.DataFrame:
    """Agreement score per labeler from leave-one-out posteriors (columns worker, label, q0..q{C-1}).

    With q_i the posterior of item i from the other evidence, and a prior worth n0 labels at ``initial``:
      overall   a_w   = (n0 * initial + sum_i v_i q_i(l_wi)) / (n0 + sum_i v_i)          (accuracy)
      per class r_w(y) = (n0 * initial + sum_i v_i q_i(y) 1[l_wi = y]) / (n0 + sum_i v_i q_i(y))  (pi_w[y, y])
      score_w = min(a_w, min_y r_w(y)),   v_i = 1 - H(q_i) / log C  (how informative the other evidence is)
    The per-class term is what exposes a targeted labeler: always labeling c_t as c'_t costs little overall
    accuracy but drives pi_w[c_t, c_t] to 0, while an honest labeler's errors spread over all classes.
    """
    Q = loo[[f"q{c}" for c in range(n_classes)]].to_numpy()
    lab = loo["label"].to_numpy().astype(int)
    # how much the other evidence says at all: 1 - H(q)/log C. A flat posterior (nobody else saw the item, or
    # only a poor model did) neither confirms nor contradicts the label, so it must not count as disagreement
    inform = 1.0 + (Q * np.log(np.clip(Q, 1e-12, None))).sum(axis=1) / np.log(n_classes)
    rows = []
    for worker, idx in loo.groupby("worker").indices.items():
        q, l, v = Q[idx], lab[idx], inform[idx]
        prior = prior_strength * initial
        agree = q[np.arange(len(idx)), l]
        overall = (prior + (v * agree).sum()) / (prior_strength + v.sum())
        mass = (v[:, None] * q).sum(axis=0)
        hit = np.bincount(l, weights=v * agree, minlength=n_classes)
        per_class = (prior + hit) / (prior_strength + mass)
        rows.append((worker, float(min(overall, per_class.min())), float(overall), int(per_class.argmin()),
                     len(idx)))
    return pd.DataFrame(rows, columns=["worker", "score", "accuracy", "worst_class", "n"]).set_index("worker")


class TrustLedger:
    """Trust in [0, 1] per labeler; every change is an event written to the store when it happens.

    trust_w = score_w + offset_w: ``score_w`` is the agreement score of :func:`reliability` over all of w's
    labels (recomputed with each new aggregation), ``offset_w`` collects the cuts of the secured-check
    re-examination (Fig. 3) and audits. Both are rebuilt from the stored events on resume.
    """

    def __init__(self, workers: Iterable[str], store: RunStore | None, initial: float = 0.9,
                 prior_strength: float = 10.0):
        self.store = store
        self.initial, self.n0 = initial, prior_strength
        self.trust: dict[str, float] = {str(w): initial for w in workers}
        self.score: dict[str, tuple[float, float]] = {w: (initial, 0.0) for w in self.trust}
        if store is not None:
            for row in store.trust_events().itertuples():
                self.trust[row.worker] = float(row.trust)
                if row.score is not None and not np.isnan(row.score):
                    self.score[row.worker] = (float(row.score), float(row.n))

    def __call__(self, worker: str) -> float:
        return self.trust.get(worker, self.initial)

    def table(self) -> dict[str, float]:
        return dict(sorted(self.trust.items()))

    def change(self, iteration: int, worker: str, delta: float, reason: str, item_id: int | None = None) -> float:
        before = self(worker)
        after = float(np.clip(before + delta, 0.0, 1.0))
        self.trust[worker] = after
        if self.store is not None:
            score, n = self.score.get(worker, (self.initial, 0.0))
            self.store.add_trust_event(iteration, worker, after - before, after, reason, item_id, score, n)
            kill_point("trust-event", iteration)
        return after

    def set(self, iteration: int, worker: str, value: float, reason: str) -> float:
        return self.change(iteration, worker, value - self(worker), reason)

    def p1(self, workers: Iterable[str] | None = None) -> float:
        """P_1 of eq. 3: the average trust (a labeler's estimated accuracy) over ``workers``."""
        ws = list(self.trust) if workers is None else list(workers)
        return float(np.mean([self(w) for w in ws])) if ws else self.initial

    def agreement_update(self, iteration: int, loo: pd.DataFrame, n_classes: int) -> None:
        """Re-score every labeler on all its labels from leave-one-out posteriors (see :func:`reliability`).
        Scores are recomputed with each new model rather than frozen when a label arrives, so early, poorly
        informed estimates stop counting once better ones exist. One event per labeler whose score moved."""
        table = reliability(loo, n_classes, self.initial, self.n0)
        # labelers appear as they first answer (a live Label Studio crowd); pseudo-workers (the model) have none
        for worker in sorted(set(self.trust) | {w for w in table.index if not str(w).startswith("__")}):
            if worker not in table.index:
                continue
            new = (float(table.loc[worker, "score"]), float(table.loc[worker, "n"]))
            old = self.score.get(worker, (self.initial, 0.0))
            if new == old:
                continue
            self.score[worker] = new
            row = table.loc[worker]
            self.change(iteration, worker, new[0] - old[0],
                        f"agreement {row['accuracy']:.3f} over {int(row['n'])} labels, worst class "
                        f"{int(row['worst_class'])}")

    def penalize(self, iteration: int, worker: str, confidence: float, n_classes: int, amount: float,
                 item_id: int | None = None) -> float:
        """A consistent relabel contradicted ``worker``: cut trust by a ∝ 1/confidence (Fig. 3).

        ``confidence`` is F_i's probability for the label it predicted; a = amount * (1/|C|) / confidence, so
        a = amount for a model at chance and amount/|C| for a certain one.
        """
        a = amount * (1.0 / n_classes) / max(confidence, 1.0 / n_classes)
        return self.change(iteration, worker, -a, f"contradicted by relabel (conf {confidence:.2f})", item_id)
