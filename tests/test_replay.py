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
    cfg = load_config("configs/labelme.yaml", ["stop.budget=400", "model.epochs=15"])
    result = Campaign.create(cfg, tmp_path / "run", echo=None).run(progress=False)
    trust = result.metrics["trust"]
    assert trust["malicious0"] <= sorted(trust.values())[2]  # among the three least trusted of 60
    assert result.metrics["test_acc"] > 0.5
