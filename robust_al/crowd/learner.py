"""The one interface the campaign trains: :class:`Learner`, and the immutable :class:`Snapshot` of a fitted model.

The loop needs two models at once: F_{i-1}, accepted by the last secured check, and F_i, just trained. They
are two ``Snapshot`` values (``prev = learner.snapshot()``), never one object in two states: a snapshot holds
copies of the weights that nothing else references, and ``restore`` copies them back into the live network, so
a snapshot reads the same however the learner is trained afterwards. :func:`restored` runs a block with an
older model in place and puts the one it found back.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from collections.abc import Iterator, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Snapshot:
    """The weights of one model, detached copies on the CPU in a read-only mapping (``weights``), plus its
    ``label`` (e.g. ``"F_3"``) for messages. Build with :meth:`of`; compare with :meth:`same_as`."""

    weights: Mapping[str, torch.Tensor] = field(repr=False)
    label: str = ""

    @classmethod
    def of(cls, state: Mapping, label: str = "") -> Snapshot:
        """A snapshot of ``state`` (a state_dict, or a stored checkpoint): copied, so later writes to the source
        tensors never reach it."""
        return cls(MappingProxyType({k: v.detach().cpu().clone() for k, v in state.items()}), label)

    def same_as(self, other: Snapshot) -> bool:
        import torch

        return self.weights.keys() == other.weights.keys() and all(
            torch.equal(v, other.weights[k]) for k, v in self.weights.items())


@runtime_checkable
class Learner(Protocol):
    """What the campaign asks of a model: train, predict, embed (the query's feature space), and be saved and
    put back as values. Implemented by :class:`robust_al.crowd.network.NetworkTrainer`, every
    :class:`robust_al.crowd.base.CrowdLearner` (A-LFC, MALC, Crowd Layer...) and the campaign's
    :class:`robust_al.crowd.classifier.CrowdClassifier`."""

    def fit(self, *args, **kwargs) -> object: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def embed(self, X: np.ndarray) -> np.ndarray: ...

    def snapshot(self, label: str = "") -> Snapshot: ...

    def restore(self, snapshot: Snapshot) -> None: ...


@contextmanager
def restored(learner: Learner, snapshot: Snapshot) -> Iterator[Learner]:
    """Run the block with ``snapshot``'s model in ``learner``, then put back the model it had."""
    current = learner.snapshot()
    learner.restore(snapshot)
    try:
        yield learner
    finally:
        learner.restore(current)
