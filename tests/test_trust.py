"""Trust: eq. 3, the Fig. 3 cut, reliability scores, and rebuilding the ledger from the store."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robust_al.store import RunStore
from robust_al.trust import TrustLedger, independent_labelers
from robust_al.trust import worker_accuracy


def test_h_from_eq3_paper_example():
    # P_1 = 93.91% human accuracy on CIFAR-10, P_h = 0.9995: three labelers (section III-A)
    assert independent_labelers(0.9391, 0.9995) == 3


@pytest.mark.parametrize("p1,ph", [(0.6, 0.99), (0.8, 0.9995), (0.95, 0.999), (0.5, 0.9)])
def test_h_is_the_smallest_sufficient_number(p1, ph):
    h = independent_labelers(p1, ph)
    assert 1 - (1 - p1) ** h >= ph - 1e-12
    assert h == 1 or 1 - (1 - p1) ** (h - 1) < ph


def test_penalty_is_inversely_proportional_to_model_confidence():
    ledger = TrustLedger(["a", "b"], None, initial=0.9)
    ledger.penalize(0, "a", confidence=0.5, n_classes=2, amount=0.3)
    ledger.penalize(0, "b", confidence=1.0, n_classes=2, amount=0.3)
    cut_a, cut_b = 0.9 - ledger("a"), 0.9 - ledger("b")
    assert cut_a == pytest.approx(0.3) and cut_b == pytest.approx(0.15)


def _loo(worker_labels: dict[str, list[tuple[int, int]]], C: int) -> pd.DataFrame:
    rows = []
    for w, pairs in worker_labels.items():
        for truth, label in pairs:
            q = np.full(C, 0.02)
            q[truth] = 1 - 0.02 * (C - 1)
            rows.append({"worker": w, "label": label, **{f"q{c}": q[c] for c in range(C)}})
    return pd.DataFrame(rows)


def test_targeted_labeler_scores_below_an_honest_one_with_more_errors():
    C, rng = 10, np.random.default_rng(0)
    truths = rng.integers(C, size=300)
    honest = [(t, t if k % 10 else (t + 1) % C) for k, t in enumerate(truths)]  # 10% errors, spread out
    targeted = [(t, 7 if t == 1 else t) for t in truths]                          # ~10% errors, all 1 -> 7
    table = worker_accuracy(_loo({"h": honest, "m": targeted}, C), C)
    assert table.loc["m", "accuracy"] > table.loc["h", "accuracy"] - 0.05
    assert table.loc["m", "trust"] < table.loc["h", "trust"] - 0.1
    assert table.loc["m", "worst_class"] == 1


def test_ledger_rebuilds_from_the_store(tmp_path):
    store = RunStore(tmp_path)
    ledger = TrustLedger(["a", "b"], store)
    ledger.agreement_update(0, _loo({"a": [(0, 0)] * 5, "b": [(0, 1)] * 5}, 2), 2)
    ledger.penalize(0, "a", 0.7, 2, 0.3)
    again = TrustLedger(["a", "b"], RunStore(tmp_path))
    assert again.table() == ledger.table() and again.score == ledger.score
    assert again.bounds == ledger.bounds and again.tau == ledger.tau and again.routed == ledger.routed
