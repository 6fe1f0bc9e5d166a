"""Experiment hooks: Q3's clean-label poisons (ART feature collision), crafted against the model of the
iteration before and injected into the unlabeled pool before that iteration's query; and where they went."""
from __future__ import annotations

import numpy as np

from robust_al.annotators.factory import build_annotators
from robust_al.campaign.items import DISCARDED, FILTERED, LABELED, QUARANTINED
from robust_al.crowd import NetworkTrainer
from robust_al.reproducible import seeded


class PoisonHook:
    """Poison injection and its metrics for a :class:`~robust_al.campaign.Campaign` (``poison`` config)."""

    def injected_ids(self) -> np.ndarray:
        """Ids of items an experiment injected into the pool (poisons)."""
        return self.store.injected_ids()

    def inject_poisons(self, iteration: int) -> None:
        """Q3: craft clean-label poisons (``poison.attack``) against the current model F_{i-1} and put them into the
        unlabeled pool, labeled honestly (as their base class) by whoever is asked. Done once per campaign."""
        p = self.cfg.poison
        if not p.enabled or iteration != p.at_iteration or self.store.get_meta("poison") is not None:
            return
        with seeded(self.global_seed("poison", iteration)):
            self._craft_poisons(iteration)

    def poison_classes(self) -> tuple[int, int]:
        """(target class, base class): the config's, or (where null) drawn from the campaign's seed, distinct."""
        p, n = self.cfg.poison, self.pool.n_classes
        for key, c in (("target_class", p.target_class), ("base_class", p.base_class)):
            if c is not None and c >= n:
                raise ValueError(f"poison.{key} = {c}, but the data set has {n} classes (0..{n - 1})")
        rng = self.rng_for("poison", "classes")
        target = p.target_class if p.target_class is not None else int(
            rng.choice([c for c in range(n) if c != p.base_class]))
        base = p.base_class if p.base_class is not None else int(rng.choice([c for c in range(n) if c != target]))
        if target == base:
            raise ValueError(f"poison.target_class and poison.base_class are both {target}: they must differ")
        return target, base

    def _craft_poisons(self, iteration: int) -> None:
        from robust_al.augment.poison import craft_verified

        p = self.cfg.poison
        target_class, base_class = self.poison_classes()
        T = self.dataset.test
        ok = np.where((T.y == target_class) & (self.learner.predict(T.X) == target_class))[0]
        clean = self.pool.y >= 0

        def baseline(PX: np.ndarray, Py: np.ndarray) -> NetworkTrainer:
            """The network trained on every training item with its true label, plus ``PX`` labeled ``Py``."""
            base = NetworkTrainer.from_config(self.pool.input_shape, self.pool.n_classes, self.cfg.model,
                                              self.seed)
            base.set_input_statistics(self.pool.X)
            base.fit(np.concatenate([self.pool.X[clean], PX]), np.concatenate([self.pool.y[clean], Py]),
                     seed=self.train_seed(iteration, "poison-baseline"))
            return base

        clean_p = None
        if p.targets == "vulnerable":
            # targets the clean model still gets right with p >= margin, least sure first: ones the poisons can
            # move, but that the boundary alone does not flip
            pt = baseline(T.X[:0], T.y[:0]).predict_proba(T.X[ok])[:, target_class]
            sure = pt >= p.target_margin
            order = ok[sure][np.argsort(pt[sure], kind="stable")][:p.max_targets]
            clean_p = dict(zip(ok.tolist(), pt.tolist()))
        else:
            order = ok[self.rng_for("poison", "targets").permutation(len(ok))][:p.max_targets]
        free = self.pool.ids[(~self.taken) & (self.pool.y == base_class)][:p.n_base]
        base_X = self.pool.X[self.pool.positions(free)]

        def verify(PX: np.ndarray, Py: np.ndarray, target_x: np.ndarray) -> bool:
            return bool(baseline(PX, Py).predict_proba(target_x[None]).argmax(1)[0] == base_class)

        ps = craft_verified(self.net.model, self.pool.input_shape, self.pool.n_classes,
                            [(T.X[t], target_class) for t in order], base_X, free, base_class,
                            list(p.watermarks), p.learning_rate if p.attack == "feature-collision"
                            else p.bp_learning_rate, p.similarity_coeff, p.max_iter,
                            verify if p.verify else None, attack=p.attack, epsilon=p.epsilon,
                            bound_collision=p.bound_collision)
        if ps is None:
            self.store.set_meta("poison", {"crafted": False, "targets_tried": [int(t) for t in order]})
            return
        target = int(order[ps.target_rank])
        ids = np.arange(len(ps.X), dtype=np.int64) + int(max(self.pool.ids.max(), T.ids.max())) + 1
        meta = {"crafted": True, "iteration": iteration, "target_test_index": target,
                "target_class": ps.target_class, "base_class": ps.base_class, "watermark": ps.watermark,
                "item_ids": [int(i) for i in ids], "base_ids": [int(i) for i in ps.base_ids], **ps.info}
        if clean_p is not None:  # what the clean model gave the target: the poisons moved it from there
            meta["target_clean_p"] = clean_p[target]
        self.store.add_injected(iteration, ids, p.attack, ps.X, ps.y, ("poison", meta))
        self.dataset.train = self.pool = self.pool.extended(ids, ps.X, ps.y)
        self.taken = np.concatenate([self.taken, np.zeros(len(ids), dtype=bool)])
        if self.annotators:  # simulated / replayed labelers learn the new items' (honest) answers
            self.annotators = build_annotators(self.cfg.annotators, self.dataset, self.seed)
            self.crowd.annotators = {a.worker_id: a for a in self.annotators}
        self.mind = None  # the pool changed: distances are rebuilt at the next query

    def poison_metrics(self) -> dict:
        """Q3: is the target misclassified as the base class now; where did the poisons go."""
        meta = self.store.get_meta("poison")
        if not meta or not meta.get("crafted"):
            return {}
        T = self.dataset.test
        pred = int(self.learner.predict(T.X[[meta["target_test_index"]]])[0])
        st = [self.status.get(int(i)) for i in meta["item_ids"]]
        return {"poison_target_pred": pred, "poison_success": pred == meta["base_class"],
                "poisons_labeled": st.count(LABELED), "poisons_quarantined": st.count(QUARANTINED),
                "poisons_discarded": st.count(DISCARDED), "poisons_filtered": st.count(FILTERED)}
