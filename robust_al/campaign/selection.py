"""Which items are asked about, and whom: the random first batch, the configured strategy's query in
F_{i-1}'s feature space (with min distances to the labeled set kept incrementally), and the overlap share a
second labeler answers."""
from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from robust_al.annotators.base import Answer, item_rng
from robust_al.campaign.items import HOLDOUT, LABELED
from robust_al.crowd.learner import Snapshot, restored
from robust_al.faults import kill_point
from robust_al.query import MinDistance, QueryContext

log = logging.getLogger("robust_al.campaign")


class SelectionMixin:
    """Query selection and asking for a :class:`~robust_al.campaign.Campaign`."""

    def rng_for(self, *keys) -> np.random.Generator:
        """A generator of its own for ``keys`` (stage, iteration...), derived from the campaign's seed."""
        return item_rng(self.seed, *keys)

    def ask_crowd(self, item_ids, iteration: int, purpose: str, **kw) -> list[Answer]:
        self._now = (iteration, purpose)
        return self.crowd.ask(item_ids, iteration, purpose, self.ledger.allowed, **kw)

    def choose_batch(self, iteration: int, info: dict) -> np.ndarray:
        """This iteration's query batch: m random items before there is a model, then the strategy's picks;
        a resumed iteration keeps the batch it stored (people were asked about those).

        With a crowd that takes batches ahead (``lookahead``), the batch queued during the previous iteration
        (:meth:`post_ahead`) is settled now that F_{i-1} exists: its items people answered or may be answering
        are kept (``crowd.keep_ahead``; the rest is taken back) and the strategy picks the others with F_{i-1}, as
        the synchronous loop would; so only what was labeled while F_{i-1} trained was chosen with F_{i-2}."""
        stored = self.store.batch(iteration, "query")
        ahead = self.store.batch(iteration, "ahead") if self.crowd.lookahead else None
        keep = np.zeros(0, dtype=np.int64)
        if ahead is not None:
            keep = np.asarray(self.crowd.keep_ahead(ahead, iteration), dtype=np.int64)
            gone = ahead[~np.isin(ahead, keep)]
            if len(gone):  # taken back from the labelers: free to be chosen again
                self.taken[self.pool.positions(gone)] = False
            keep = keep[~np.isin(keep, self.ids_with(LABELED))]  # answered after being taken back, never labeled
            self.mark_posted(keep)
        if iteration == 0:  # m items at random before there is any model
            cand = self.candidates()
            n = self.affordable(min(self.cfg.query.initial, len(cand)), iteration)
            batch = np.sort(self.rng_for("initial").choice(cand, size=n, replace=False))
        else:
            n = self.affordable(self.cfg.query.batch, iteration)
            picked = self._query(iteration, max(0, n - len(keep)), info, pending=keep if len(keep) else None)
            batch = np.concatenate([keep, picked[~np.isin(picked, keep)]])
        batch = self._as_stored(stored, batch, iteration, "query")
        self.store.set_batch(iteration, "query", batch)
        if ahead is not None:  # settled: what it held is this batch's or taken back (status stops showing it)
            self.store.close_batch(iteration, "ahead")
        kill_point("batch-stored", iteration)
        if iteration > 0:
            self.record_predictions(iteration, batch)
        return batch

    def post_ahead(self, iteration: int, batch: np.ndarray) -> np.ndarray | None:
        """With a crowd that takes batches ahead (people in a browser): put this iteration's batch to the labelers,
        then queue behind it a batch for iteration i+1 chosen with F_{i-1}, the model at hand, so that people have
        tasks while F_i trains, is checked and crafts. Its items count as asked (stored as the ``ahead`` batch of
        i+1, never held out); i+1 settles it with F_i (:meth:`choose_batch`). Batch i's items count as labeled
        for the choice (max-min keeps away from them); the one queued behind the first batch is chosen in the
        untrained network's feature space by a strategy that can (``without_model``; else at random: there is
        no model yet); the budget keeps its labels aside. Returns it, or None."""
        if not self.crowd.lookahead:
            return None
        self.mark_posted(batch)
        self.crowd.post(batch, iteration, "query")  # before the batch ahead: its tasks are served first
        if iteration + 1 >= self.cfg.stop.max_iterations:
            return None
        stored = self.store.batch(iteration + 1, "ahead")
        if stored is not None:  # made again all the same, then checked
            self.taken[self.pool.positions(stored)] = False
        # what the budget buys beyond batch i, whose labels it keeps aside
        n = max(0, self.affordable(self.cfg.query.batch + len(batch), iteration) - len(batch))
        if iteration == 0 and not self.strategy.without_model:
            cand = self.candidates()
            nxt = np.sort(self.rng_for("initial", "ahead").choice(cand, size=min(n, len(cand)), replace=False))
        else:  # its query's figures are not this iteration's (info): i+1 settles what is asked
            nxt = self._query(iteration, n, {}, pending=batch, rng_key=iteration + 1, trained=iteration > 0)
        nxt = self._as_stored(stored, nxt, iteration, "choice of the batch ahead")
        if len(nxt) == 0:
            return None
        self.store.set_batch(iteration + 1, "ahead", nxt)
        kill_point("ahead-stored", iteration)
        self.mark_posted(nxt)
        self.crowd.post(nxt, iteration + 1, "query")
        return nxt

    @staticmethod
    def _as_stored(stored: np.ndarray | None, chosen: np.ndarray, iteration: int, what: str) -> np.ndarray:
        """A batch made again on resume is the stored one (people were asked about those); a difference is
        reported."""
        if stored is None:
            return chosen
        if not np.array_equal(stored, chosen):
            log.warning("iteration %d: the resumed %s differs from the stored batch; using the stored one",
                        iteration, what)
        return stored

    def label_batch(self, iteration: int, batch: np.ndarray) -> np.ndarray:
        """Ask the crowd about the batch (and the overlap share); the answered items become labeled."""
        answers = self.ask_crowd(batch, iteration, "query")
        answers += self._overlap(iteration, answers)
        answered = np.array(sorted({a.item_id for a in answers}), dtype=np.int64)
        self.set_status(answered, LABELED, iteration)
        if self.mind is not None:
            self.mind.add_positions(self.pool.positions(answered))
            self._mind_iter = iteration
        return answered

    def _query(self, iteration: int, n: int, info: dict, pending: np.ndarray | None = None,
               rng_key: int | None = None, trained: bool = True) -> np.ndarray:
        """Choose up to n unlabeled items with the configured strategy, in F_{i-1}'s feature space; ``pending``:
        items asked about but not answered yet, counted as labeled (:meth:`post_ahead`).

        ``trained`` False: there is no model yet (the batch queued behind the random first one), so the
        strategy measures distances in the untrained network's feature space (for a frozen pretrained trunk,
        its features; for a network trained from scratch, a random projection of the input, which keeps its
        distances roughly) and sees no class probabilities and no errors on S. Measured with a simulated crowd
        (docs/results/performance.md#bench-loop-variants, notes): that batch drawn at random instead cost
        lookahead 13 % more labels to the target."""
        cand = self.candidates()
        if len(cand) == 0 or n == 0:
            return np.zeros(0, dtype=np.int64)
        key = iteration if rng_key is None else rng_key
        if not trained:
            with self.timed_stage("embed"):
                E = self.learner.embed(self.pool.X)
            kept = self.mind
            self.mind = MinDistance(E, self.cfg.query.chunk_size)
            self.mind.add_positions(self.pool.positions(pending if pending is not None else []))
            try:
                return self._choose(key, cand, n, info, trained=False)
            finally:  # the next iteration measures in F_i's space, built anew
                self.mind = kept
        with self.timed_stage("embed"):
            self._refresh_distances(iteration)
        if pending is not None and self.mind is not None:
            kept = self.mind.d.copy()
            self.mind.add_positions(self.pool.positions(pending))
            try:
                return self._query(iteration, n, info, rng_key=rng_key)
            finally:
                self.mind.d = kept
        return self._choose(key, cand, n, info, trained=True)

    def _choose(self, key: int, cand: np.ndarray, n: int, info: dict, trained: bool) -> np.ndarray:
        """The strategy's n picks among ``cand`` with ``self.mind`` as the distances to what is labeled; an
        untrained model's probabilities and errors on S are not shown to it."""
        pos = self.pool.positions(cand)
        S = self.pool.subset(self.ids_with(HOLDOUT))
        prev_aug = self.prev_state.get("vulnerability", {}) if trained else {}
        v_ids = np.array([int(k) for k in prev_aug], dtype=np.int64)
        v_norm = np.array(list(prev_aug.values()), dtype=float)
        ctx = QueryContext(
            positions=pos, embed=None, rng=self.rng_for("query", key),
            proba=self.learner.predict_proba(self.pool.X[pos]) if trained and self.strategy.needs_proba else None,
            mind=self.mind, secured_embed=self.learner.embed(S.X) if trained else None,
            secured_correct=self.learner.predict(S.X) == S.y if trained else None,
            vuln_embed=self.mind.E[self.pool.positions(v_ids)] if len(v_ids) else None,
            vuln_norm=v_norm if len(v_ids) else None, info=info)
        return cand[self.strategy.query(ctx, n)]

    def _refresh_distances(self, iteration: int) -> None:
        """Keep min distances to the labeled set; re-embed every ``query.refresh_every`` iterations.

        Between refreshes only the items labeled since are folded in, so the cost per iteration does not
        grow with the labeled set. A resumed run replays the same resets and additions.
        """
        r = self.cfg.query.refresh_every
        last_refresh = 1 + ((iteration - 1) // r) * r
        if self.mind is not None and self._mind_iter == iteration - 1 and iteration != last_refresh:
            return  # up to date: additions were folded in at the end of the previous iteration
        # rebuild: embed with F_{last_refresh-1}, reset with what was labeled before, replay additions since
        if last_refresh == iteration:
            E = self.learner.embed(self.pool.X)
        else:
            then = Snapshot.of(self.store.iteration_state(last_refresh - 1)[2], f"F_{last_refresh - 1}")
            with restored(self.learner, then):
                E = self.learner.embed(self.pool.X)
        by_iter = self.store.status_history(LABELED)
        before = [i for i, it in by_iter if it < last_refresh]
        self.mind = MinDistance(E, self.cfg.query.chunk_size)
        self.mind.reset(E, E[self.pool.positions(before)] if before else np.zeros((0, E.shape[1]), np.float32))
        for it in range(last_refresh, iteration):
            self.mind.add_positions(self.pool.positions([i for i, j in by_iter if j == it]))
        self._mind_iter = iteration - 1

    def _overlap(self, iteration: int, answers: list[Answer]) -> list[Answer]:
        """One more labeler on a share of the answered items (``annotators.overlap``), within the budget: the
        answers that let agreement, not the model alone, speak about each labeler. The share goes to the items
        of the labelers least known to be good first (highest 1 - the lower end of their accuracy interval; a
        labeler not scored yet counts 1), so checks gather where they can still change a routing decision."""
        share = self.cfg.annotators.overlap
        if share <= 0 or not answers:
            return []
        asked: dict[int, set[str]] = defaultdict(set)
        for a in answers:
            asked[a.item_id].add(a.worker)
        items = np.array(sorted(asked), dtype=np.int64)
        need = np.array([max(1.0 - self.ledger.interval(w)[0] for w in asked[int(i)]) for i in items])
        rng = self.rng_for("overlap", iteration)
        n = int(np.floor(share * len(items) + rng.random()))  # share x batch on average
        order = np.lexsort((rng.permutation(len(items)), -need))  # neediest first, ties at random
        room = max(0, self.cfg.stop.budget - self.spent_before(iteration, "overlap"))
        chosen = np.sort(items[order[:min(n, room)]])
        return self.ask_crowd(chosen, iteration, "overlap", n_per_item=1, exclude=asked)
