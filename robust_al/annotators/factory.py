"""Build a campaign's annotators from its config."""
from __future__ import annotations

from robust_al.annotators.base import Annotator
from robust_al.annotators.replay import replayed_crowd
from robust_al.annotators.simulated import (BenignAnnotator, ColludingAnnotator, MaliciousAnnotator,
                                            SpammerAnnotator, truth_map)
from robust_al.config import AnnotatorsConfig, LabelerConfig
from robust_al.data.pool import Dataset


def simulated_labelers(specs: list[LabelerConfig], truth: dict[int, int], n_classes: int, seed: int
                       ) -> list[Annotator]:
    """Labelers named ``<name or kind><k>``, numbered per prefix in config order."""
    out: list[Annotator] = []
    counters: dict[str, int] = {}
    for spec in specs:
        prefix = spec.name or spec.kind
        for _ in range(spec.count):
            wid = f"{prefix}{counters.get(prefix, 0)}"
            counters[prefix] = counters.get(prefix, 0) + 1
            if spec.kind == "benign":
                out.append(BenignAnnotator(wid, truth, n_classes, pr=spec.pr, seed=seed))
            elif spec.kind == "malicious":
                for key, c in (("target", spec.target), ("to", spec.to)):
                    if not 0 <= int(c) < n_classes:
                        raise ValueError(f"annotators: malicious {key} = {c} is not a class in 0..{n_classes - 1}")
                out.append(MaliciousAnnotator(wid, truth, n_classes, target=spec.target, to=spec.to,
                                              pr=spec.pr, seed=seed))
            elif spec.kind == "spammer":
                out.append(SpammerAnnotator(wid, truth, n_classes, seed=seed))
            elif spec.kind == "colluding":
                out.append(ColludingAnnotator(wid, truth, n_classes, group=spec.group, rate=spec.rate,
                                              pr=spec.pr, seed=seed))
    return out


def build_annotators(cfg: AnnotatorsConfig, dataset: Dataset, seed: int) -> list[Annotator]:
    pool = dataset.train
    truth = truth_map(pool.ids, pool.y)
    if cfg.kind == "simulated":
        if len(truth) < len(pool):
            raise ValueError(f"annotators.kind = 'simulated' needs ground truth for every item of {dataset.name!r}")
        crowd = simulated_labelers(cfg.labelers, truth, pool.n_classes, seed)
    else:
        if dataset.recorded is None:
            raise ValueError(f"annotators.kind = 'replay' needs a recorded crowd; dataset {dataset.name!r} has none")
        crowd = list(replayed_crowd(dataset.recorded)) + simulated_labelers(cfg.inject, truth, pool.n_classes, seed)
    if not crowd:
        raise ValueError("annotators: the crowd is empty (every count is 0)")
    return crowd
