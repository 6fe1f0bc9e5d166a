"""Item statuses and the label budget: what each pool item is (labeled, held out, discarded...), which
answers existed at a given stage of an iteration, and what the budget still buys. Statuses are persisted in
the store as events (the latest wins) and mirrored in ``status`` / ``taken`` for the loop."""
from __future__ import annotations

import numpy as np
import pandas as pd

from robust_al.annotators.labelstudio import EXISTING

LABELED, DISCARDED, HOLDOUT, RETIRED = "labeled", "discarded", "holdout", "retired"
QUARANTINED = "quarantined"  # labels confirmed, yet training on them fails the secured check: suspected poison
FILTERED = "filtered"  # kept out of training by the poison filter (robust_al.filter): its place contradicts its label


def stage_key(purpose: str) -> tuple[int, str]:
    """Order of the asking stages within an iteration: the query, its overlap, the re-examination, the audits by
    name."""
    return ((0, "") if purpose == "query" else (0, "overlap") if purpose == "overlap"
            else (1, "") if purpose == "reexam" else (2, purpose))


class ItemsMixin:
    """Item status records and budget accounting of a :class:`~robust_al.campaign.Campaign`."""

    def ids_with(self, status: str) -> np.ndarray:
        return np.array(sorted(i for i, s in self.status.items() if s == status), dtype=np.int64)

    def set_status(self, ids, status: str, iteration: int) -> None:
        ids = [int(i) for i in ids]
        self.store.set_status(ids, status, iteration)
        for i in ids:
            self.status[i] = status
        if ids:
            self.taken[self.pool.positions(ids)] = True
        if status in (HOLDOUT, RETIRED):
            self.crowd.forbidden.update(ids)

    def mark_posted(self, ids) -> None:
        """Items put to labelers ahead of their iteration: not free to query or to hold out (no status yet)."""
        if len(ids):
            self.taken[self.pool.positions([int(i) for i in ids])] = True

    def posted_ahead(self, iteration: int) -> np.ndarray | None:
        """The batch of iteration + 1 when it was put to labelers during ``iteration`` (``lookahead``)."""
        return self.store.batch(iteration + 1, "ahead") if self.crowd.lookahead else None

    def labels_used(self) -> int:
        """Labels bought by this campaign (an attached project's earlier annotations were not; a budget per
        stage: :meth:`spent_before`)."""
        return self.store.count_annotations(exclude_purpose=EXISTING)

    def candidates(self) -> np.ndarray:
        """Pool items with no status yet that some labeler allowed now can be asked about."""
        cand = self.pool.ids[~self.taken]
        return cand[self.crowd.answerable(cand, self.ledger.allowed)]

    def spent_before(self, iteration: int, purpose: str) -> int:
        """Labels bought before stage ``purpose`` of ``iteration``: every earlier iteration's and this one's
        earlier stages' (query, then reexam, then the audits in name order). An unfinished iteration's stored
        answers count as bought for the stage that asked them, so a resumed iteration derives the same batch
        and uses every answer it paid for (counting them against its own batch shrank it: 144 instead of 150
        items, 90 paid labels unused, when killed in the last, budget-limited iteration)."""
        ahead = self.posted_ahead(iteration) if stage_key(purpose) > stage_key("query") else None
        # a batch put ahead has its labels set aside: a re-examination or audit must not spend them
        reserved = 0 if ahead is None else int(len(ahead) * (self.cfg.annotators.k + self.cfg.annotators.overlap))
        return reserved + self.store.labels_before(iteration, exclude_purpose=EXISTING) + sum(
            n for p, n in self.store.labels_of_iteration(iteration).items()
            if p != EXISTING and stage_key(p) < stage_key(purpose))

    def visible_answers(self, ann: pd.DataFrame) -> pd.DataFrame:
        """The answers that existed at this point of the uninterrupted run: none of a later iteration or of a
        later stage of this one. A resumed iteration finds its later stages' answers already stored; used
        early (training before the re-examination, an audit choosing its labelers) they changed the model
        and the trust of a run killed mid re-examination."""
        it, purpose = self._now
        later = (ann["iteration"] > it) | ((ann["iteration"] == it) & (
            ann["purpose"].map(stage_key) > stage_key(purpose)))
        return ann[~later | (ann["purpose"] == EXISTING)]

    def affordable(self, n_items: int, iteration: int | None = None) -> int:
        """Items of k labels the budget still buys: for the query batch of ``iteration`` when given, else after
        everything stored."""
        spent = self.labels_used() if iteration is None else self.spent_before(iteration, "query")
        per_item = self.cfg.annotators.k + self.cfg.annotators.overlap  # the overlap's labels, on average
        return max(0, min(n_items, int((self.cfg.stop.budget - spent) / per_item)))

    def store_inferred(self, iteration: int, post: pd.DataFrame) -> None:
        """The accepted labels of this iteration, as exports read them. Labeled items carry their posterior;
        discarded and quarantined items (out of the aggregation) the majority of their answers and its share;
        S items their trusted label."""
        # human answers only (the model votes in _annotations, not in the store), read for these items alone
        ann = self.store.annotations(list(self.status))
        n_ans = ann.groupby("task").size()
        labels_of = dict(iter(ann.groupby("task")["label"]))
        rows = []
        for item, status in sorted(self.status.items()):
            n = int(n_ans.get(item, 0))
            if status == LABELED:  # an item without a posterior (its answers were cancelled) has no label
                p = post.loc[item].to_numpy() if item in post.index else None
                rows.append((item, None if p is None else int(p.argmax()), None if p is None else float(p.max()),
                             n, status))
            elif status in (DISCARDED, QUARANTINED):
                votes = labels_of[item].value_counts() if n else None
                rows.append((item, int(votes.index[0]) if n else None, float(votes.iloc[0] / n) if n else None,
                             n, status))
            elif status in (HOLDOUT, RETIRED):
                y = int(self.pool.y[self.pool.positions([item])[0]])
                rows.append((item, y if y >= 0 else None, 1.0 if y >= 0 else None, n, status))
        self.store.set_inferred(iteration, rows)
