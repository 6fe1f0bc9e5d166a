"""The estimator the campaign trains: fit on items + crowd annotations; predict_proba; embed.

Crowd-robust learners (A-LFC, MALC...) implement the same interface and plug into the loop.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from robust_al.crowd.aggregate import (TrustWeightedDS, certainty, human_answers, trusted_certainty,
                                      weight_function)
from robust_al.crowd.learner import Snapshot
from robust_al.crowd.network import NetworkTrainer


class CrowdClassifier:
    """Two-stage learner: trust-weighted Dawid-Skene posteriors, then a network trained on the inferred labels
    (``targets='hard'``), on the posteriors themselves (``'soft'``), or on the inferred labels, each item
    weighted by how far its posterior's top class stands above chance (``'weighted'``:
    w_i = (max_y q_i(y) - 1/C) / (1 - 1/C), so a label only a labeler Dawid-Skene finds near chance vouches for
    counts for little, while equally sure items keep equal weights, as with ``'hard'``).

    ``fit(X, item_ids, annotations)`` takes items row-aligned with ``item_ids`` and annotations in crowd-kit's
    long (task, worker, label) form; extra examples (adversarial / noisy copies of labeled items, no labeling
    cost) are trained on with the posterior of the item they were made from. Fitted: ``posteriors_``,
    ``labels_``, ``confusions_``, ``loss_history_``.
    """

    def __init__(self, trainer: NetworkTrainer, aggregator: TrustWeightedDS, targets: str = "hard"):
        if targets not in ("hard", "soft", "weighted", "trust"):
            raise ValueError(f"targets must be 'hard', 'soft', 'weighted' or 'trust', got {targets!r}")
        self.trainer, self.aggregator, self.targets = trainer, aggregator, targets

    def aggregate(self, annotations: pd.DataFrame,
                  trust: Callable[[str], float] | Mapping[str, float] | None = None,
                  known_counts: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
        self.aggregator.fit(annotations, trust, known_counts)
        self.posteriors_ = self.aggregator.posteriors_
        self.labels_ = self.aggregator.labels_
        self.confusions_ = self.aggregator.confusions_
        return self.posteriors_

    def fit(self, X: np.ndarray, item_ids: np.ndarray, annotations: pd.DataFrame,
            trust: Callable[[str], float] | Mapping[str, float] | None = None,
            extra_X: np.ndarray | None = None, extra_items: np.ndarray | None = None,
            posteriors: pd.DataFrame | None = None, seed: int = 0) -> CrowdClassifier:
        post = self.aggregate(annotations, trust) if posteriors is None else posteriors
        keep = np.isin(item_ids, post.index.to_numpy())
        X_all, ids = X[keep], item_ids[keep]
        if extra_X is not None and len(extra_X):
            if extra_items is None:
                raise ValueError("extra_X needs extra_items (the item each extra row was made from)")
            ok = np.isin(extra_items, post.index.to_numpy())
            X_all, ids = np.concatenate([X_all, extra_X[ok]]), np.concatenate([ids, extra_items[ok]])
        T_all = post.loc[ids].to_numpy(dtype=np.float32)
        weights = None
        if self.targets == "weighted":
            weights = np.clip(certainty(T_all), 1e-3, 1.0)
        elif self.targets == "trust":
            sure = trusted_certainty(annotations, post.idxmax(axis=1), weight_function(trust), T_all.shape[1])
            weights = np.clip(sure.loc[ids].to_numpy(dtype=np.float32), 1e-3, 1.0)
        if self.targets != "soft":  # the inferred label, not the posterior (see ModelConfig.targets)
            T_all = np.eye(T_all.shape[1], dtype=np.float32)[T_all.argmax(axis=1)]
        self.loss_history_ = self.trainer.fit(X_all, T_all, weights=weights, seed=seed)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.trainer.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def embed(self, X: np.ndarray) -> np.ndarray:
        return self.trainer.embed(X)

    def snapshot(self, label: str = "") -> Snapshot:
        """The network's weights as an immutable value (F_i; the inferred labels are the store's)."""
        return self.trainer.snapshot(label)

    def restore(self, snapshot: Snapshot) -> None:
        self.trainer.restore(snapshot)


class CampaignLearner(CrowdClassifier):
    """Puts a crowd learner (A-LFC, MALC, Crowd Layer...; :mod:`robust_al.crowd.learners`) behind the interface
    the campaign trains: the campaign's trust-weighted Dawid-Skene still gives the label estimates that trust
    and augmentation need, while the network is fitted by the learner itself from the human annotations (with
    its own confusion matrices, seeded from trust when its ``prior_strength`` > 0). The campaign's ART
    augmentations are not fed to these learners (the adversarial ones make their own adversarial examples);
    they still measure vulnerability for the stop criterion and N_c.
    """

    def __init__(self, learner, aggregator: TrustWeightedDS):
        super().__init__(learner, aggregator)  # predict_proba / embed come from the learner
        self.learner = learner

    def fit(self, X: np.ndarray, item_ids: np.ndarray, annotations: pd.DataFrame,
            trust: Callable[[str], float] | Mapping[str, float] | None = None,
            extra_X: np.ndarray | None = None, extra_items: np.ndarray | None = None,
            posteriors: pd.DataFrame | None = None, seed: int = 0) -> CampaignLearner:
        human = human_answers(annotations)
        human = human[human["task"].isin(item_ids)]
        table: dict | None
        if trust is not None and hasattr(trust, "table"):  # a TrustLedger: its current trust per labeler
            table = dict(trust.table())
        else:
            table = dict(trust) if isinstance(trust, Mapping) else None
        self.learner.seed = seed
        self.learner.fit(X, human, item_ids, prior_trust=table)
        self.loss_history_ = self.learner.loss_history_
        return self
