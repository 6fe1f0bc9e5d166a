"""A crowd: routes each query to k labelers, never asks twice, never shows a holdout item."""
from __future__ import annotations

from collections import defaultdict
from typing import Protocol, runtime_checkable
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from robust_al.annotators.base import Annotator, Answer, item_rng
from robust_al.faults import kill_point
from robust_al.store import RunStore


class HoldoutLeak(RuntimeError):
    """Raised when a secured-holdout item is about to be sent to an annotator."""


@runtime_checkable
class CrowdProtocol(Protocol):
    """What the campaign asks of a crowd; :class:`Crowd` (simulated, replayed) and
    :class:`~robust_al.annotators.labelstudio.LabelStudioCrowd` (people in a browser) both implement it.

    ``forbidden`` holds the secured-holdout items: asking about one raises :class:`HoldoutLeak`. ``ask`` returns
    the usable answers (at most ``n_per_item``, default k, distinct ``allowed`` labelers per item, none in
    ``exclude[item]``), each stored before it is returned, and never asks the same labeler about an item twice.
    ``sync`` pulls answers given while no campaign ran, ``adopt_existing`` stores labels a pool came with,
    ``finish`` stores answers still on their way at the end.

    ``lookahead`` (0 or 1): query batches the campaign puts to the crowd before the current one is answered
    (people in a browser label batch i+1 while F_i trains); ``post`` puts a batch to the labelers without
    waiting for it (``ask`` later waits), ``keep_ahead`` settles a batch queued ahead once the model it waited
    for exists (keeps what people answered or may be answering, takes back the rest), ``withdraw`` takes back
    what a stopped campaign will never use.
    """

    forbidden: set[int]
    k: int
    lookahead: int

    @property
    def workers(self) -> list[str]: ...

    def eligible_workers(self, allowed: Callable[[str], bool]) -> list[str]: ...

    def answerable(self, item_ids: np.ndarray, allowed: Callable[[str], bool]) -> np.ndarray: ...

    def ask(self, item_ids: Sequence[int], iteration: int, purpose: str, allowed: Callable[[str], bool],
            n_per_item: int | None = None, exclude: dict[int, set[str]] | None = None) -> list[Answer]: ...

    def post(self, item_ids: Sequence[int], iteration: int, purpose: str) -> None: ...

    def withdraw(self, item_ids: Sequence[int], iteration: int, purpose: str) -> int: ...

    def keep_ahead(self, item_ids: Sequence[int], iteration: int) -> list[int]: ...

    def sync(self) -> int: ...

    def adopt_existing(self) -> list[int]: ...

    def finish(self) -> None: ...


class Crowd:
    """Sends queries to annotators and records every answer in the store the moment it arrives.

    Before asking worker w about item i the store is consulted: an answer stored by an earlier (killed) run
    is reused, so no annotator is ever asked the same question twice. Who may be asked is the caller's
    decision, passed as ``allowed(worker) -> bool`` (the trust ledger's routing:
    :meth:`robust_al.trust.TrustLedger.allowed`).
    """

    def __init__(self, annotators: Sequence[Annotator], store: RunStore, seed: int = 0, k: int = 1):
        ids = [a.worker_id for a in annotators]
        if len(set(ids)) != len(ids):
            raise ValueError("annotator ids must be unique")
        self.annotators = {a.worker_id: a for a in annotators}
        self.store, self.seed, self.k = store, seed, k
        self.forbidden: set[int] = set()
        self.asked = 0  # questions actually put to annotators by this process (not served from the store)
        self.lookahead = 0  # answers come at once: nobody waits for a batch, so none is chosen ahead

    @property
    def workers(self) -> list[str]:
        return list(self.annotators)

    def eligible(self, item_id: int, allowed: Callable[[str], bool], exclude: Iterable[str] = ()) -> list[str]:
        excl = set(exclude)
        return [w for w, a in self.annotators.items() if w not in excl and a.can_answer(item_id) and allowed(w)]

    def eligible_workers(self, allowed: Callable[[str], bool]) -> list[str]:
        """Labelers who currently receive queries."""
        return [w for w in self.annotators if allowed(w)]

    def answerable(self, item_ids: np.ndarray, allowed: Callable[[str], bool]) -> np.ndarray:
        """Mask of ``item_ids`` that at least one eligible labeler can be asked about (vectorized)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        mask = np.zeros(len(item_ids), dtype=bool)
        seen: set[int] = set()  # simulated labelers share one truth table: test membership once
        for w, a in self.annotators.items():
            if not allowed(w):
                continue
            known = a.known_items()
            if known is None:
                mask[:] = True
                break
            if id(known) not in seen:
                seen.add(id(known))
                mask |= np.isin(item_ids, known)
        return mask & ~np.isin(item_ids, np.fromiter(self.forbidden, dtype=np.int64, count=len(self.forbidden)))

    def assign(self, item_ids: Sequence[int], iteration: int, purpose: str, allowed: Callable[[str], bool],
               n_per_item: int | None = None, exclude: dict[int, set[str]] | None = None
               ) -> list[tuple[int, str]]:
        """Who is asked about what: ``n_per_item`` (default k) distinct eligible labelers per item.

        The choice depends only on (seed, iteration, purpose, item) and the eligible set, so a resumed run
        makes the same assignments as the run it replaces.
        """
        n = self.k if n_per_item is None else n_per_item
        pairs = []
        for i in item_ids:
            i = int(i)
            if i in self.forbidden:
                raise HoldoutLeak(f"item {i} belongs to the secured holdout and must never reach an annotator")
            cand = self.eligible(i, allowed, (exclude or {}).get(i, ()))
            if not cand:
                continue
            rng = item_rng(self.seed, "assign", purpose, iteration, i)
            for j in rng.permutation(len(cand))[:n]:
                pairs.append((i, cand[int(j)]))
        return pairs

    def collect(self, pairs: Sequence[tuple[int, str]], iteration: int, purpose: str) -> list[Answer]:
        """Answers for (item, worker) pairs: from the store when already paid for, else from the annotator."""
        answers: list[Answer] = []
        todo: dict[str, list[int]] = defaultdict(list)
        leaked = [i for i, _ in pairs if i in self.forbidden]
        if leaked:
            raise HoldoutLeak(f"item {leaked[0]} belongs to the secured holdout and must never reach an annotator")
        stored = self.store.stored_labels({i for i, _ in pairs})
        for i, w in pairs:
            if (i, w) in stored:
                answers.append(Answer(i, w, stored[(i, w)]))
            else:
                todo[w].append(i)
        for w, items in todo.items():  # one transaction per labeler's answers, durable before they are used
            got = self.annotators[w].annotate(items)
            self.store.add_annotations([(a.item_id, a.worker, a.label) for a in got], iteration, purpose)
            for a in got:
                kill_point(f"answer:{purpose.split(':')[0]}", iteration)
                self.asked += 1
                answers.append(a)
        return answers

    def ask(self, item_ids: Sequence[int], iteration: int, purpose: str, allowed: Callable[[str], bool],
            n_per_item: int | None = None, exclude: dict[int, set[str]] | None = None) -> list[Answer]:
        return self.collect(self.assign(item_ids, iteration, purpose, allowed, n_per_item, exclude),
                            iteration, purpose)

    # a simulated or replayed crowd answers at once: nothing arrives while no campaign runs, nothing is late,
    # nothing is asked before ask
    def post(self, item_ids: Sequence[int], iteration: int, purpose: str) -> None:
        return None

    def withdraw(self, item_ids: Sequence[int], iteration: int, purpose: str) -> int:
        return 0

    def keep_ahead(self, item_ids: Sequence[int], iteration: int) -> list[int]:
        return []  # nobody answered before being asked: the batch is chosen anew, as in the synchronous loop

    def sync(self) -> int:
        return 0

    def adopt_existing(self) -> list[int]:
        return []

    def finish(self) -> None:
        return None
