"""When a campaign stops, as small criteria (small-text's ``StoppingCriterion`` shape): each looks at the
finished iteration and gives a reason to stop or None; the first reason wins, in the order of the paper's
stop rules (accuracy on S, robustness, budget), then the safety limits."""
from __future__ import annotations

import numpy as np


class StoppingCriterion:
    """A reason to stop after ``iteration`` (its metrics and the vulnerability of its new items), or None."""

    def reason(self, campaign, iteration: int, metrics: dict, vuln: np.ndarray) -> str | None:
        raise NotImplementedError


class TargetAccuracy(StoppingCriterion):
    def __init__(self, target: float):
        self.target = target

    def reason(self, campaign, iteration, metrics, vuln):
        if metrics["secured_acc"] >= self.target:
            return f"target accuracy reached on S ({metrics['secured_acc']:.3f} >= {self.target})"
        return None


class Robust(StoppingCriterion):
    """Every new item's minimal adversarial perturbation exceeds tau."""

    def __init__(self, tau: float):
        self.tau = tau

    def reason(self, campaign, iteration, metrics, vuln):
        if len(vuln) and float(vuln.min()) > self.tau:
            return f"every adversarial perturbation exceeds tau ({float(vuln.min()):.3f} > {self.tau})"
        return None


class BudgetSpent(StoppingCriterion):
    """Nothing more is affordable; a batch already put to labelers ahead was affordable, and is used first."""

    def reason(self, campaign, iteration, metrics, vuln):
        if campaign.posted_ahead(iteration) is None and campaign.affordable(1) == 0:
            return f"label budget spent ({metrics['labels_used']} of {campaign.cfg.stop.budget})"
        return None


class MaxIterations(StoppingCriterion):
    def __init__(self, n: int):
        self.n = n

    def reason(self, campaign, iteration, metrics, vuln):
        return f"max_iterations ({self.n}) reached" if iteration + 1 >= self.n else None


class PoolExhausted(StoppingCriterion):
    def reason(self, campaign, iteration, metrics, vuln):
        if campaign.posted_ahead(iteration) is None and len(campaign.candidates()) == 0:
            return "no unlabeled item left that an eligible labeler can answer"
        return None


def criteria(stop) -> list[StoppingCriterion]:
    """The criteria of a ``stop`` config section, in the order they are asked."""
    out: list[StoppingCriterion] = []
    if stop.target_accuracy is not None:
        out.append(TargetAccuracy(stop.target_accuracy))
    if stop.tau is not None:
        out.append(Robust(stop.tau))
    return [*out, BudgetSpent(), MaxIterations(stop.max_iterations), PoolExhausted()]


def stop_reason(campaign, iteration: int, metrics: dict, vuln: np.ndarray) -> str | None:
    """The first criterion's reason to stop, or None to go on."""
    for criterion in criteria(campaign.cfg.stop):
        why = criterion.reason(campaign, iteration, metrics, vuln)
        if why:
            return why
    return None
