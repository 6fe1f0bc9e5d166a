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
    # the interval's coverage is tested over many crowds below (one crowd's 40 intervals cannot tell 90 % from 75 %)


def _one_coin_crowd(seed, C=5, T=1500, honest=40):
    """``_crowd``'s honest part, vectorized: one-coin labelers of accuracy p ~ U(0.4, 0.95), each wrong answer
    uniform over the other C - 1 classes; 15 / 40 / 200 labels each; true classes uniform."""
    rng = np.random.default_rng(seed)
    y = rng.integers(C, size=T)
    p = rng.uniform(0.4, 0.95, size=honest)
    n = np.array([15, 40, 200])[np.arange(honest) % 3]
    who = np.repeat(np.arange(honest), n)
    task = np.concatenate([rng.choice(T, k, replace=False) for k in n])
    right = rng.random(len(task)) < p[who]
    label = np.where(right, y[task], (y[task] + 1 + rng.integers(C - 1, size=len(task))) % C)
    acc = {f"h{w}": float(p[w]) for w in range(honest)}
    return pd.DataFrame({"task": task, "worker": [f"h{w}" for w in who], "label": label}), acc


def _exact_leave_one_out(df, acc, C=5):
    """The evidence eq. 1 presupposes: q_i = P(y_i | the *other* labels on i), exactly, under the true one-coin
    accuracies and the uniform class prior the crowd was drawn with."""
    p = df["worker"].map(acc).to_numpy()
    lab = df["label"].to_numpy()
    L = np.where(np.arange(C) == lab[:, None], np.log(p)[:, None], np.log((1 - p) / (C - 1))[:, None])
    other = pd.DataFrame(L).groupby(df["task"].to_numpy()).transform("sum").to_numpy() - L
    q = np.exp(other - other.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    return pd.concat([df[["task", "worker", "label"]].reset_index(drop=True),
                      pd.DataFrame(q, columns=[f"q{c}" for c in range(C)])], axis=1)


N_CROWDS = 60  # x 40 labelers = 2400 intervals: a correct 90 % interval's coverage has SD sqrt(.09/2400) = 0.0061,
# so 0.85 and 0.95 are 8 SD away (the busy third alone, 780 intervals: SD 0.011, 4.6 SD)


@pytest.fixture(scope="module")
def coverage_runs():
    """Per labeler of N_CROWDS one-coin crowds: its true accuracy, label count, and the 90 % and 50 % intervals
    from exact leave-one-out evidence ("exact") and from the Dawid-Skene leave-one-out the campaign uses ("ds")."""
    out = []
    for seed in range(N_CROWDS):
        df, acc = _one_coin_crowd(seed)
        for evidence, loo in (("exact", _exact_leave_one_out(df, acc)),
                              ("ds", TrustWeightedDS(5).fit(df).leave_one_out())):
            for level in (0.9, 0.5) if evidence == "exact" else (0.9,):
                t = worker_accuracy(loo, 5, level=level).loc[list(acc)]
                out.append(t[["lower", "upper", "n"]].assign(true=[acc[w] for w in t.index], evidence=evidence,
                                                            level=level, seed=seed))
    return pd.concat(out)


def _coverage(t, shrink=1.0):
    mid, half = (t["lower"] + t["upper"]) / 2, shrink * (t["upper"] - t["lower"]) / 2
    return float(((mid - half <= t["true"]) & (t["true"] <= mid + half)).mean())


def _nominal_90(coverage):
    return 0.85 <= coverage <= 0.95


def test_the_90_percent_interval_covers_the_true_accuracy_90_percent_of_the_time(coverage_runs):
    # evidence of the model's own form (eq. 1: q_i the exact posterior of i from the other labels): the interval
    # is a credible interval of p_w. Measured here: 0.927 of 2400; by labels 15 / 40 / 200: 0.93 / 0.93 / 0.92
    # (on 300 other crowds, 12,000 intervals: 0.910; 0.92 / 0.90 / 0.91)
    r = coverage_runs[coverage_runs["evidence"] == "exact"]
    at90, at50 = r[r["level"] == 0.9], r[r["level"] == 0.5]
    assert len(at90) == 40 * N_CROWDS
    overall, busy = _coverage(at90), _coverage(at90[at90["n"] == 200])  # busy: the likelihood makes the interval
    assert _nominal_90(overall) and _nominal_90(busy), (overall, busy)
    # the check says no to intervals too narrow for 90 %: the 50 % one (measured 0.52) and the 90 % one
    # shrunk to 60 % of its width (measured 0.70)
    assert abs(_coverage(at50) - 0.5) < 0.07 and not _nominal_90(_coverage(at50))
    assert not _nominal_90(_coverage(at90, shrink=0.6))


def test_the_interval_on_the_campaigns_dawid_skene_evidence_is_near_nominal(coverage_runs):
    # the same crowds scored on TrustWeightedDS's leave-one-out posteriors, as the campaign does. Measured here:
    # 0.879 of 2400; by labels 15 / 40 / 200: 0.90 / 0.89 / 0.85 (300 other crowds: 0.872; 0.90 / 0.87 / 0.84).
    # The busy labelers' intervals sit high (over all, the true accuracy falls under the interval 8.5 % of the
    # time and over it 4.3 %); with exact evidence the same labelers are covered 0.91, so the shortfall is the
    # evidence's, not the interval's: pinned here so that it gets no worse
    r = coverage_runs[(coverage_runs["evidence"] == "ds") & (coverage_runs["level"] == 0.9)]
    overall, busy = _coverage(r), _coverage(r[r["n"] == 200])
    assert _nominal_90(overall) and busy >= 0.78, (overall, busy)
    assert not _nominal_90(_coverage(r, shrink=0.6))

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
