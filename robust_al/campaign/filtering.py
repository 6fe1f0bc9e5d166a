"""The poison filter stage, between labeling and training: newly labeled items whose label their trusted
neighbours in F_{i-1}'s feature space contradict are kept out of training (status ``filtered``), each removal
stored with its reason and score."""
from __future__ import annotations

import numpy as np

from robust_al.campaign.items import FILTERED, HOLDOUT, LABELED
from robust_al.filter import TrustedKNN


class FilterMixin:
    """The poison filter for a :class:`~robust_al.campaign.Campaign` (``poison_filter`` in the config)."""

    def filter_poisons(self, iteration: int, answered: np.ndarray, info: dict) -> np.ndarray:
        """Judge this iteration's newly labeled items with F_{i-1} (the model the attacker crafted against, and
        the one at hand before training); returns the answered items still labeled. Votes come from S with its
        trusted labels and (``votes_from``) from items accepted in earlier iterations with their inferred labels,
        never from the batch judged. The first iteration has no model to judge with: nothing is filtered."""
        f = self.cfg.poison_filter
        if not f.enabled or iteration == 0 or len(answered) == 0:
            return answered
        post = self.inferred_labels(self._annotations())
        judged = answered[np.isin(answered, post.index.to_numpy())]
        if len(judged) == 0:
            return answered
        S = self.pool.subset(self.ids_with(HOLDOUT))
        ref_ids, ref_y = S.ids, S.y
        if f.votes_from == "secured+earlier":
            earlier = self.ids_with(LABELED)
            earlier = earlier[~np.isin(earlier, answered) & np.isin(earlier, post.index.to_numpy())]
            ref_ids = np.concatenate([ref_ids, earlier])
            ref_y = np.concatenate([ref_y, post.loc[earlier].to_numpy().argmax(1)])
        y = post.loc[judged].to_numpy().argmax(1)
        Z = self.learner.embed(self.pool.X[self.pool.positions(judged)])
        Z_ref = self.learner.embed(self.pool.X[self.pool.positions(ref_ids)])
        mask, share = TrustedKNN(f.k, f.min_share).flag(Z, y, Z_ref, ref_y, self.pool.n_classes)
        out = judged[mask]
        self.store.add_filtered(iteration, [(int(i), f"trusted-knn k={f.k}: {s:.2f} of the votes for its label",
                                             float(s)) for i, s in zip(out, share[mask])])
        self.set_status(out, FILTERED, iteration)
        info["filtered"] = int(len(out))
        return answered[~np.isin(answered, out)]
