"""The contract every learner keeps (``robust_al.crowd.learner.Learner``), as a test template in the manner of
scikit-activeml's ``template_query_strategy``: a test class inherits :class:`LearnerContract` and supplies
``make()`` (a fresh learner, seeded) and ``train(learner, seed)`` (fit it on its data, a seed that changes the
result) and ``X`` (the rows to predict)."""
from __future__ import annotations

import numpy as np
import pytest

from robust_al.crowd.learner import Learner, Snapshot, restored


class LearnerContract:
    def make(self):
        raise NotImplementedError

    def train(self, learner, seed: int) -> None:
        raise NotImplementedError

    X: np.ndarray

    def test_it_implements_the_protocol(self):
        assert isinstance(self.make(), Learner)

    def test_a_snapshot_is_a_value_that_later_training_never_changes(self):
        # F_{i-1} and F_i are two values: training after a snapshot leaves it as it was, and restoring it gives
        # back exactly the predictions it was taken with
        learner = self.make()
        self.train(learner, 0)
        before = learner.predict_proba(self.X)
        snap = learner.snapshot("F_0")
        copy = Snapshot.of(snap.weights)
        self.train(learner, 1)
        assert not np.array_equal(learner.predict_proba(self.X), before)
        assert snap.same_as(copy)
        learner.restore(snap)
        np.testing.assert_array_equal(learner.predict_proba(self.X), before)
        self.train(learner, 2)  # training after a restore does not write into the snapshot either
        assert snap.same_as(copy)

    def test_snapshot_weights_are_read_only(self):
        learner = self.make()
        self.train(learner, 0)
        snap = learner.snapshot()
        with pytest.raises(TypeError):
            snap.weights[next(iter(snap.weights))] = None
        with pytest.raises(AttributeError):
            snap.label = "other"

    def test_restored_puts_the_current_model_back(self):
        learner = self.make()
        self.train(learner, 0)
        old = learner.snapshot()
        self.train(learner, 1)
        now = learner.predict_proba(self.X)
        with restored(learner, old):
            assert not np.array_equal(learner.predict_proba(self.X), now)
        np.testing.assert_array_equal(learner.predict_proba(self.X), now)

    def test_the_same_seed_gives_the_same_model(self):
        a, b = self.make(), self.make()
        self.train(a, 3)
        self.train(b, 3)
        np.testing.assert_array_equal(a.predict_proba(self.X), b.predict_proba(self.X))
        assert a.snapshot().same_as(b.snapshot())
