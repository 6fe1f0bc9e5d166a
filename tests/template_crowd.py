"""The contract every crowd implementation keeps (``robust_al.annotators.CrowdProtocol``), as a test template in
the manner of scikit-activeml's ``template_query_strategy``: a test class inherits :class:`CrowdContract` and
supplies ``make_crowd(tmp_path, k) -> (crowd, items)``, a crowd whose labelers can all answer ``items``."""
from __future__ import annotations

import pytest

from robust_al.annotators import CrowdProtocol, HoldoutLeak
from robust_al.store import RunStore


class CrowdContract:
    def make_crowd(self, tmp_path, k: int):
        raise NotImplementedError

    def test_it_implements_the_protocol(self, tmp_path):
        crowd, _ = self.make_crowd(tmp_path, 1)
        assert isinstance(crowd, CrowdProtocol)

    def test_k_distinct_allowed_labelers_per_item_and_each_answer_stored(self, tmp_path):
        crowd, items = self.make_crowd(tmp_path, 2)
        banned = sorted(crowd.workers)[0]
        answers = crowd.ask(items[:5], 0, "query", lambda w: w != banned)
        by_item: dict[int, list[str]] = {}
        for a in answers:
            by_item.setdefault(a.item_id, []).append(a.worker)
        assert set(by_item) == set(items[:5])
        assert all(len(ws) == 2 and len(set(ws)) == 2 and banned not in ws for ws in by_item.values())
        stored = RunStore(tmp_path / "run").annotations()
        assert sorted(zip(stored["task"], stored["worker"])) == sorted((a.item_id, a.worker) for a in answers)

    def test_never_the_same_labeler_twice_on_an_item(self, tmp_path):
        crowd, items = self.make_crowd(tmp_path, 1)
        first = crowd.ask(items[:4], 0, "query", lambda w: True)
        again = crowd.ask(items[:4], 1, "reexam", lambda w: True, n_per_item=1,
                          exclude={a.item_id: {a.worker} for a in first})
        assert all(b.worker != a.worker for a in first for b in again if a.item_id == b.item_id)

    def test_a_holdout_item_never_reaches_anyone(self, tmp_path):
        crowd, items = self.make_crowd(tmp_path, 1)
        crowd.forbidden = {int(items[0])}
        with pytest.raises(HoldoutLeak):
            crowd.ask(items[:3], 0, "query", lambda w: True)
        assert RunStore(tmp_path / "run").annotations().empty
        assert not crowd.answerable(items[:1], lambda w: True)[0]

    def test_nothing_pending_at_the_start_or_the_end(self, tmp_path):
        # sync pulls answers given while no campaign ran, adopt_existing the labels a pool came with, finish
        # stores answers still on their way: a crowd that answers when asked has none of those, so each stores
        # nothing, and what ask returned is in the store exactly once before and after finish
        crowd, items = self.make_crowd(tmp_path, 1)
        store = RunStore(tmp_path / "run")
        assert crowd.sync() == 0 and crowd.adopt_existing() == [] and store.annotations().empty
        answers = crowd.ask(items[:3], 0, "query", lambda w: True)
        assert sorted(a.item_id for a in answers) == sorted(items[:3])
        asked = sorted((a.item_id, a.worker, a.label) for a in answers)

        def stored():
            s = store.annotations()
            return sorted(zip(s["task"], s["worker"], s["label"]))

        assert stored() == asked
        crowd.finish()
        assert stored() == asked and crowd.sync() == 0 and stored() == asked
