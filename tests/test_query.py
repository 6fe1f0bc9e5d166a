"""Query strategies: max-min selection (eq. 4), incremental min distances, N_c allocation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robust_al.query import (ClusterMaxMin, CoreSet, EntropySampling, MarginSampling, MinDistance,
                             QueryContext, RandomSampling, allocate, min_sq_distances)


def _ctx(E, labeled_pos, candidates, seed=0, proba=None):
    mind = MinDistance(E)
    mind.reset(E, E[labeled_pos])
    return QueryContext(positions=np.asarray(candidates), embed=E[candidates], rng=np.random.default_rng(seed),
                        mind=mind, proba=proba)


def test_maxmin_picks_the_farthest_item_on_a_hand_made_example():
    # labeled points at 0 and 10 on a line; candidates at 1, 4, 6, 9 and 25: 25 is farthest (15 from 10),
    # then, with 25 taken as labeled, 4 and 6 tie at distance 4 and the first of them wins
    E = np.array([[0.0], [10.0], [1.0], [4.0], [6.0], [9.0], [25.0]], dtype=np.float32)
    ctx = _ctx(E, [0, 1], np.arange(2, 7))
    picks = CoreSet().query(ctx, 2)
    assert E[ctx.positions[picks[0]], 0] == 25.0
    assert E[ctx.positions[picks[1]], 0] in (4.0, 6.0)


def test_cluster_maxmin_takes_the_farthest_item_of_each_cluster():
    # two well separated clusters; in each, one candidate is clearly farthest from the labeled point
    E = np.array([[0, 0], [0.1, 0], [0.2, 0], [1.0, 0],        # cluster A: labeled at 0, farthest 1.0
                  [50, 50], [50.1, 50], [50, 51.5], [50.2, 50.1]], dtype=np.float32)  # B: labeled at (50, 50)
    ctx = _ctx(E, [0, 4], [1, 2, 3, 5, 6, 7])
    picks = ClusterMaxMin(n_clusters=2, typicality=0.0).query(ctx, 2)
    chosen = {tuple(E[ctx.positions[p]]) for p in picks}
    assert chosen == {(1.0, 0.0), (50.0, 51.5)}


@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(5, 60), st.integers(1, 6)),
              elements=st.floats(-100, 100, width=32)),
       st.lists(st.integers(0, 10_000), min_size=1, max_size=4), st.integers(1, 7))
def test_incremental_min_distances_equal_brute_force(E, batch_seeds, chunk):
    n = len(E)
    mind = MinDistance(E, chunk=chunk)
    labeled = []
    for s in batch_seeds:
        new = list(np.random.default_rng(s).choice(n, size=min(3, n), replace=False))
        mind.add_positions(np.array(new))
        labeled += new
    E64 = E.astype(np.float64)
    brute = ((E64[:, None, :] - E64[None, labeled, :]) ** 2).sum(-1).min(axis=1)
    scale = max(1.0, float(np.abs(E64).max()) ** 2)
    np.testing.assert_allclose(mind.d, brute, atol=1e-4 * scale)


def test_chunked_distances_match_unchunked():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(1000, 16)).astype(np.float32), rng.normal(size=(70, 16)).astype(np.float32)
    np.testing.assert_allclose(min_sq_distances(X, Y, chunk=37), min_sq_distances(X, Y, chunk=10_000), rtol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 200), st.lists(st.integers(0, 50), min_size=1, max_size=8), st.integers(0, 1000))
def test_allocation_spends_the_budget_and_respects_cluster_sizes(budget, sizes, seed):
    rng = np.random.default_rng(seed)
    sizes = np.array(sizes)
    n_c = allocate(budget, sizes, rng.random(len(sizes)), rng.random(len(sizes)) + 0.01)
    assert n_c.sum() == min(budget, sizes.sum())
    assert (n_c <= sizes).all() and (n_c >= 0).all()


def test_allocation_favours_inaccurate_and_vulnerable_clusters():
    sizes = np.array([100, 100, 100])
    n_err = allocate(30, sizes, np.array([0.0, 0.0, 0.5]), np.array([1.0, 1.0, 1.0]))
    n_vul = allocate(30, sizes, np.array([0.1, 0.1, 0.1]), np.array([1.0, 1.0, 0.2]))
    assert n_err[2] > n_err[0] and n_vul[2] > n_vul[0]


from template_strategy import StrategyContract  # noqa: E402


class TestRandomSampling(StrategyContract):
    def make(self):
        return RandomSampling()


class TestEntropySampling(StrategyContract):
    def make(self):
        return EntropySampling()


class TestMarginSampling(StrategyContract):
    def make(self):
        return MarginSampling()


class TestCoreSet(StrategyContract):
    def make(self):
        return CoreSet()


class TestClusterMaxMin(StrategyContract):
    def make(self):
        return ClusterMaxMin()


class TestClusterMaxMinPure(StrategyContract):  # the paper's max-min: no typicality, three clusters
    def make(self):
        return ClusterMaxMin(n_clusters=3, typicality=0.0)


class TestClusterMaxMinTypical(StrategyContract):
    def make(self):
        return ClusterMaxMin(typicality=2.0)


def test_uncertainty_strategies_pick_the_least_certain():
    proba = np.array([[0.98, 0.02], [0.5, 0.5], [0.7, 0.3]])
    E = np.zeros((3, 1), np.float32)
    ctx = _ctx(E, [], [0, 1, 2], proba=proba)
    assert EntropySampling().query(ctx, 1)[0] == 1
    assert MarginSampling().query(ctx, 1)[0] == 1


def test_holdout_is_stratified_and_drawn_from_free_items():
    from robust_al.data import Pool, draw_holdout

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [500, 300, 200])
    pool = Pool(np.arange(1000) + 10, rng.random((1000, 3)), y, 3)
    free = pool.ids[100:]
    S = draw_holdout(pool, free, 100, np.random.default_rng(1))
    assert len(S) == 100 and np.isin(S, free).all()
    counts = np.bincount(pool.y[pool.positions(S)], minlength=3)
    expected = 100 * np.bincount(pool.y[100:], minlength=3) / 900
    assert np.abs(counts - expected).max() <= 1


@pytest.mark.parametrize("method", ["kmeans", "kmedoids", "agglomerative"])
def test_clustering_methods_find_separated_blobs_and_silhouette_picks_n(method):
    from robust_al.query import cluster_pool

    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    truth = rng.integers(4, size=400)
    E = centers[truth] + rng.normal(0, 0.5, size=(400, 2)).astype(np.float32)
    labels, found = cluster_pool(E, method, n_clusters=None, max_clusters=8, seed=0)
    assert len(found) == 4
    # each found cluster is one true blob
    for c in range(4):
        assert len(np.unique(truth[labels == c])) == 1


def test_typicality_weighting_picks_the_dense_part_before_outliers():
    # one cluster: a dense blob of 200 points and 5 far outliers; pure max-min (the paper's) takes the
    # outliers first, the typicality-weighted one takes the blob first and still spreads over it
    rng = np.random.default_rng(0)
    blob = rng.normal(0, 1, size=(200, 2))
    outliers = np.array([[12, 0], [0, 12], [-12, 0], [0, -12], [9, 9]], dtype=float)
    E = np.vstack([[[0.3, 0.2]], blob, outliers]).astype(np.float32)   # row 0 is labeled
    cand = np.arange(1, len(E))
    is_outlier = lambda picks: np.isin(cand[picks], np.arange(201, 206))
    plain = ClusterMaxMin(n_clusters=1, typicality=0.0).query(_ctx(E, [0], cand), 5)
    typical = ClusterMaxMin(n_clusters=1, typicality=2.0).query(_ctx(E, [0], cand), 5)
    assert is_outlier(plain).all()
    assert not is_outlier(typical).any()
    spread = E[cand[typical]]
    assert np.min([np.linalg.norm(a - b) for i, a in enumerate(spread) for b in spread[i + 1:]]) > 0.5
    # with nothing labeled yet, the most typical point comes first (no arbitrary "first infinite" pick)
    first = ClusterMaxMin(n_clusters=1, typicality=2.0).query(_ctx(E, [], cand), 1)
    assert np.linalg.norm(E[cand[first[0]]]) < 1.0


def test_typicality_is_inverse_mean_knn_distance_and_samples_large_sets():
    from robust_al.query.strategies import typicality

    E = np.array([[0.0], [1.0], [3.0], [10.0]], dtype=np.float32)
    t = typicality(E, k=2)
    np.testing.assert_allclose(t, 1 / np.array([2.0, 1.5, 2.5, 8.0]), rtol=1e-5)
    big = np.random.default_rng(1).normal(size=(3000, 4)).astype(np.float32)
    a, b = typicality(big, reference=500, rng=np.random.default_rng(0)), typicality(big)
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_typicality_of_a_row_outside_the_reference_sample_counts_its_nearest_neighbour():
    from robust_al.query.strategies import typicality

    E = np.random.default_rng(2).normal(size=(60, 3)).astype(np.float32)
    t = typicality(E, k=4, reference=20, rng=np.random.default_rng(5))
    ref = np.sort(np.random.default_rng(5).choice(60, 20, replace=False))
    for i in range(60):
        d = np.sort(np.linalg.norm(E[ref] - E[i], axis=1))
        expected = d[1:5] if i in ref else d[:4]  # itself excluded, never a real neighbour
        assert t[i] == pytest.approx(1 / expected.mean(), rel=1e-4)
