"""The poison filter stage, between labeling and training: labeled items whose place in F_{i-1}'s feature space
contradicts their label (``trusted-knn``) or that sit in an unusually tight same-label clump (``clump``) are kept out
of training (status ``filtered``), each removal stored with its reason and score."""
from __future__ import annotations

import numpy as np

from robust_al.campaign.items import FILTERED, HOLDOUT, LABELED
from robust_al.filter import SameLabelClump, TrustedKNN


class FilterMixin:
    """The poison filter for a :class:`~robust_al.campaign.Campaign` (``poison_filter`` in the config)."""

    def filter_poisons(self, iteration: int, answered: np.ndarray, info: dict) -> np.ndarray:
        """Judge with F_{i-1} (the model the attacker crafted against, and the one at hand before training);
        returns the answered items still labeled. ``trusted-knn`` judges this iteration's items by votes from S
        with its trusted labels and (``votes_from``) from items accepted in earlier iterations, never from the
        batch judged; ``clump`` measures tightness among all labeled items (a clump grows over batches) and judges
        this iteration's. The first iteration has no model to judge with: nothing is filtered."""
        f = self.cfg.poison_filter
        if not f.enabled or iteration == 0 or len(answered) == 0:
            return answered
        post = self.inferred_labels(self._annotations())
        known = post.index.to_numpy()
        labeled = self.ids_with(LABELED)
        labeled = labeled[np.isin(labeled, known)]
        y_all = post.loc[labeled].to_numpy().argmax(1)
        Z_all = self.learner.embed(self.pool.X[self.pool.positions(labeled)])
        in_batch = np.isin(labeled, answered)
        out: dict[int, tuple[str, float]] = {}
        if "trusted-knn" in f.rules and in_batch.any():
            S = self.pool.subset(self.ids_with(HOLDOUT))
            Z_ref, y_ref = self.learner.embed(S.X), S.y
            if f.votes_from == "secured+earlier":
                Z_ref = np.concatenate([Z_ref, Z_all[~in_batch]])
                y_ref = np.concatenate([y_ref, y_all[~in_batch]])
            mask, share = TrustedKNN(f.k, f.min_share).flag(Z_all[in_batch], y_all[in_batch], Z_ref, y_ref,
                                                            self.pool.n_classes)
            for i, s in zip(labeled[in_batch][mask], share[mask]):
                out[int(i)] = (f"trusted-knn k={f.k}: {s:.2f} of the votes for its label", float(s))
        if "clump" in f.rules:  # measured over every labeled item, judged on this batch's: re-judging every
            # accepted one each iteration would take the tail above the threshold again and again; only the
            # members of a clump this batch's items are found in go with them (poisons that came before there
            # were m of them)
            rule = SameLabelClump(f.clump_m, f.clump_z)
            t, nn = rule.neighbours(Z_all, y_all)
            above = rule.above(t)
            mask = above & in_batch
            earlier = rule.clump_of(nn, mask, above) & ~in_batch
            for i, s in zip(labeled[mask], t[mask]):
                out.setdefault(int(i), (f"clump m={f.clump_m}: similarity {s:.3f} to its {f.clump_m}th nearest "
                                        "same-label item", float(s)))
            for i, s in zip(labeled[earlier], t[earlier]):
                out.setdefault(int(i), (f"clump m={f.clump_m}: accepted earlier, in the clump of an item of this "
                                        f"batch (similarity {s:.3f})", float(s)))
        ids = np.array(sorted(out), dtype=np.int64)
        self.store.add_filtered(iteration, [(i, *out[int(i)]) for i in ids])
        self.set_status(ids, FILTERED, iteration)
        info["filtered"] = int(len(ids))
        return answered[~np.isin(answered, ids)]
