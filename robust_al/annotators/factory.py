"""Build a campaign's annotators from its config."""
from __future__ import annotations

import numpy as np

from robust_al.annotators.base import Annotator, item_rng
from robust_al.annotators.replay import replayed_crowd
from robust_al.annotators.simulated import (BenignAnnotator, ColludingAnnotator, MaliciousAnnotator,
                                            SimulatedAnnotator, SpammerAnnotator, truth_map)
from robust_al.config import AnnotatorsConfig, LabelerConfig
from robust_al.data.pool import Dataset


def simulated_labelers(specs: list[LabelerConfig], truth: dict[int, int], n_classes: int, seed: int
                       ) -> list[SimulatedAnnotator]:
    """Labelers named ``<name or kind><k>``, numbered per prefix in config order."""
    out: list[SimulatedAnnotator] = []
    counters: dict[str, int] = {}
    for spec in specs:
        prefix = spec.name or spec.kind
        for _ in range(spec.count):
            wid = f"{prefix}{counters.get(prefix, 0)}"
            counters[prefix] = counters.get(prefix, 0) + 1
            if spec.kind == "benign":
                out.append(BenignAnnotator(wid, truth, n_classes, pr=spec.pr, seed=seed))
            elif spec.kind == "malicious":
                target, to = spec.target, spec.to
                if target is None or to is None:  # LabelerConfig's validator refuses this already
                    raise ValueError("annotators: a malicious labeler needs 'target' (c_t) and 'to' (c'_t)")
                for key, c in (("target", target), ("to", to)):
                    if not 0 <= int(c) < n_classes:
                        raise ValueError(f"annotators: malicious {key} = {c} is not a class in 0..{n_classes - 1}")
                out.append(MaliciousAnnotator(wid, truth, n_classes, target=target, to=to,
                                              pr=spec.pr, seed=seed))
            elif spec.kind == "spammer":
                out.append(SpammerAnnotator(wid, truth, n_classes, seed=seed))
            elif spec.kind == "colluding":
                out.append(ColludingAnnotator(wid, truth, n_classes, group=spec.group, rate=spec.rate,
                                              pr=spec.pr, seed=seed))
    return out


def injected_items(cfg: AnnotatorsConfig, recorded, truth: dict[int, int], seed: int, worker_id: str
                   ) -> dict[int, int]:
    """The items an injected worker can be asked about (``annotators.inject_items``): a fixed random subset,
    seeded by (seed, worker), as large as a typical replayed worker's, so that a simulated worker competes
    for queries on the same terms as the real ones it is mixed with."""
    if cfg.inject_items == "all":
        return truth
    n = (int(recorded.groupby("worker").size().median()) if cfg.inject_items == "median"
         else int(cfg.inject_items))
    ids = np.fromiter(truth.keys(), dtype=np.int64, count=len(truth))
    if n >= len(ids):
        return truth
    pick = item_rng(seed, "inject-items", worker_id).choice(ids, size=n, replace=False)
    return {int(i): truth[int(i)] for i in np.sort(pick)}


def build_annotators(cfg: AnnotatorsConfig, dataset: Dataset, seed: int) -> list[Annotator]:
    pool = dataset.train
    truth = truth_map(pool.ids, pool.y)
    crowd: list[Annotator]
    if cfg.kind == "simulated":
        if len(truth) < len(pool):
            raise ValueError(f"annotators.kind = 'simulated' needs ground truth for every item of {dataset.name!r}")
        crowd = list(simulated_labelers(cfg.labelers, truth, pool.n_classes, seed))
    else:
        if dataset.recorded is None:
            raise ValueError(f"annotators.kind = 'replay' needs a recorded crowd; dataset {dataset.name!r} has none")
        injected = simulated_labelers(cfg.inject, truth, pool.n_classes, seed)
        for a in injected:
            a.truth = injected_items(cfg, dataset.recorded, truth, seed, a.worker_id)
        crowd = [*replayed_crowd(dataset.recorded), *injected]
    if not crowd:
        raise ValueError("annotators: the crowd is empty (every count is 0)")
    return crowd
