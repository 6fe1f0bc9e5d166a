"""One interface for everyone who labels: ask about items, get answers tagged with who gave them."""
from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np


@dataclass(frozen=True)
class Answer:
    item_id: int
    worker: str
    label: int


class Annotator(ABC):
    """A labeler with a stable identity (``worker_id``), as it appears in the trust ledger."""

    worker_id: str
    kind: str = "annotator"
    _known_cache: set[int]  # known_items() as a set, made on first use

    def can_answer(self, item_id: int) -> bool:
        """Whether this labeler can be asked about ``item_id`` (a replayed worker only knows what they saw)."""
        known = self.known_items()
        return known is None or int(item_id) in self._known_set()

    def known_items(self) -> np.ndarray | None:
        """Ids this labeler can answer about, or None for any item (used to filter large pools at once)."""
        return None

    def _known_set(self) -> set[int]:
        if not hasattr(self, "_known_cache"):
            known = self.known_items()
            if known is None:  # can_answer asks only labelers with a list of known items
                raise ValueError(f"{self.worker_id} can answer about any item: it has no set of known items")
            self._known_cache = {int(i) for i in known}
        return self._known_cache

    @abstractmethod
    def annotate(self, item_ids: Sequence[int]) -> list[Answer]:
        """Labels for ``item_ids`` (one answer each, in order)."""


def item_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys``.

    Simulated answers are a pure function of (seed, worker, item): whether the question is asked now, was
    answered before a crash, or is asked on another machine, the answer is the same, which is what makes a
    resumed campaign equal to an uninterrupted one.
    """
    words = [int(seed) & 0xFFFFFFFF]
    for k in keys:
        words.append(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF)
    return np.random.default_rng(words)
