"""The next batch queued ahead (``annotators.lookahead``, Label Studio's default) on a real server: people label it
while the model trains; a campaign that reaches its target takes back what nobody needs any more, without losing
an answer given; one that runs to its budget uses every batch it put ahead."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed (pip install -e '.[labelstudio]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[labelstudio]')")

import httpx
from conftest import tiny_config
from robust_al.annotators.simulated import BenignAnnotator, truth_map
from robust_al.campaign import Campaign
from robust_al.config import load_config
from robust_al.data.loaders import load_digits_dataset
from robust_al.labelstudio.client import LabelStudioClient
from robust_al.labelstudio.simulate import SimulatedUsers

pytestmark = pytest.mark.slow  # whole campaigns against the server


def _campaign(ls, tmp_path, monkeypatch, name: str, pace: float, **over):
    ds = load_digits_dataset()
    truth = truth_map(ds.train.ids, ds.train.y)
    people = [BenignAnnotator(f"{name}-{i}", truth, 10, pr=0.0, seed=0) for i in range(3)]
    run_dir = tmp_path / name
    users = SimulatedUsers(ls.url, ls.token, people, ds.train.class_names, delay=pace,
                           title_prefix=f"robust-al campaign {name}", run_dir=run_dir)
    monkeypatch.setenv("LS_TEST_TOKEN", ls.token)
    cfg = load_config(data=tiny_config(**{
        "name": name, "annotators": {"kind": "labelstudio", "k": 1, "labelstudio": {
            "url": ls.url, "token_env": "LS_TEST_TOKEN", "wait_seconds": 120, "poll_seconds": 0.5}},
        "augment.attacks": [], "model.epochs": 5, **over}))
    camp = Campaign.create(cfg, run_dir, dataset=ds, echo=None)
    users.start()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(r=camp.run(progress=False)))
    thread.start()
    thread.join(timeout=600)
    users.stop()
    camp.crowd.close()
    assert not thread.is_alive(), "the campaign did not finish"
    return camp, users, result["r"]


def test_a_target_reached_takes_back_the_batch_ahead_and_keeps_every_answer(ls, tmp_path, monkeypatch):
    # S accuracy 0.01 is reached at once: the campaign stops after iteration 0, with 60 items queued ahead, some
    # answered while F_0 trained
    camp, users, result = _campaign(ls, tmp_path, monkeypatch, "ahead-stop", pace=0.15,
                                    **{"query.initial": 10, "query.batch": 60, "stop.target_accuracy": 0.01})
    assert result.iteration == 0 and result.stop.startswith("target accuracy reached")
    store = camp.store
    tasks = store.ls_tasks()
    ahead = tasks[tasks["iteration"] == 1]
    assert len(ahead) == 60 and result.metrics["ahead_items"] == 60
    with LabelStudioClient(ls.url, ls.token) as client:
        proj = client.get_project(int(ahead["project"].iloc[0]))
        held = client.export(proj, export_type="JSON", all_tasks=True)
        answered = {int(t["id"]) for t in held if t["annotations"]}
        left = {int(t["id"]) for t in held} & set(ahead["task_id"].astype(int))
        # what nobody answered is gone; an answered task stays, and its answer is stored
        assert left == answered & set(ahead["task_id"].astype(int))
        assert result.metrics["withdrawn"] == 60 - len(left) > 0
        stored = set(store.annotations()["external_id"].dropna())
        assert {f"{proj.id}:{a['id']}" for t in held for a in t["annotations"]} <= stored
        # nobody is served a task the campaign will never use (k = 1: an answered task is complete)
        r = httpx.get(f"{ls.url}/api/projects/{proj.id}/next", headers={"Authorization": f"Token {users.users[0][2]}"})
        assert r.status_code == 404, r.text


def test_a_campaign_run_to_its_budget_uses_every_batch_it_put_ahead(ls, tmp_path, monkeypatch):
    camp, _, result = _campaign(ls, tmp_path, monkeypatch, "ahead-budget", pace=0.02,
                                    **{"query.initial": 20, "query.batch": 20, "stop.budget": 80})
    assert result.stop.startswith("label budget spent")
    store = camp.store
    metrics = store.metrics()
    # each iteration's batch was queued during the one before; the last queued nothing more
    assert [m["ahead_items"] for m in metrics] == [20, 20, 20, 0]
    assert "withdrawn" not in metrics[-1] and metrics[-1]["labels_in_model"] == metrics[-1]["labels_used"] == 80
    asked = store.ls_tasks()
    assert sorted(asked.groupby("iteration").size().tolist()) == [20, 20, 20, 20]
    assert store.late_answers() == 0  # every answer reached the batch it was asked for
