"""The secured holdout S and what a failed check sets off (section III-B, Fig. 3): S drawn and refreshed, the
McNemar test on a drop, roll-back and re-examination of the batch by h independent labelers, the audit of a
flagged labeler, and the quarantine of items whose confirmed labels still fail the check."""
from __future__ import annotations

import numpy as np
import pandas as pd

from robust_al.campaign.items import DISCARDED, HOLDOUT, LABELED, QUARANTINED, RETIRED
from robust_al.crowd.learner import Snapshot
from robust_al.data.holdout import draw_holdout
from robust_al.trust import independent_labelers


class SecuredMixin:
    """The secured check of a :class:`~robust_al.campaign.Campaign`."""

    def secure_holdout(self, iteration: int) -> None:
        """Set S aside at the start and refresh it every q iterations; old S items are retired for good."""
        q = self.cfg.holdout.refresh_every
        current = self.ids_with(HOLDOUT)
        if len(current) and not (q and iteration > 0 and iteration % q == 0):
            return
        free = self.pool.ids[~self.taken]
        free = free[~np.isin(free, self.injected_ids())]  # S is trusted data: nothing injected ever enters it
        if len(current):
            self.set_status(current, RETIRED, iteration)
        new = draw_holdout(self.pool, free, self.cfg.holdout.size, self.rng_for("holdout", iteration))
        self.set_status(new, HOLDOUT, iteration)

    def secured_accuracy(self) -> tuple[float, np.ndarray]:
        S = self.pool.subset(self.ids_with(HOLDOUT))
        correct = self.learner.predict(S.X) == S.y
        return float(correct.mean()), correct

    def _significant_drop(self, before: np.ndarray, after: np.ndarray, info: dict) -> bool:
        """Is F_i worse than F_{i-1} on S beyond chance (``trust.significance``; null: any drop counts)? With a
        small S a drop of epsilon is often noise, and each false alarm costs h relabels of the batch."""
        alpha = self.cfg.trust.significance
        if alpha is None or before is None or len(before) != len(after):
            return True
        info["secured_drop_p"] = p = drop_p_value(before, after)
        return p < alpha

    def secured_check(self, iteration: int, answered: np.ndarray, prev_model: Snapshot | None,
                       prev: tuple[float, np.ndarray] | None, post: pd.DataFrame, info: dict
                       ) -> tuple[pd.DataFrame, float]:
        """Accept F_i, or (S accuracy down more than epsilon, significantly) roll back to F_{i-1}, re-examine
        D', retrain, and quarantine suspects if it still fails. Returns the posteriors and S accuracy kept."""
        eps = self.cfg.trust.epsilon
        acc_s, correct = self.secured_accuracy()
        info["secured_check"] = "accepted"
        if prev is None or not (prev[0] - acc_s > eps and len(answered)
                                and self._significant_drop(prev[1], correct, info)):
            return post, acc_s
        # F_i lost more than epsilon on S: roll back to F_{i-1} and re-examine D'
        rejected = self.learner.predict_proba(self.pool.X[self.pool.positions(answered)])
        info.update(secured_check="re-examined", rejected_secured_acc=acc_s)
        self.learner.restore(prev_model)
        self._reexamine(iteration, answered, rejected, info)
        post = self.train_model(iteration, 1, prev_model)
        acc_s, _ = self.secured_accuracy()
        if prev[0] - acc_s > eps:
            post, acc_s = self._quarantine(iteration, answered, prev_model, acc_s, post, info)
        return post, acc_s

    def _reexamine(self, iteration: int, answered: np.ndarray, rejected_proba: np.ndarray, info: dict) -> None:
        """Secured-check failure (section III-B, Fig. 3): h independent labelers relabel the batch D' (by default
        only its suspicious items: ``trust.reexamine``)."""
        cfg = self.cfg.trust
        h = independent_labelers(self.ledger.p1(self.crowd.eligible_workers(self.ledger.allowed)), cfg.p_h)
        batch = answered
        ann = self.store.annotations(batch)
        ann = ann[ann["purpose"].isin(["query", "overlap"])]
        original = {int(i): dict(zip(g["worker"], g["label"])) for i, g in ann.groupby("task")}
        # suspicious: a label F_{i-1} disagreed with out of sample. trust.reexamine = 'suspicious' relabels only
        # those (the others stand); 'all' relabels the batch, suspicious items first, as far as the budget
        # goes, and of the rest keeps only labels F_{i-1} agreed with
        oos = self.store.predictions().set_index("item_id")["label"].to_dict()
        suspicious = {i: any(int(l) != oos.get(i, int(l)) for l in original.get(i, {}).values())
                      for i in map(int, batch)}
        order = sorted(map(int, batch), key=lambda i: (not suspicious[i], i))
        if cfg.reexamine == "suspicious":
            order = [i for i in order if suspicious[i]]
        n_afford = max(0, (self.cfg.stop.budget - self.spent_before(iteration, "reexam")) // h)
        batch, skipped = np.array(order[:n_afford], dtype=np.int64), order[n_afford:]
        dropped = [i for i in skipped if suspicious[i]]
        answers = self.ask_crowd(batch, iteration, "reexam", n_per_item=h,
                                 exclude={i: set(w) for i, w in original.items()})
        relabels: dict[int, list[int]] = {}
        for a in answers:
            relabels.setdefault(a.item_id, []).append(a.label)
        pos_of = {int(i): k for k, i in enumerate(answered)}
        discarded, contradicted, unverified, flagged = [], 0, 0, set()
        for item in map(int, batch):
            labels = relabels.get(item, [])
            if not labels:  # no independent labeler can be asked about it (a replayed crowd): unverified
                unverified += 1
                continue
            if len(set(labels)) != 1:  # the relabels disagree: discard the item
                discarded.append(item)
                continue
            consensus = labels[0]
            p = rejected_proba[pos_of[item]]
            pred, conf = int(p.argmax()), float(p.max())
            for worker, label in sorted(original.get(item, {}).items()):
                if int(label) != consensus:
                    contradicted += 1
                    self.ledger.penalize(iteration, worker, conf, self.pool.n_classes, cfg.penalty, item)
                    if pred != consensus and conf >= cfg.high_confidence:
                        flagged.add(worker)
        discarded += dropped
        if discarded:
            self.set_status(discarded, DISCARDED, iteration)
        for worker in sorted(flagged):
            self.store.add_flag(iteration, worker, "F_i misclassified with high confidence after its label")
            self._audit(iteration, worker, h)
        info.update(suspicious=int(sum(suspicious.values())), reexamined=len(batch), not_reexamined=len(skipped),
                    h=h, discarded=len(discarded), contradicted=contradicted, unverified=unverified,
                    flagged=sorted(flagged))

    def _audit(self, iteration: int, worker: str, h: int) -> None:
        """Immediate check of a flagged labeler: h others relabel some of its past items; trust is capped at
        the share of those it got right."""
        n = min(self.cfg.trust.audit_size,
                max(0, (self.cfg.stop.budget - self.spent_before(iteration, f"audit:{worker}")) // h))
        ann = self.visible_answers(self.store.annotations())
        mine = ann[(ann["worker"] == worker) & ann["task"].isin(self.ids_with(LABELED))]
        if n == 0 or mine.empty:
            return
        rng = self.rng_for("audit", iteration, worker)
        pick = mine.iloc[np.sort(rng.choice(len(mine), size=min(n, len(mine)), replace=False))]
        others = {int(t): set(ann.loc[ann["task"] == t, "worker"]) for t in pick["task"]}
        answers = self.ask_crowd(pick["task"].to_numpy(), iteration, f"audit:{worker}", n_per_item=h, exclude=others)
        by_item: dict[int, list[int]] = {}
        for a in answers:
            by_item.setdefault(a.item_id, []).append(a.label)
        checked = [(int(t), int(l)) for t, l in zip(pick["task"], pick["label"])
                   if len(set(by_item.get(int(t), []))) == 1]
        if checked:
            right = np.mean([by_item[t][0] == l for t, l in checked])
            if right < self.ledger(worker):
                self.ledger.set(iteration, worker, float(right), f"audit: {right:.2f} of {len(checked)} right")

    def _quarantine(self, iteration: int, answered: np.ndarray, prev_model: Snapshot, acc_s: float,
                    post: pd.DataFrame, info: dict) -> tuple[pd.DataFrame, float]:
        """The re-examined batch still fails the secured check, so its labels are not the cause: suspect the
        inputs. Items whose confirmed label contradicts F_{i-1}'s out-of-sample prediction (what clean-label
        poisons look like: base-class images with target-class features) are set aside and F_i retrained;
        kept aside if S accuracy recovers, restored otherwise. Quarantined items are never deleted or reused."""
        oos = self.store.predictions().set_index("item_id")["label"]
        est = post.idxmax(axis=1)
        still = answered[np.isin(answered, self.ids_with(LABELED))]
        suspects = [int(i) for i in still if i in oos.index and i in est.index and int(est[i]) != int(oos[i])]
        info["quarantined"] = 0
        if not suspects:
            return post, acc_s
        retrained = self.learner.snapshot(f"F_{iteration} re-examined")
        self.learner.restore(prev_model)
        self.set_status(suspects, QUARANTINED, iteration)
        post2 = self.train_model(iteration, 2, prev_model)
        acc2, _ = self.secured_accuracy()
        if acc2 > acc_s:
            info.update(quarantined=len(suspects), quarantined_secured_acc=acc2)
            return post2, acc2
        self.set_status(suspects, LABELED, iteration)  # no better without them: not the cause
        self.learner.restore(retrained)
        return self.inferred_labels(), acc_s


def drop_p_value(before: np.ndarray, after: np.ndarray) -> float:
    """One-sided exact McNemar test that the model scoring ``after`` (right/wrong per S item) is worse than the
    one scoring ``before``: of the b + c items the two disagree about, b were lost and c gained, and under 'no
    change' b ~ Binomial(b + c, 1/2)."""
    from scipy.stats import binomtest

    b, c = int(np.sum(before & ~after)), int(np.sum(~before & after))
    return float(binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0
