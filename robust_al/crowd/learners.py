"""Crowd learners by name (for configs and pipelines)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robust_al.crowd.base import CrowdLearner
from robust_al.crowd.crowd_layer import CrowdLayer
from robust_al.crowd.names import LEARNER_NAMES
from robust_al.crowd.neural_em import ALFC, MALC, AggNet
from robust_al.crowd.two_stage import TwoStage

# (n_classes, input_shape, **kw) -> learner
LEARNERS: dict[str, Callable[..., CrowdLearner]] = {
    "mv": lambda C, shape, **kw: TwoStage(C, shape, method="mv", **kw),
    "ds": lambda C, shape, **kw: TwoStage(C, shape, method="ds", **kw),
    "crowdlayer-mw": lambda C, shape, **kw: CrowdLayer(C, shape, kind="MW", **kw),
    "crowdlayer-vw": lambda C, shape, **kw: CrowdLayer(C, shape, kind="VW", **kw),
    "crowdlayer-vwb": lambda C, shape, **kw: CrowdLayer(C, shape, kind="VW-B", **kw),
    "aggnet": AggNet,
    "alfc": ALFC,
    "malc": MALC,
    "alfc-clpm": lambda C, shape, **kw: ALFC(C, shape, reweight="cl-pm", **kw),
    "malc-clpm": lambda C, shape, **kw: MALC(C, shape, reweight="cl-pm", **kw),
}
assert tuple(LEARNERS) == LEARNER_NAMES, "robust_al.crowd.names lists the learners the config accepts"


def make_learner(name: str, n_classes: int, input_shape, **kw) -> CrowdLearner:
    if name not in LEARNERS:
        raise ValueError(f"unknown crowd learner {name!r}; expected one of {sorted(LEARNERS)}")
    return LEARNERS[name](n_classes, input_shape, **kw)


def campaign_learner(cfg, input_shape, n_classes: int, X: np.ndarray | None = None):
    """The learner a campaign trains (``model.learner``: two-stage network or a crowd learner), built from a
    ``CampaignConfig``; ``.trainer`` is its network. Its input standardization takes the statistics of ``X``
    (the unlabeled pool); without ``X`` it is left for loaded weights to set (export, predict)."""
    from robust_al.crowd.aggregate import TrustWeightedDS
    from robust_al.crowd.classifier import CampaignLearner, CrowdClassifier
    from robust_al.crowd.network import NetworkTrainer

    m = cfg.model
    aggregator = TrustWeightedDS(n_classes, cfg.aggregation.method)
    if m.learner == "two-stage":
        net = NetworkTrainer.from_config(input_shape, n_classes, m, cfg.seed)
        if X is not None:
            net.set_input_statistics(X)
        return CrowdClassifier(net, aggregator, m.targets)
    net = make_learner(m.learner, n_classes, input_shape, hidden=m.hidden, dropout=m.dropout, epochs=m.epochs,
                       batch_size=m.batch_size, lr=m.lr, device=m.device, seed=cfg.seed, warm_start=True,
                       prior_strength=m.trust_prior, min_steps=m.min_steps, standardize=m.standardize,
                       **m.learner_options)
    # init_model needs inputs for its statistics; placeholders do when loaded weights overwrite them
    net.init_model(X if X is not None else np.zeros((2, *input_shape), np.float32))
    return CampaignLearner(net, aggregator)
