"""The calibrated trust model: accuracy posteriors, intervals, relative thresholds, safe routing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import spearmanr

from robust_al.crowd.aggregate import TrustWeightedDS
from robust_al.trust import assess_crowd, routing_threshold, safe_route, worker_accuracy


def _crowd(seed=0, C=5, T=1500, honest=40, extra=()):
    """Honest one-coin labelers of accuracies U(0.4, 0.95), quiet (15 labels) and busy (200), plus extras."""
    rng = np.random.default_rng(seed)
    y = rng.integers(C, size=T)
    rows, acc = [], {}
    for w in range(honest):
        p = rng.uniform(0.4, 0.95)
        acc[f"h{w}"] = p
        for i in rng.choice(T, [15, 40, 200][w % 3], replace=False):
            rows.append((i, f"h{w}", y[i] if rng.random() < p else (y[i] + 1 + rng.integers(C - 1)) % C))
    for name, rule, n in extra:
        for i in rng.choice(T, n, replace=False):
            rows.append((i, name, rule(rng, y[i])))
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), y, acc


def _targeted(rng, true):  # class 0 always labeled 3, 90 % right otherwise
    if true == 0:
        return 3
    return true if rng.random() < 0.9 else (true + 1) % 5


def _spam(rng, true):
    return int(rng.integers(5))


def test_trust_tracks_true_accuracy_and_is_calibrated():
    df, _y, acc = _crowd()
    table = worker_accuracy(TrustWeightedDS(5).fit(df).leave_one_out(), 5)
    h = table.loc[list(acc)]
    true = np.array([acc[w] for w in h.index])
    assert spearmanr(h["accuracy"], true).statistic > 0.8
    busy = h["n"] >= 200
    assert np.abs(h.loc[busy, "accuracy"] - true[busy.to_numpy()]).mean() < 0.06  # calibrated, not just ranked
    inside = (h["lower"] <= true) & (true <= h["upper"])
    assert inside.mean() >= 0.75  # 90 % intervals


def test_interval_narrows_with_labels_and_busy_is_not_punished_for_answering():
    df, _y, acc = _crowd(seed=1)
    table = worker_accuracy(TrustWeightedDS(5).fit(df).leave_one_out(), 5)
    width = (table["upper"] - table["lower"]).groupby(table["n"]).mean()
    assert width.loc[200] < width.loc[40] < width.loc[15]
    # equally accurate busy and quiet honest labelers: trust must not rank busy below quiet because it answered more
    h = table.loc[list(acc)]
    resid = h["accuracy"] - np.array([acc[w] for w in h.index])
    assert resid[h["n"] >= 200].mean() > resid[h["n"] <= 15].mean() - 0.05


def test_targeted_attacker_and_spammer_rank_lowest_and_are_routed_alone():
    df, _y, acc = _crowd(extra=[("target", _targeted, 150), ("spam", _spam, 150)])
    a = assess_crowd(df, 5, route=True)
    w = a.workers
    assert set(w.index[w["routed"]]) == {"target", "spam"}
    assert w.loc["target", "trust"] < w.loc[list(acc), "trust"].min()
    assert "class-0" in w.loc["target", "flags"] and "below-threshold" in w.loc["spam", "flags"]
    assert w.loc["target", "accuracy"] > 0.6  # overall it looks fine: only the class test catches it


def test_routing_on_a_clean_crowd_costs_nothing():
    df, y, _acc = _crowd(seed=2)
    plain, routed = assess_crowd(df, 5), assess_crowd(df, 5, route=True)
    acc_of = lambda a: (a.labels.to_numpy() == y[a.labels.index]).mean()
    assert acc_of(routed) >= acc_of(plain) - 0.005


def test_threshold_is_relative_to_chance_and_the_crowd():
    assert routing_threshold(2, 0.9) == pytest.approx(0.7)
    assert routing_threshold(10, 0.7) == pytest.approx(0.4)
    assert routing_threshold(4, 0.2) == pytest.approx(0.25)  # a crowd at chance routes nobody by accuracy


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 0.3), st.floats(0, 1)), min_size=1, max_size=30),
       st.integers(1, 5), st.floats(0.1, 0.9))
def test_safe_route_never_removes_more_than_allowed_or_a_plausibly_good_labeler(rows, min_kept, tau):
    table = pd.DataFrame([(u - w, u, u - w / 2, c) for u, w, c in rows],
                         columns=["lower", "upper", "trust", "class_upper"])
    table["lower"] = table["lower"].clip(lower=0)
    routed = safe_route(table, tau, min_kept=min_kept)
    assert routed.sum() <= max(0, min(len(table) // 2, len(table) - min_kept))
    class_ok = (table["class_upper"] >= tau) | (table["class_upper"] >= table["lower"])
    assert not (routed & (table["upper"] >= tau) & class_ok).any()
