"""From answers to a model: the annotations visible at this stage, the model's testimony per confidence band,
trust-weighted inference, training F_i on the labeled items and their augmentations, and the adversarial
examples of the new items (their vulnerability)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from robust_al.campaign.items import HOLDOUT, LABELED
from robust_al.crowd import TrustWeightedDS, confidence_band, model_worker
from robust_al.crowd.aggregate import (N_CONFIDENCE_BANDS, band_confusion, certainty, cross_fit_worker,
                                      human_answers)
from robust_al.crowd.classifier import CampaignLearner
from robust_al.crowd.learner import Snapshot
from robust_al.faults import kill_point
from robust_al.reproducible import seeded
from robust_al.trust.witness import cross_fitted_testimony, witness_outliers


class LabelsMixin:
    """Label inference, trust evidence, training and augmentation for a :class:`~robust_al.campaign.Campaign`."""

    def global_seed(self, *keys) -> int:
        """The seed of numpy's and torch's global generators for one stage (``with seeded(...)``): ART draws
        random starts (PGD, BIM) from them, so they are seeded from the campaign seed so that a run does not
        depend on what its process did before (measured: the same campaign gave different learning curves in a
        fresh process and in a reused worker)."""
        return int(self.rng_for("globals", *keys).integers(2**31))

    def train_seed(self, iteration: int, attempt: int = 0) -> int:
        return int(self.rng_for("train", iteration, attempt).integers(2**31))

    def _annotations(self, with_model: bool | None = None) -> pd.DataFrame:
        """Annotations of the labeled items, plus the model's out-of-sample predictions as one more worker
        (``with_model``, default ``aggregation.model_as_worker``)."""
        labeled = self.ids_with(LABELED)
        ann = self.visible_answers(self.store.annotations(labeled))[["task", "worker", "label"]]
        if self.cfg.aggregation.model_as_worker if with_model is None else with_model:
            pred = self.store.predictions()
            pred = pred[pred["item_id"].isin(labeled)]
            band = confidence_band(pred["score"].to_numpy(), self.pool.n_classes)
            ann = pd.concat([ann, pd.DataFrame({"task": pred["item_id"],
                                                "worker": [model_worker(i, b) for i, b in zip(pred["iteration"], band)],
                                                "label": pred["label"]})], ignore_index=True)
        return ann

    def trust_evidence(self, iteration: int) -> tuple[pd.DataFrame, dict[str, str]]:
        """Each label against the other evidence on its item (leave-one-out posteriors), and the labelers who
        contradict the cross-fitted witness more than the crowd does (flags for the ledger). When the model does
        not vote on labels (``aggregation.model_as_worker`` off) it still testifies here
        (``trust.model_evidence``): with one label per item it is the only other evidence, and a labeler who
        always turns one class into another disagrees with it on that class. The cross-fitted witness
        (``trust.cross_fit_folds``) testifies here only, never on the labels the model is trained on."""
        model = self.cfg.aggregation.model_as_worker or self.cfg.trust.model_evidence
        witness_ann, witness_counts = self._cross_fit_witness(iteration)
        if witness_ann is None and (self.cfg.aggregation.model_as_worker or not model):
            return self.learner.aggregator.leave_one_out(), {}
        witness = TrustWeightedDS(self.pool.n_classes, self.cfg.aggregation.method)
        ann = self._annotations(with_model=model)
        known = self.model_counts() if model else {}
        flags = {}
        if witness_ann is not None:
            flags = witness_outliers(human_answers(ann), witness_ann.set_index("task")["label"])
            ann, known = pd.concat([ann, witness_ann], ignore_index=True), {**known, **witness_counts}
        witness.fit(ann, self._label_weight, known)
        return witness.leave_one_out(), flags

    def _cross_fit_witness(self, iteration: int) -> tuple[pd.DataFrame | None, dict[str, np.ndarray]]:
        """The cross-fitted witness's testimony on every labeled item and its confusion on S per band (see
        :mod:`robust_al.trust.witness`), trained on the inferred labels, each item weighted by their certainty."""
        K = self.cfg.trust.cross_fit_folds
        labeled = self.ids_with(LABELED)
        if K < 2 or len(labeled) < 2 * K:
            return None, {}
        post = self.inferred_labels()
        labeled = labeled[np.isin(labeled, post.index.to_numpy())]
        q = post.loc[labeled].to_numpy()
        S = self.pool.subset(self.ids_with(HOLDOUT))
        X = self.pool.X[self.pool.positions(labeled)]
        if len(self.pool.input_shape) == 1:  # features already: no label has shaped them
            Z, Z_S = X, S.X
        else:
            Z, Z_S = self.learner.embed(X), self.learner.embed(S.X)
        out = cross_fitted_testimony(Z, q.argmax(axis=1), certainty(q), Z_S, S.y, self.pool.n_classes,
                                     self.rng_for("cross-fit", iteration), K)
        if out is None:
            return None, {}
        P, counts = out
        band = confidence_band(P.max(axis=1), self.pool.n_classes)
        ann = pd.DataFrame({"task": labeled, "worker": [cross_fit_worker(b) for b in band],
                            "label": P.argmax(axis=1)})
        return ann, {cross_fit_worker(b): counts[b] for b in range(len(counts))}

    def _label_weight(self, worker: str) -> float:
        """Labels of labelers routed out by trust are down-weighted (``aggregation.untrusted_weight``)."""
        return 1.0 if self.ledger.trusted(worker) else self.cfg.aggregation.untrusted_weight

    def model_counts(self) -> dict[str, np.ndarray]:
        """Each F_{i-1}'s confusion counts on S per confidence band, measured when it made its predictions (a
        store from before the bands holds one C x C table: it stands for every band)."""
        out = {}
        for i, c in self.store.model_confusions().items():
            bands = c if c.ndim == 3 else np.repeat(c[None], N_CONFIDENCE_BANDS, axis=0)
            out.update({model_worker(i, b): counts for b, counts in enumerate(bands)})
        return out

    def inferred_labels(self, annotations: pd.DataFrame | None = None) -> pd.DataFrame:
        """Posteriors (task x class) of the labeled items from their visible annotations, routed-out labelers
        down-weighted (``aggregation``)."""
        ann = self._annotations() if annotations is None else annotations
        return self.learner.aggregate(ann, self._label_weight, self.model_counts())

    def train_model(self, iteration: int, attempt: int, prev_model: Snapshot | None) -> pd.DataFrame:
        """Infer labels and train F_i on the labeled items and every stored augmentation of them."""
        ann = self._annotations()
        post = self.inferred_labels(ann)
        self.learner.restore(prev_model if self.cfg.model.warm_start and prev_model is not None
                             else self.initial_model)
        labeled = self.ids_with(LABELED)
        labeled = labeled[np.isin(labeled, self._vouched(ann))]
        if isinstance(self.learner, CampaignLearner):  # crowd learners make their own adversarial examples
            aug_ids, aug_X = np.zeros(0, np.int64), np.zeros((0, *self.pool.input_shape), np.float32)
        else:
            # made before this iteration: all a live run has here (its own come after training), and what a
            # retraining of F_iteration after the fact (evaluate.poisoning.target_without_poisons) must use
            aug_ids, aug_X, _, _ = self.store.augmentations(self.pool.input_shape, before=iteration)
        keep = np.isin(aug_ids, labeled)
        kill_point("training", iteration)
        self.learner.fit(self.pool.X[self.pool.positions(labeled)], labeled, ann, self.ledger,
                         extra_X=aug_X[keep], extra_items=aug_ids[keep], posteriors=post,
                         seed=self.train_seed(iteration, attempt))
        return post

    def _vouched(self, ann: pd.DataFrame) -> np.ndarray:
        """Items with at least one human answer of positive weight. An item that only routed-out labelers
        answered (``aggregation.untrusted_weight`` 0) has no label anyone trusts: its posterior is the class
        prior, and training on that prior's top class put a coin's label on it (with k = 1, every item of a
        routed-out colluder). It is not trained on; its answers stay stored and count again if trust returns."""
        human = human_answers(ann)
        weight = human["worker"].map(self._label_weight).to_numpy(dtype=float)
        return np.unique(human.loc[weight > 0, "task"].to_numpy())

    def record_predictions(self, iteration: int, batch: np.ndarray) -> None:
        """F_{i-1}'s out-of-sample opinion on the queried items, kept as evidence (and as pre-annotations)."""
        proba = self.learner.predict_proba(self.pool.X[self.pool.positions(batch)])
        for item, p in zip(batch, proba):
            self.store.set_prediction(int(item), iteration, int(p.argmax()), float(p.max()))
        if self.cfg.aggregation.model_as_worker or self.cfg.trust.model_evidence:
            S = self.pool.subset(self.ids_with(HOLDOUT))
            p_s = self.learner.predict_proba(S.X)
            self.store.set_model_confusion(iteration, band_confusion(p_s, S.y, self.pool.n_classes))

    def test_accuracy(self) -> float:
        T = self.dataset.test
        known = T.y >= 0
        return float((self.learner.predict(T.X[known]) == T.y[known]).mean()) if known.any() else float("nan")

    def augment_new(self, iteration: int, new_items: np.ndarray, post: pd.DataFrame) -> np.ndarray:
        """Adversarial examples (and noisy copies) of the newly labeled items on the accepted model F_i."""
        if self.augmenter is None or len(new_items) == 0:
            return np.zeros(0)
        new_items = new_items[np.isin(new_items, post.index.to_numpy())]
        X = self.pool.X[self.pool.positions(new_items)]
        labels = post.loc[new_items].to_numpy().argmax(axis=1)
        norms = []
        with seeded(self.global_seed("augment", iteration)):
            for aug in self.augmenter.adversarial(new_items, X, labels):
                self.store.add_augmentations(iteration, aug.item_ids, aug.method, aug.X, aug.norms)
                kill_point("augmentation-written", iteration)
                norms.append(aug.norms)
        for aug in self.augmenter.noise(new_items, X, self.rng_for("noise", iteration)):
            self.store.add_augmentations(iteration, aug.item_ids, aug.method, aug.X, aug.norms)
        # an item's vulnerability: its smallest perturbation over the attacks
        return np.min(np.stack(norms), axis=0) if norms else np.zeros(0)
