"""Replayed real crowds: answer with the label a real worker recorded for that item."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robust_al.annotators.base import Annotator, Answer


class ReplayedAnnotator(Annotator):
    """A real worker from a recorded campaign (LabelMe AMT, CIFAR-10N...).

    A worker who never saw an item cannot be asked about it: ``can_answer`` is False and ``annotate`` raises.
    """

    kind = "replay"

    def __init__(self, worker_id: str, labels: dict[int, int]):
        self.worker_id = worker_id
        self.labels = labels

    def can_answer(self, item_id: int) -> bool:
        return int(item_id) in self.labels

    def known_items(self) -> np.ndarray:
        if not hasattr(self, "_known_arr"):
            self._known_arr = np.fromiter(self.labels.keys(), dtype=np.int64)
        return self._known_arr

    def annotate(self, item_ids: Sequence[int]) -> list[Answer]:
        missing = [int(i) for i in item_ids if int(i) not in self.labels]
        if missing:
            raise KeyError(f"worker {self.worker_id} never labeled item {missing[0]} in the recorded crowd")
        return [Answer(int(i), self.worker_id, int(self.labels[int(i)])) for i in item_ids]


def replayed_crowd(recorded: pd.DataFrame) -> list[ReplayedAnnotator]:
    """One replayed annotator per worker of a long (task, worker, label) table, in a stable order."""
    out = []
    for worker, g in recorded.groupby("worker", sort=True):
        out.append(ReplayedAnnotator(str(worker), dict(zip(g["task"].astype(int), g["label"].astype(int)))))
    return out
