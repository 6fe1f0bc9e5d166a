"""Crowd learners by name (for configs and pipelines)."""
from __future__ import annotations

from robust_al.crowd.base import CrowdLearner
from robust_al.crowd.crowd_layer import CrowdLayer
from robust_al.crowd.neural_em import ALFC, MALC, AggNet
from robust_al.crowd.two_stage import TwoStage

LEARNERS = {
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


def make_learner(name: str, n_classes: int, input_shape, **kw) -> CrowdLearner:
    if name not in LEARNERS:
        raise ValueError(f"unknown crowd learner {name!r}; expected one of {sorted(LEARNERS)}")
    return LEARNERS[name](n_classes, input_shape, **kw)
