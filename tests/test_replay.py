"""Replayed real crowds: a campaign over recorded answers never asks a worker about an item they did not see."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from robust_al.campaign import Campaign
from robust_al.config import load_config
from robust_al.data.loaders import default_datasets_dir
from robust_al.store import RunStore


def write_generic_crowd(tmp_path, n=600, d=6, C=3, workers=12, seed=0):
    """A small crowd on disk in the generic format: features.npy, answers.csv (item,worker,label), truth.csv."""
    rng = np.random.default_rng(seed)
    y = rng.integers(C, size=n)
    X = rng.normal(size=(C, d))[y] + rng.normal(0, 0.7, size=(n, d))
    np.save(tmp_path / "features.npy", X.astype(np.float32))
    rows = []
    for i in range(n):
        for w in rng.choice(workers, size=3, replace=False):  # each item seen by 3 of the 12 workers
            acc = 0.55 if w < 3 else 0.9
            rows.append((i, f"turk{w}", int(y[i] if rng.random() < acc else (y[i] + 1) % C)))
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(tmp_path / "answers.csv", index=False)
    pd.DataFrame({"item": np.arange(n), "label": y}).to_csv(tmp_path / "truth.csv", index=False)
    return pd.DataFrame(rows, columns=["item", "worker", "label"])


def test_replayed_campaign_only_asks_workers_what_they_recorded(tmp_path):
    recorded = write_generic_crowd(tmp_path)
    cfg = load_config(data=tiny_config(**{
        "data": {"name": "generic", "options": {"features": str(tmp_path / "features.npy"),
                                                "annotations": str(tmp_path / "answers.csv"),
                                                "truth": str(tmp_path / "truth.csv")}},
        "annotators": {"kind": "replay", "k": 2,
                       "inject": [{"kind": "malicious", "count": 1, "target": 0, "to": 2, "pr": 0.0}]},
        "stop.budget": 300}))
    Campaign.create(cfg, tmp_path / "run", echo=None).run(progress=False)
    asked = RunStore(tmp_path / "run").annotations()
    real = asked[~asked["worker"].str.startswith("malicious")]
    seen = set(zip(recorded["item"], recorded["worker"]))
    assert len(real) > 100
    assert all((t, w) in seen for t, w in zip(real["task"], real["worker"]))
    # and every replayed answer is the recorded one
    rec = recorded.set_index(["item", "worker"])["label"]
    assert (rec.loc[list(zip(real["task"], real["worker"]))].to_numpy() == real["label"].to_numpy()).all()


@pytest.mark.skipif(not (default_datasets_dir() / "labelme" / "answers.txt").exists(),
                    reason="LabelMe not found under the shared datasets folder")
def test_labelme_replayed_crowd_campaign_flags_the_injected_malicious_worker(tmp_path):
    # inject_items = all: the injected worker can answer every item (the unfair setting; by default it gets the
    # median real worker's share, 2 of 400 queries here, too few to judge anyone by)
    cfg = load_config("configs/labelme.yaml", ["stop.budget=400", "model.epochs=15", "annotators.inject_items=all"])
    result = Campaign.create(cfg, tmp_path / "run", echo=None).run(progress=False)
    trust = result.metrics["trust"]
    # the least trusted of the labelers with 10+ labels (trust is the expected share of a labeler's labels that
    # are right: a labeler with one probably-wrong label can sit lower, with an interval that says how little
    # that means)
    n = RunStore(tmp_path / "run").annotations()["worker"].value_counts()
    busy = {w: t for w, t in trust.items() if n.get(w, 0) >= 10}
    assert len(busy) >= 5 and trust["malicious0"] == min(busy.values())
    assert result.metrics["test_acc"] > 0.5


def write_music_like_crowd(tmp_path, n=900, C=10, seed=1):
    """The replayed music-genre pattern of issue #12: honest busy and honest quiet workers of equal accuracy
    (0.8), three near-random workers (10-20 % right, 150 recorded items each), 10 classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n // C)
    X = rng.normal(size=(C, 8))[y] * 2 + rng.normal(0, 0.8, size=(n, 8))
    np.save(tmp_path / "features.npy", X.astype(np.float32))
    rows = []

    def work(name, acc, items):
        for i in items:
            wrong = (y[i] + 1 + rng.integers(C - 1)) % C
            rows.append((int(i), name, int(y[i] if rng.random() < acc else wrong)))

    for w in range(4):
        work(f"busy{w}", 0.8, rng.choice(n, 500, replace=False))
    for w in range(8):
        work(f"quiet{w}", 0.8, rng.choice(n, 120, replace=False))
    for w, (acc, m) in enumerate([(0.1, 150), (0.15, 150), (0.2, 150)]):
        work(f"noise{w}", acc, rng.choice(n, m, replace=False))
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(tmp_path / "answers.csv", index=False)
    pd.DataFrame({"item": np.arange(n), "label": y}).to_csv(tmp_path / "truth.csv", index=False)
    return pd.DataFrame(rows, columns=["item", "worker", "label"])


def test_replayed_near_random_workers_are_routed_out_and_busy_honest_ones_are_not_punished(tmp_path):
    recorded = write_music_like_crowd(tmp_path)
    cfg = load_config(data=tiny_config(**{
        "data": {"name": "generic", "options": {"features": str(tmp_path / "features.npy"),
                                                "annotations": str(tmp_path / "answers.csv"),
                                                "truth": str(tmp_path / "truth.csv")}},
        "holdout.size": 100,
        "annotators": {"kind": "replay", "k": 2,
                       "inject": [{"kind": "malicious", "count": 1, "target": 0, "to": 5, "pr": 0.1}]},
        "query": {"strategy": "random", "initial": 60, "batch": 60},
        "augment": {"enabled": False}, "model": {"epochs": 3, "hidden": [32]},
        "stop": {"budget": 720, "max_iterations": 6}}))
    Campaign.create(cfg, tmp_path / "run", echo=None).run(progress=False)
    store = RunStore(tmp_path / "run")
    metrics, asked = store.metrics(), store.annotations()
    asked = asked[asked["purpose"] == "query"]
    final = metrics[-1]
    noise = [f"noise{w}" for w in range(3)]
    assert "noise0" in final["routed_out"], final["routed_out"]  # the one answering at chance (10 %)
    for m in metrics:  # once routed out, never asked again
        later = asked[(asked["iteration"] > m["iteration"]) & asked["worker"].isin(m["routed_out"])]
        assert later.empty, (m["iteration"], sorted(set(later["worker"])))
    assert all(final["trust"][w] < final["trust_threshold"] for w in noise)
    trust = final["trust"]
    busy = np.mean([trust[f"busy{w}"] for w in range(4)])
    quiet = np.mean([trust[f"quiet{w}"] for w in range(8)])
    assert busy > quiet - 0.05, (busy, quiet)  # answering more must not cost an honest worker trust
    assert not {f"busy{w}" for w in range(4)} & set(final["routed_out"])
    # the injected worker competes on the real workers' terms: it can be asked about as many items as the
    # median replayed worker recorded, so it cannot take a large share of the budget
    median = recorded.groupby("worker").size().median()
    n_mal = int((asked["worker"] == "malicious0").sum())
    assert n_mal <= median
    assert n_mal < 0.1 * len(asked)
