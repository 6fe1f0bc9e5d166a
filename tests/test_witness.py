"""The cross-fitted witness (robust_al.trust.witness): what it may see, and what it finds at one label per item."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings, strategies as st

from robust_al.crowd.aggregate import TrustWeightedDS, confidence_band, cross_fit_worker
from robust_al.trust import worker_accuracy
from robust_al.trust.witness import cross_fitted_testimony, witness_outliers


def _blobs(n: int, rng: np.random.Generator, d: int = 20) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    return rng.normal(size=(n, d)) + 1.2 * y[:, None] * np.r_[np.ones(4), np.zeros(d - 4)], y


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 59))
def test_an_items_own_label_never_reaches_its_testimony(seed, j):
    rng = np.random.default_rng(seed)
    Z, y = _blobs(60, rng)
    Z_S, y_S = _blobs(20, rng)
    w = np.ones(60)
    P, _ = cross_fitted_testimony(Z, y, w, Z_S, y_S, 2, np.random.default_rng(seed))
    y2, w2 = y.copy(), w.copy()
    y2[j], w2[j] = 1 - y2[j], 0.3  # another label, another weight for item j only
    P2, _ = cross_fitted_testimony(Z, y2, w2, Z_S, y_S, 2, np.random.default_rng(seed))
    np.testing.assert_array_equal(P[j], P2[j])
    assert np.allclose(P.sum(axis=1), 1.0)


def test_it_measures_itself_on_the_secured_set_by_band():
    rng = np.random.default_rng(0)
    Z, y = _blobs(200, rng)
    Z_S, y_S = _blobs(100, rng)
    _, counts = cross_fitted_testimony(Z, y, np.ones(200), Z_S, y_S, 2, rng)
    assert counts.sum() == 100
    sure = counts[-1]
    assert np.trace(sure) / sure.sum() > 0.9  # where it is sure it is right


def test_at_one_label_per_item_the_witness_puts_a_colluding_bloc_under_every_honest_labeler():
    """k = 1: no two labelers share an item, so agreement alone cannot tell who lies (each label's only other
    evidence is a model). 8 honest labelers (95 % right) and 3 colluders (half their labels flipped), 40 items
    each: scored against the cross-fitted witness, the three are the least trusted and routed out."""
    rng = np.random.default_rng(1)
    Z, y = _blobs(440, rng)
    Z_S, y_S = _blobs(150, rng)
    workers = np.repeat([f"h{i}" for i in range(8)] + [f"c{i}" for i in range(3)], 40)
    lie = np.where(np.char.startswith(workers.astype(str), "c"), rng.random(440) < 0.5, rng.random(440) < 0.05)
    labels = np.where(lie, 1 - y, y)
    ann = pd.DataFrame({"task": np.arange(440), "worker": workers, "label": labels})
    P, counts = cross_fitted_testimony(Z, labels, np.ones(440), Z_S, y_S, 2, np.random.default_rng(0))
    band = confidence_band(P.max(axis=1), 2)
    witness = pd.DataFrame({"task": np.arange(440), "worker": [cross_fit_worker(b) for b in band],
                            "label": P.argmax(axis=1)})
    known = {cross_fit_worker(b): counts[b] for b in range(len(counts))}
    ds = TrustWeightedDS(2).fit(pd.concat([ann, witness], ignore_index=True), known_counts=known)
    loo = ds.leave_one_out()
    table = worker_accuracy(loo[~loo["worker"].str.startswith("__")], 2)
    honest, bloc = table.loc[[f"h{i}" for i in range(8)]], table.loc[[f"c{i}" for i in range(3)]]
    assert bloc["trust"].max() < honest["trust"].min()
    # their intervals stay wide (40 labels, a witness right on 85 % of items), but the relative test flags
    # exactly them, which routes them out while their interval reaches under tau
    assert witness_outliers(ann, witness.set_index("task")["label"]) == {f"c{i}": "contradicts-witness"
                                                                          for i in range(3)}
    # without the witness there is nothing to score against: everyone looks alike
    alone = worker_accuracy(TrustWeightedDS(2).fit(ann).leave_one_out(), 2)
    assert alone.loc[[f"c{i}" for i in range(3)], "trust"].max() > alone.loc[[f"h{i}" for i in range(8)], "trust"].min()


def test_the_relative_test_flags_nobody_in_an_honest_crowd_however_weak_the_witness():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 600)
    workers = np.repeat([f"h{i}" for i in range(10)], 60)
    labels = np.where(rng.random(600) < 0.9, truth, rng.integers(0, 3, 600))
    ann = pd.DataFrame({"task": np.arange(600), "worker": workers, "label": labels})
    for witness_acc in (0.4, 0.7, 0.95):
        said = np.where(rng.random(600) < witness_acc, truth, rng.integers(0, 3, 600))
        assert witness_outliers(ann, pd.Series(said, index=np.arange(600))) == {}
