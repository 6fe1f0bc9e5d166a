"""The next batch queued ahead (``annotators.lookahead: 1``) on a real server: people label it
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
        "name": name, "annotators": {"kind": "labelstudio", "k": 1, "lookahead": 1, "labelstudio": {
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
    assert len(store.batch(1, "ahead")) == 60 and result.metrics["ahead_items"] == 60
    tasks = store.ls_tasks()
    ahead = set(tasks.loc[tasks["iteration"] == 1, "task_id"].astype(int))
    back = set(store.get_meta("ls_taken_back")[str(int(tasks["project"].iloc[0]))])
    with LabelStudioClient(ls.url, ls.token) as client:
        proj = client.get_project(int(tasks["project"].iloc[0]))
        held = {int(t["id"]): t for t in client.export(proj, export_type="JSON", all_tasks=True)}
        # nothing is deleted (Label Studio would give a deleted task's id to the next task imported); what nobody
        # answered is closed (it takes no more answers), an answered task stays open, and its answers are stored
        assert len(ahead) == 60 and ahead <= set(held) and back <= ahead and len(back) > 0
        for tid in ahead:
            info = client.http.get(f"/api/tasks/{tid}/", params={"fields": "task_only"}).json()
            assert (info["overlap"] == 0) == (tid in back)
        # a person who had a task open when it was closed can still submit: the answer lands on it, and is stored
        # under that task's item (below), as every answer the server holds
        item_of = dict(zip(tasks["task_id"].astype(int), tasks["item_id"].astype(int)))
        ann = store.annotations().set_index("external_id")
        for tid, t in held.items():
            for a in t["annotations"]:
                assert ann.loc[f"{proj.id}:{a['id']}", "task"] == item_of[tid]
        assert result.metrics["withdrawn"] == len(back)
        stored = set(store.annotations()["external_id"].dropna())
        assert {f"{proj.id}:{a['id']}" for t in held.values() for a in t["annotations"]} <= stored
        # people read that it stopped (the project's description, on the projects page)
        assert client.project_info(proj.id)["description"] == (
            "robust-al: the campaign is not running: no new batch comes until it runs again")
        # nobody is served a task the campaign will never use (k = 1: an answered task is complete)
        r = httpx.get(f"{ls.url}/api/projects/{proj.id}/next", headers={"Authorization": f"Token {users.users[0][2]}"})
        assert r.status_code == 404, r.text


def test_a_campaign_run_to_its_budget_uses_every_batch_it_put_ahead(ls, tmp_path, monkeypatch):
    camp, _, result = _campaign(ls, tmp_path, monkeypatch, "ahead-budget", pace=0.02,
                                    **{"query.initial": 20, "query.batch": 20, "stop.budget": 80})
    assert result.stop.startswith("label budget spent")
    store = camp.store
    metrics = store.metrics()
    # each iteration's batch was queued during the one before; the last queued nothing more. Answers posted to a
    # task after it was taken back (someone had it open) are paid: the budget counts them, and their items are
    # asked to the end in the next batch
    ahead = [m["ahead_items"] for m in metrics]
    assert ahead[0] == 20 and ahead[-1] == 0 and "withdrawn" not in metrics[-1]
    assert metrics[-1]["labels_in_model"] == metrics[-1]["labels_used"] <= 80 + 3
    asked = store.ls_tasks()
    assert store.late_answers() == 0  # every answer reached the batch it was asked for
    # each batch ahead was settled: what people answered kept, the rest taken back; the server holds no task the
    # campaign forgot, and every answer it holds is stored, on the item its task shows
    with LabelStudioClient(ls.url, ls.token) as client:
        pid = int(asked["project"].iloc[0])
        held = client.export(pid, export_type="JSON", all_tasks=True)
        item_of = dict(zip(asked["task_id"].astype(int), asked["item_id"].astype(int)))
        assert {int(t["id"]) for t in held} == set(item_of)
        ann = store.annotations().set_index("external_id")
        for t in held:
            for a in t["annotations"]:
                assert ann.loc[f"{pid}:{a['id']}", "task"] == item_of[int(t["id"])]


def test_labelers_read_where_the_campaign_is(ls, tmp_path, monkeypatch):
    """The project's description follows the campaign: a batch added, a batch answered with the next one
    already queued (lookahead) or the seconds until it comes (the synchronous loop, measured), stopped."""
    from robust_al.labelstudio.client import LabelStudioClient

    seen: list[str] = []
    real = LabelStudioClient.__init__

    def spy(self, *a, **kw):  # every description the campaign writes, in order
        real(self, *a, **kw)
        patch = self.http.patch

        def recorded(url, *pa, **pkw):
            if "description" in (pkw.get("json") or {}):
                seen.append(pkw["json"]["description"])
            return patch(url, *pa, **pkw)
        self.http.patch = recorded

    monkeypatch.setattr(LabelStudioClient, "__init__", spy)
    _campaign(ls, tmp_path, monkeypatch, "tell-sync", pace=0.02,
              **{"query.initial": 10, "query.batch": 10, "stop.budget": 30, "annotators.lookahead": 0})
    assert seen[:3] == ["robust-al: batch 0 added",
                        "robust-al: batch 0 answered; the model trains: the next batch comes after it",
                        "robust-al: batch 1 added"]
    assert seen[3].startswith("robust-al: batch 1 answered; the model trains: next batch in ~")
    assert seen[-1] == "robust-al: the campaign is not running: no new batch comes until it runs again"
    seen.clear()
    _campaign(ls, tmp_path, monkeypatch, "tell-ahead", pace=0.02,
              **{"query.initial": 10, "query.batch": 10, "stop.budget": 30})
    assert seen[:3] == ["robust-al: batch 0 added", "robust-al: batch 1 added",
                        "robust-al: batch 0 answered; batch 1 is queued: keep labeling"]
