"""Annotators: each simulated behaviour does what the threat model says; replay only answers what was seen;
the crowd never asks twice and never shows a holdout item."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robust_al.annotators import (BenignAnnotator, ColludingAnnotator, Crowd, HoldoutLeak, MaliciousAnnotator,
                                  SpammerAnnotator, replayed_crowd)
from robust_al.store import RunStore

N, C = 4000, 5
TRUTH = {i: i % C for i in range(N)}
ITEMS = list(range(N))


def labels(annotator, items=ITEMS):
    return np.array([a.label for a in annotator.annotate(items)])


def test_benign_errs_with_probability_pr_and_uniformly():
    got = labels(BenignAnnotator("b", TRUTH, C, pr=0.2, seed=1))
    truth = np.array([TRUTH[i] for i in ITEMS])
    wrong = got != truth
    assert abs(wrong.mean() - 0.2) < 0.03
    # wrong answers spread over the other classes: true class 0 -> 1..4 each ~ a quarter
    counts = np.bincount(got[(truth == 0) & wrong], minlength=C)[1:]
    assert counts.min() > 0.15 * counts.sum()


def test_malicious_always_maps_target_and_is_honest_otherwise():
    got = labels(MaliciousAnnotator("m", TRUTH, C, target=2, to=4, pr=0.0, seed=0))
    truth = np.array([TRUTH[i] for i in ITEMS])
    assert (got[truth == 2] == 4).all()
    assert (got[truth != 2] == truth[truth != 2]).all()


def test_spammer_is_uniform_and_uninformative():
    got = labels(SpammerAnnotator("s", TRUTH, C, seed=0))
    assert abs((got == np.array([TRUTH[i] for i in ITEMS])).mean() - 1 / C) < 0.03
    assert np.bincount(got, minlength=C).min() > 0.8 * N / C


def test_colluders_give_the_same_wrong_label_on_the_same_items():
    a = labels(ColludingAnnotator("c0", TRUTH, C, group="g", rate=0.3, pr=0.0, seed=3))
    b = labels(ColludingAnnotator("c1", TRUTH, C, group="g", rate=0.3, pr=0.0, seed=3))
    truth = np.array([TRUTH[i] for i in ITEMS])
    assert (a == b).all()
    assert abs((a != truth).mean() - 0.3) < 0.03


def test_answers_depend_only_on_seed_worker_and_item():
    w = BenignAnnotator("b", TRUTH, C, pr=0.5, seed=7)
    forward = labels(w, ITEMS[:300])
    backward = labels(w, ITEMS[:300][::-1])[::-1]
    assert (forward == backward).all()
    assert (labels(BenignAnnotator("b", TRUTH, C, pr=0.5, seed=7), ITEMS[:300]) == forward).all()


def test_replayed_worker_answers_only_items_it_saw():
    rec = pd.DataFrame({"task": [1, 2, 2, 3], "worker": ["w1", "w1", "w2", "w2"], "label": [0, 1, 1, 2]})
    crowd = {a.worker_id: a for a in replayed_crowd(rec)}
    assert [a.label for a in crowd["w1"].annotate([1, 2])] == [0, 1]
    assert not crowd["w1"].can_answer(3)
    with pytest.raises(KeyError, match="never labeled item 3"):
        crowd["w1"].annotate([3])


def test_crowd_asks_k_distinct_labelers_and_never_twice(tmp_path):
    store = RunStore(tmp_path)
    workers = [BenignAnnotator(f"b{k}", TRUTH, C, pr=0.1) for k in range(6)]
    crowd = Crowd(workers, store, seed=0, k=3)
    first = crowd.ask(range(50), 0, "query", lambda w: True)
    assert len(first) == 150 and crowd.asked == 150
    per_item = pd.DataFrame([a.__dict__ for a in first]).groupby("item_id")["worker"].nunique()
    assert (per_item == 3).all()
    # a new process (same store, same seed) asking the same questions gets them from the store
    again = Crowd(workers, store, seed=0, k=3)
    second = again.ask(range(50), 0, "query", lambda w: True)
    assert again.asked == 0 and sorted(map(tuple, (a.__dict__.values() for a in second))) == \
        sorted(map(tuple, (a.__dict__.values() for a in first)))


def test_crowd_routes_nothing_to_labelers_under_the_threshold(tmp_path):
    workers = [BenignAnnotator(f"b{k}", TRUTH, C) for k in range(4)]
    crowd = Crowd(workers, RunStore(tmp_path), seed=0, k=2)
    routed_out = {"b0", "b3"}
    answers = crowd.ask(range(100), 0, "query", lambda w: w not in routed_out)
    assert {a.worker for a in answers} == {"b1", "b2"}


def test_crowd_refuses_holdout_items(tmp_path):
    crowd = Crowd([BenignAnnotator("b", TRUTH, C)], RunStore(tmp_path), k=1)
    crowd.forbidden = {5}
    with pytest.raises(HoldoutLeak):
        crowd.ask([4, 5], 0, "query", lambda w: True)
    assert RunStore(tmp_path).annotations().empty


from template_crowd import CrowdContract  # noqa: E402


class TestSimulatedCrowd(CrowdContract):
    def make_crowd(self, tmp_path, k):
        workers = [BenignAnnotator(f"b{i}", TRUTH, C, pr=0.1) for i in range(5)]
        return Crowd(workers, RunStore(tmp_path / "run"), seed=0, k=k), list(ITEMS[:10])


class TestReplayedCrowd(CrowdContract):
    def make_crowd(self, tmp_path, k):
        items = list(range(10))
        recorded = pd.DataFrame([(i, f"r{w}", (i + w) % C) for i in items for w in range(4)],
                                columns=["task", "worker", "label"])
        return Crowd(replayed_crowd(recorded), RunStore(tmp_path / "run"), seed=0, k=k), items


def test_the_label_studio_crowd_offers_every_call_of_the_protocol():
    # its behaviour under the contract needs a server and people: tests/test_labelstudio.py runs a campaign there
    from robust_al.annotators.labelstudio import LabelStudioCrowd

    for name in ("ask", "eligible_workers", "answerable", "sync", "adopt_existing", "finish"):
        assert callable(getattr(LabelStudioCrowd, name)), name
    assert isinstance(LabelStudioCrowd.workers, property)
