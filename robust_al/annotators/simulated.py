"""Simulated labelers (threat model of the robust-active-learning paper, section I-A)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from robust_al.annotators.base import Annotator, Answer, item_rng


class SimulatedAnnotator(Annotator):
    """Knows the truth and errs by a rule; each answer depends only on (seed, worker, item)."""

    kind = "simulated"

    def __init__(self, worker_id: str, truth: Mapping[int, int], n_classes: int, seed: int = 0):
        self.worker_id = worker_id
        self.truth = truth
        self.n_classes = n_classes
        self.seed = seed

    def can_answer(self, item_id: int) -> bool:
        return int(item_id) in self.truth

    def known_items(self) -> np.ndarray:
        return _known_ids(self.truth)

    def annotate(self, item_ids: Sequence[int]) -> list[Answer]:
        return [Answer(int(i), self.worker_id, int(self.label(int(i), int(self.truth[int(i)]))))
                for i in item_ids]

    def label(self, item_id: int, true: int) -> int:
        raise NotImplementedError

    def _benign(self, item_id: int, true: int, pr: float, stream: str = "benign") -> int:
        # O(x) = c̄ if u < pr else c, with c̄ uniform over C - {c}
        rng = item_rng(self.seed, self.worker_id, stream, item_id)
        if rng.random() < pr:
            other = int(rng.integers(self.n_classes - 1))
            return other + (other >= true)
        return true


class BenignAnnotator(SimulatedAnnotator):
    """Wrong with probability ``pr``, then uniformly to another class."""

    kind = "benign"

    def __init__(self, worker_id, truth, n_classes, pr: float = 0.05, seed: int = 0):
        super().__init__(worker_id, truth, n_classes, seed)
        self.pr = pr

    def label(self, item_id: int, true: int) -> int:
        return self._benign(item_id, true, self.pr)


class MaliciousAnnotator(SimulatedAnnotator):
    """Always labels the target class ``target`` as ``to``; honest (benign with ``pr``) otherwise."""

    kind = "malicious"

    def __init__(self, worker_id, truth, n_classes, target: int, to: int, pr: float = 0.05, seed: int = 0):
        super().__init__(worker_id, truth, n_classes, seed)
        if target == to:
            raise ValueError(f"malicious labeler {worker_id}: target and to are both {target}")
        self.target, self.to, self.pr = target, to, pr

    def label(self, item_id: int, true: int) -> int:
        return self.to if true == self.target else self._benign(item_id, true, self.pr)


class SpammerAnnotator(SimulatedAnnotator):
    """Answers uniformly at random, ignoring the item."""

    kind = "spammer"

    def label(self, item_id: int, true: int) -> int:
        return int(item_rng(self.seed, self.worker_id, "spam", item_id).integers(self.n_classes))


class ColludingAnnotator(SimulatedAnnotator):
    """Member of a group that gives the same wrong label on the same items.

    The group shares ``group`` and the group seed: on a fraction ``rate`` of items (chosen by the group) all
    members answer one wrong class (also chosen by the group); elsewhere each is benign with ``pr``.
    """

    kind = "colluding"

    def __init__(self, worker_id, truth, n_classes, group: str = "g0", rate: float = 0.3, pr: float = 0.05,
                 seed: int = 0):
        super().__init__(worker_id, truth, n_classes, seed)
        self.group, self.rate, self.pr = group, rate, pr

    def label(self, item_id: int, true: int) -> int:
        rng = item_rng(self.seed, "collusion", self.group, item_id)
        if rng.random() < self.rate:
            other = int(rng.integers(self.n_classes - 1))
            return other + (other >= true)
        return self._benign(item_id, true, self.pr)


_KNOWN: dict[int, tuple[Mapping[int, int], np.ndarray]] = {}


def _known_ids(truth: Mapping[int, int]) -> np.ndarray:
    """The ids of a truth table, computed once per table (labelers built from one table share the array)."""
    hit = _KNOWN.get(id(truth))
    if hit is None or hit[0] is not truth:
        hit = _KNOWN[id(truth)] = (truth, np.fromiter(truth.keys(), dtype=np.int64, count=len(truth)))
    return hit[1]


def truth_map(ids: np.ndarray, y: np.ndarray) -> dict[int, int]:
    """Ground truth as the mapping simulated labelers read (items with unknown truth left out)."""
    return {int(i): int(c) for i, c in zip(ids, y) if c >= 0}
