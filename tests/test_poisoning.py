"""Q3: clean-label poisons injected into the pool, caught by the secured check; detection bookkeeping."""
from __future__ import annotations

import numpy as np
from robust_al.campaign import QUARANTINED, Campaign
from robust_al.data.pool import Dataset, Pool


def blobs(seed: int = 0) -> Dataset:
    """Two well-separated Gaussian classes in 10-d, inputs in [0, 1]: a setting where feature collision
    moves poisons right into the target class."""
    rng = np.random.default_rng(seed)

    def draw(n):
        y = np.arange(n) % 2
        X = 0.5 + 0.12 * rng.standard_normal((n, 10)) + np.where(y[:, None] == 1, 0.06, -0.06)
        return np.clip(X, 0, 1).astype(np.float32), y

    X, y = draw(600)
    Xt, yt = draw(200)
    return Dataset("blobs", Pool(np.arange(600), X, y, 2), Pool(np.arange(600, 800), Xt, yt, 2))


def poisoned_config(tiny, **over):
    base = {"data.name": "generic", "holdout.size": 100, "query.strategy": "random", "query.initial": 40,
            "query.batch": 150, "annotators.k": 1, "augment.enabled": False, "model.network": "frozen",
            "annotators.labelers": [{"kind": "benign", "count": 11, "pr": 0.0}],
            "aggregation.model_as_worker": False, "trust.epsilon": 0.02, "trust.significance": None,
            "poison.enabled": True, "poison.target_class": 1, "poison.base_class": 0, "poison.n_base": 60,
            "poison.watermarks": [0.3], "poison.learning_rate": 0.05, "poison.similarity_coeff": 0.01,
            "poison.verify": False, "poison.max_targets": 1, "stop.budget": 1500, "stop.max_iterations": 3}
    base.update(over)
    return tiny(**base)


def test_injected_poisons_are_caught_by_the_secured_check(tmp_path, tiny):
    cfg = poisoned_config(tiny)
    c = Campaign.create(cfg, tmp_path / "run", dataset=blobs(), echo=None)
    c.run(progress=False)
    meta = c.store.get_meta("poison")
    assert meta["crafted"] and len(meta["item_ids"]) == 60
    poisons = set(meta["item_ids"])
    assert not poisons & set(c.ids_with("holdout").tolist())  # S stays clean
    quarantined = {i for i, s in c.status.items() if s == QUARANTINED}
    assert quarantined, "the secured check quarantined nothing"
    caught = [m for m in c.store.metrics() if m.get("quarantined")]
    assert caught and all(m["quarantined_secured_acc"] > m["rejected_secured_acc"] for m in caught)
    # within the batch that failed the check: most of its poisons are caught, and the catch is mostly poison
    it = caught[0]["iteration"]
    batch = c.store.items_with_status(["labeled"], iteration=it)
    in_batch = batch & poisons
    recall = len(quarantined & in_batch) / len(in_batch)
    precision = len(quarantined & poisons) / len(quarantined)
    assert recall >= 0.5 and precision >= 3 * len(in_batch) / len(batch), (recall, precision)
    # every answer about a quarantined item is still stored (nothing collected is lost)
    assert set(c.store.annotations(sorted(quarantined))["task"]) == quarantined
    # the detection report counts the same catch, and ART's defences each name a set of labeled items
    from robust_al.evaluate.poisoning import detection_report

    entered = {i for i in poisons if c.status.get(i) in ("labeled", "quarantined", "discarded")}
    rep = detection_report(Campaign.resume(tmp_path / "run", dataset=blobs(), echo=None))
    sc = rep["secured check"]
    assert sc["flagged"] == len(quarantined) and sc["poisons"] == len(entered)
    assert sc["precision"] == len(quarantined & poisons) / len(quarantined)
    assert {"activation clustering", "spectral signature", "provenance (labelers as sources)"} <= set(rep)
    for name in ("activation clustering", "spectral signature"):
        assert rep[name]["poisons"] == len(poisons & set(c.ids_with("labeled").tolist()))


def test_a_resumed_poisoned_campaign_keeps_its_pool(tmp_path, tiny):
    cfg = poisoned_config(tiny, **{"stop.max_iterations": 2})
    c = Campaign.create(cfg, tmp_path / "run", dataset=blobs(), echo=None)
    c.run(progress=False)
    again = Campaign.resume(tmp_path / "run", dataset=blobs(), echo=None)
    ids = c.store.get_meta("poison")["item_ids"]
    np.testing.assert_array_equal(again.pool.X[again.pool.positions(ids)], c.pool.X[c.pool.positions(ids)])


def test_the_provenance_filter_removes_the_same_rows_as_arts():
    from art.defences.detector.poison import ProvenanceDefense

    from robust_al.evaluate.poisoning import provenance_defense

    rng = np.random.default_rng(0)
    data = rng.normal(size=(60, 7)).astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[rng.integers(2, size=60)]
    segment = data[rng.choice(60, size=15, replace=False)]
    ours = provenance_defense().filter_input(data, labels, segment)
    arts = ProvenanceDefense.filter_input(data, labels, segment)
    assert len(ours[0]) == 45
    for a, b in zip(ours, arts):
        np.testing.assert_array_equal(a, b)
