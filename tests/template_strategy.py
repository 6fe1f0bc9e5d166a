"""The contract every query strategy keeps, as a test template in the manner of scikit-activeml's
``template_query_strategy``: a test class inherits :class:`StrategyContract` and supplies ``make()``."""
from __future__ import annotations

import numpy as np

from robust_al.query import MinDistance, QueryContext


def context(n_labeled: int, n_candidates: int, seed: int = 0, d: int = 5, C: int = 4) -> QueryContext:
    """Random embeddings: the first ``n_labeled`` rows labeled, the next ``n_candidates`` candidates."""
    rng = np.random.default_rng(1)
    E = rng.normal(size=(n_labeled + n_candidates, d)).astype(np.float32)
    mind = MinDistance(E)
    mind.reset(E, E[:n_labeled])
    cand = np.arange(n_labeled, n_labeled + n_candidates)
    return QueryContext(positions=cand, embed=E[cand], rng=np.random.default_rng(seed), mind=mind,
                        proba=rng.dirichlet(np.ones(C), size=n_candidates))


class StrategyContract:
    def make(self):
        raise NotImplementedError

    def test_distinct_candidates_within_budget(self):
        picks = self.make().query(context(50, 150), 20)
        assert len(picks) == 20 and len(set(picks.tolist())) == 20
        assert ((picks >= 0) & (picks < 150)).all()

    def test_the_same_seed_gives_the_same_picks(self):
        a = self.make().query(context(50, 150, seed=7), 20)
        b = self.make().query(context(50, 150, seed=7), 20)
        np.testing.assert_array_equal(a, b)

    def test_a_budget_larger_than_the_pool_takes_the_whole_pool(self):
        picks = self.make().query(context(30, 12), 40)
        assert sorted(picks.tolist()) == list(range(12))

    def test_an_empty_pool_or_budget_gives_no_picks(self):
        assert len(self.make().query(context(30, 0), 10)) == 0
        assert len(self.make().query(context(30, 20), 0)) == 0

    def test_no_labeled_items_yet(self):
        picks = self.make().query(context(0, 60), 10)
        assert len(set(picks.tolist())) == 10
