"""A labeler attacks the campaign with their own token and the public Label Studio API (a REAL server, no mocks).

Issue #27: a labeler read the webhook secret (``GET /api/webhooks/``), rang the campaign's webhook with
annotations Label Studio never held, in a colleague's and the admin's name, and wrote an ordinary annotation
with another person's ``completed_by``; and in an image-folder campaign the item key (``airplane/0001.jpg``)
told every labeler the answer. Fixtures ``ls``, ``client``, ``annotators``: tests/conftest.py.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed (pip install -e '.[labelstudio]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[labelstudio]')")

import httpx
from robust_al.annotators.labelstudio import LabelStudioCrowd
from robust_al.labelstudio.client import choice_result
from robust_al.labelstudio.users import annotate
from robust_al.store import RunStore

CLASSES = ["zero", "one", "two", "three"]


def _crowd(ls, tmp_path, title: str, **kw) -> LabelStudioCrowd:
    return LabelStudioCrowd(RunStore(tmp_path / "run"), ls.url, ls.token, CLASSES, title=title, **kw)


def _everyone(_worker: str) -> bool:
    return True


def _as(token: str) -> dict:
    return {"Authorization": f"Token {token}"}


def _tasks(store) -> dict[int, int]:
    t = store.ls_tasks()
    return dict(zip(t["item_id"].astype(int), t["task_id"].astype(int)))


def _answers(store) -> list[tuple[int, str, int]]:
    ann = store.annotations()
    return sorted(zip(ann["task"].astype(int), ann["worker"], ann["label"].astype(int)))


def _post_as(url: str, token: str, task_id: int, label: str, completed_by: int) -> dict:
    """An ordinary Label Studio API write with someone else's ``completed_by`` (accepted by 1.23 Community)."""
    r = httpx.post(f"{url}/api/tasks/{task_id}/annotations/", headers=_as(token),
                   json={"result": choice_result(label), "completed_by": completed_by})
    assert r.status_code == 201, r.text
    return r.json()


def _ring(crowd, payload: dict, headers: dict | None = None) -> int:
    """Post a delivery to the campaign's listener as anyone on the machine could; the HTTP status."""
    return httpx.post(crowd.listener.url, json=payload, headers=headers or {}).status_code


def _payload(project_id: int, task_id: int, item: int, user: int, annotation_id: int, label: str) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": project_id},
            "task": {"id": task_id, "data": {"item_id": item}},
            "annotation": {"id": annotation_id, "completed_by": user, "updated_by": user, "task": task_id,
                           "project": project_id, "updated_at": "2030-01-01T00:00:00Z", "result": choice_result(label)}}


def test_a_labeler_token_reads_no_secret(ls, client, annotators, tmp_path):
    """Nothing a labeler's token can read lets it write into the campaign: the webhook carries no secret."""
    crowd = _crowd(ls, tmp_path, "secret", k=1, wait_seconds=1, poll_seconds=0.5)
    crowd.ask([1], 0, "query", _everyone)
    proj = crowd.project("query", 1)
    token = annotators[0][1]
    listed = httpx.get(f"{ls.url}/api/webhooks/", headers=_as(token)).json()
    (mine,) = [h for h in listed if h["url"] == crowd.listener.url]  # the labeler does see the webhook ...
    one = httpx.get(f"{ls.url}/api/webhooks/{mine['id']}/", headers=_as(token)).json()
    assert one["project"] == proj.id
    for hook in (mine, one):  # ... but there is no secret in it to read
        assert not hook.get("headers"), hook["headers"]
        assert "secret" not in json.dumps(hook).lower()
    crowd.finish()


def test_forged_rings_store_nothing(ls, client, annotators, tmp_path, caplog):
    """Rings from an attacker who read everything a labeler can read: no secret, a wrong one, the headers the
    webhook was registered with, annotation ids the server does not hold, another person's name, a holdout item,
    another project's annotation. Only what the server holds on the campaign's own tasks is ever stored."""
    crowd = _crowd(ls, tmp_path, "forgery", k=1, wait_seconds=1, poll_seconds=0.5)
    crowd.forbidden = {99}  # a secured-holdout item
    assert crowd.ask([30, 31], 0, "query", _everyone) == []
    store, proj = crowd.store, crowd.project("query", 1)
    tasks = _tasks(store)
    admin = client.whoami()["id"]
    (u0, t0), (u1, t1), _ = annotators
    readable = next(h for h in httpx.get(f"{ls.url}/api/webhooks/", headers=_as(t0)).json()
                if h["url"] == crowd.listener.url).get("headers") or {}

    # an annotation of the attacker's own on a task of another project, and a task with a holdout item that the
    # attacker imported into the campaign's project with their own token
    other = client.create_project("not the campaign", CLASSES)
    (foreign_task,) = client.import_tasks(other, [{"item_id": 30}])
    foreign = annotate(ls.url, t0, foreign_task, CLASSES[1])
    r = httpx.post(f"{ls.url}/api/projects/{proj.id}/import", headers=_as(t0), params={"return_task_ids": "true"},
                   json=[{"data": {"item_id": 99, "key": "x", "text": "x"}}])
    assert r.status_code == 201, r.text
    holdout = annotate(ls.url, t0, int(r.json()["task_ids"][0]), CLASSES[1])

    forged = [
        ({}, _payload(proj.id, tasks[30], 30, u1, 990007, CLASSES[3])),  # no secret, an id the server lacks
        ({"X-Robust-AL-Secret": "guess"}, _payload(proj.id, tasks[30], 30, u1, 990007, CLASSES[3])),  # wrong one
        (readable, _payload(proj.id, tasks[30], 30, u1, 990007, CLASSES[3])),  # the colleague's name, made up id
        (readable, _payload(proj.id, tasks[31], 31, admin, 990008, CLASSES[3])),  # the admin's name
        (readable, _payload(proj.id, tasks[30], 99, u0, holdout["id"], CLASSES[1])),  # a holdout item
        (readable, _payload(proj.id, tasks[30], 30, u0, foreign["id"], CLASSES[1])),  # another project's
    ]
    for headers, payload in forged:
        assert _ring(crowd, payload, headers) in (200, 403)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            crowd.drain_webhooks()
            time.sleep(0.1)
        crowd.poll_answers(proj, tasks, 0, "query")  # polling never adopts any of it either
    assert store.annotations().empty, _answers(store)

    # the real person's answer still counts, under the real person's name, whatever a ring claims about it
    real = annotate(ls.url, t1, tasks[30], CLASSES[2])
    assert _ring(crowd, _payload(proj.id, tasks[30], 30, admin, real["id"], CLASSES[3]), readable) == 200
    crowd.drain_webhooks()
    assert _answers(store) == [(30, f"ls{u1}", 2)]
    # a forged deletion cancels nothing; nor does a real one: any member can delete anyone's annotation and the
    # server does not record who did (the attacker's own token deletes the colleague's answer here)
    deletion = {"action": "ANNOTATIONS_DELETED", "project": {"id": proj.id}, "annotations": [{"id": real["id"]}]}
    assert _ring(crowd, deletion, readable) == 200
    crowd.drain_webhooks()
    assert _answers(store) == [(30, f"ls{u1}", 2)]
    r = httpx.delete(f"{ls.url}/api/annotations/{real['id']}/", headers=_as(t0))
    assert r.status_code == 204  # Label Studio lets a labeler delete a colleague's annotation
    crowd.drain_webhooks()
    assert _answers(store) == [(30, f"ls{u1}", 2)]
    crowd.finish()
    assert _answers(store) == [(30, f"ls{u1}", 2)]


def test_a_flood_of_rings_does_not_hammer_the_server(ls, client, annotators, tmp_path, monkeypatch):
    crowd = _crowd(ls, tmp_path, "flood", k=1, wait_seconds=1, poll_seconds=0.5, reads_per_second=20)
    crowd.ask([40], 0, "query", _everyone)
    reads = []
    real = crowd.client.annotation
    monkeypatch.setattr(crowd.client, "annotation", lambda aid: reads.append(aid) or real(aid))
    with httpx.Client() as h:
        for i in range(3000):  # each id is a distinct ring; every id also rung twice
            h.post(crowd.listener.url,
                   json={"action": "ANNOTATION_CREATED", "annotation": {"id": 5_000_000 + i % 1500}})
    assert len(crowd.listener.pending) == crowd.listener.max_pending and crowd.listener.overflowed
    crowd.drain_webhooks()
    assert 0 < len(reads) <= 40  # one drain reads back at most a burst, however many rang
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        crowd.drain_webhooks()
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    assert len(reads) <= 40 + 20 * elapsed + 1, len(reads)  # burst + rate
    print(f"flood: {len(reads)} read-backs in {elapsed:.2f} s")
    assert len(set(reads)) == len(reads)  # a repeated id is one read-back
    assert crowd._flooded  # the ask loop polls once instead
    assert crowd.store.annotations().empty
    crowd.finish()


def test_tasks_an_attacker_imports_or_edits_are_never_adopted_or_trusted(ls, client, annotators, tmp_path, caplog):
    """A labeler imports, into the campaign's project, a task for an item the campaign will ask about next, with
    an annotation in a colleague's name (an import records no writer), and one whose item id does not parse;
    then edits the data of a task of the campaign's. None of it is adopted or stored, nothing crashes, and the
    colleague's honest answer on the edited task still arrives by polling."""
    crowd = _crowd(ls, tmp_path, "imports", k=2, wait_seconds=1, poll_seconds=0.5)
    assert crowd.ask([40], 0, "query", _everyone) == []
    store, proj = crowd.store, crowd.project("query", 2)
    (ua, ta), (ub, tb), _ = annotators
    planted = [{"data": {"item_id": 41, "key": "x", "text": "planted"},
                "annotations": [{"result": choice_result(CLASSES[3]), "completed_by": ub}]},
               {"data": {"item_id": "x", "key": "x", "text": "x"}}]
    r = httpx.post(f"{ls.url}/api/projects/{proj.id}/import", headers=_as(ta), params={"return_task_ids": "true"},
                   json=planted)
    assert r.status_code == 201, r.text
    planted_ids = {int(t) for t in r.json()["task_ids"]}
    with caplog.at_level(logging.WARNING):
        crowd.wait_seconds = 1.0
        assert crowd.ask([41], 1, "query", _everyone) == []  # the planted task is not adopted, nothing crashes
        tasks = _tasks(store)
        assert tasks[41] not in planted_ids
        # the attacker edits the data of the campaign's own task 40 after answering it; B answers it honestly
        annotate(ls.url, ta, tasks[40], CLASSES[1])
        r = httpx.patch(f"{ls.url}/api/tasks/{tasks[40]}/", headers=_as(ta), json={"data": {"text": "no item id"}})
        assert r.status_code == 200, r.text
        annotate(ls.url, tb, tasks[40], CLASSES[2])
        crowd.listener.stop()  # polling alone must still read the task's answers
        crowd.listener = None
        crowd.poll_answers(proj, {40: tasks[40]}, 0, "query")
    assert _answers(store) == [(40, f"ls{ua}", 1), (40, f"ls{ub}", 2)]
    crowd.finish()


def test_a_write_in_anothers_name_is_nobodys_answer_and_flags_its_writer(ls, client, annotators, tmp_path, caplog):
    """Labeler A writes with completed_by = B (through the doorbell, and through polling); A edits B's answer.
    Evidence against A (flagged), nobody's answer; B's stored answers never change; said once per annotation."""
    from robust_al.report.text import trust_table, trust_text

    crowd = _crowd(ls, tmp_path, "impersonation", k=1, wait_seconds=1, poll_seconds=0.5)
    assert crowd.ask([50, 51, 52, 53], 0, "query", _everyone) == []
    store, proj = crowd.store, crowd.project("query", 1)
    tasks = _tasks(store)
    (ua, ta), (ub, tb), _ = annotators
    honest = annotate(ls.url, tb, tasks[50], CLASSES[0])  # B's own answer
    crowd.drain_webhooks()
    assert _answers(store) == [(50, f"ls{ub}", 0)]

    with caplog.at_level(logging.WARNING):
        forged = _post_as(ls.url, ta, tasks[51], CLASSES[3], completed_by=ub)  # rings the doorbell
        crowd.drain_webhooks()
        held = client.get(f"/api/annotations/{forged['id']}/")
        assert (held["completed_by"], held["updated_by"]) == (ub, ua)  # what Label Studio records
        # A edits B's honest answer: the server keeps completed_by = B, updated_by = A
        r = httpx.patch(f"{ls.url}/api/annotations/{honest['id']}/", headers=_as(ta),
                        json={"result": choice_result(CLASSES[3])})
        r.raise_for_status()
        crowd.drain_webhooks()
        # one more in B's name while nothing listens: the poll (full JSON export, which carries updated_by)
        crowd.listener.stop()
        crowd.listener = None
        late = _post_as(ls.url, ta, tasks[52], CLASSES[3], completed_by=ub)
        for _ in range(5):  # every poll sees them again
            crowd.poll_answers(proj, tasks, 0, "query")
        crowd.sync()
    # a write in another's name is nobody's answer: B keeps exactly B's own, A gains no vote by it
    assert _answers(store) == [(50, f"ls{ub}", 0)]
    flags = store.flags()
    assert set(flags["worker"]) == {f"ls{ua}"} and len(flags) == 3
    assert all(r.startswith("impersonation") and f"ls{ub}" in r for r in flags["reason"])
    for aid in (forged["id"], honest["id"], late["id"]):  # said once per annotation, not at every poll
        assert sum(bool(re.search(rf"\bannotation {aid}\b", r.getMessage())) for r in caplog.records) == 1, aid
    table = trust_table(store).set_index("worker")
    assert table.loc[f"ls{ua}", "flags"] == 3 and table.loc[f"ls{ub}", "flags"] == 0
    assert table.loc[f"ls{ub}", "labels"] == 1 and table.loc[f"ls{ua}", "labels"] == 0
    line = next(x for x in trust_text(tmp_path / "run").splitlines() if x.startswith(f"ls{ua} "))
    assert "yes" in line
    crowd.finish()


def test_a_genuine_answer_arrives_by_the_doorbell_quickly(ls, client, annotators, tmp_path):
    """Polling off (one poll at the start of the batch): the answer can only come by the doorbell."""
    crowd = _crowd(ls, tmp_path, "latency", k=1, wait_seconds=30, poll_seconds=3600)
    proj = crowd.project("query", 1)
    tasks = crowd.tasks_for(proj, [60], 0, "query")
    got: dict = {}
    thread = threading.Thread(target=lambda: got.update(a=crowd.ask([60], 0, "query", _everyone)))
    thread.start()
    time.sleep(1.0)  # the batch's first (and only) poll is done
    uid, token = annotators[2]
    t0 = time.monotonic()
    annotate(ls.url, token, tasks[60], CLASSES[1])
    thread.join(30)
    latency = time.monotonic() - t0
    print(f"doorbell latency: {latency:.3f} s")
    assert [(a.item_id, a.worker, a.label) for a in got["a"]] == [(60, f"ls{uid}", 1)]
    assert latency < 3.0
    crowd.finish()


def test_the_webhook_is_gone_after_finish(ls, client, annotators, tmp_path):
    crowd = _crowd(ls, tmp_path, "cleanup", k=1, wait_seconds=1, poll_seconds=0.5)
    crowd.ask([70], 0, "query", _everyone)
    crowd.ask([71], 0, "reexam", _everyone, n_per_item=2)
    url = crowd.listener.url
    pids = sorted(int(p) for p in crowd.store.get_meta("ls_projects").values())
    assert len(pids) == 2 and all(any(h["url"] == url for h in client.get("/api/webhooks/", project=p))
                                  for p in pids)
    crowd.finish()
    assert not any(h["url"] == url for h in client.get("/api/webhooks/"))
    assert crowd.store.get_meta("ls_webhooks") == {}


def _folder_pool(root=None, n_per_class: int = 3, classes=("airplane", "automobile")):
    """An image-folder-like pool: keys name the class folder (``airplane/0001.png``); with ``root``, real PNGs
    there (else bare features)."""
    from robust_al.data.pool import Pool

    keys = [f"{c}/{i:04d}.png" for c in classes for i in range(n_per_class)]
    n = len(keys)
    media = None
    if root is not None:
        from PIL import Image

        for k in keys:
            (root / k).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (120, 30, 200)).save(root / k)
        media = np.array([str((root / k).resolve()) for k in keys], dtype=object)
    return Pool(np.arange(n), np.random.default_rng(0).random((n, 8)),
                np.repeat(np.arange(len(classes)), n_per_class), len(classes), list(classes),
                keys=np.array(keys, dtype=object), media=media, media_kind="image" if root is not None else None,
                media_root=None if root is None else root.resolve())


@pytest.mark.parametrize("media", ["bare", "data-url", "local-files"])
def test_no_task_tells_the_answer(ls, client, annotators, tmp_path, media):
    """No imported task's data carries a class name or the item key (an image's URL included), read back with a
    labeler's token and the admin's; with show_keys the key is shown (so the check can fail)."""
    root = {"bare": None, "data-url": tmp_path / "images",
            "local-files": ls.files_root / f"pool-{tmp_path.name}" / "images"}[media]
    pool = _folder_pool(root)
    kw = {"media": "local-files", "files_root": str(ls.files_root)} if media == "local-files" else {}
    for show in (False, True):
        crowd = LabelStudioCrowd(RunStore(tmp_path / f"run-{show}"), ls.url, ls.token, pool.class_names, k=1,
                                 webhook=False, pool=pool, title=f"answer in the task {media} {show}",
                                 show_keys=show, **kw)
        proj = crowd.project("query", 1)
        tasks = crowd.tasks_for(proj, list(range(len(pool.keys))), 0, "query")
        for token in (annotators[0][1], ls.token):
            for item, tid in tasks.items():
                data = httpx.get(f"{ls.url}/api/tasks/{tid}/", headers=_as(token)).json()["data"]
                shown = json.dumps(data)
                if media == "data-url":
                    assert data["image"].startswith("data:image/png;base64,")
                    shown = json.dumps({k: v for k, v in data.items() if k != "image"})  # base64 is not text
                if media == "local-files":  # the image is served, by an opaque name unless show_keys
                    assert data["image"].startswith("/data/local-files/?d=")
                    got = httpx.get(ls.url + data["image"], headers=_as(token))
                    assert got.status_code == 200 and got.content == Path(pool.media[item]).read_bytes()
                leaks = [s for s in (*pool.class_names, str(pool.keys[item])) if s in shown]
                if show:
                    assert str(pool.keys[item]) in shown
                else:
                    assert leaks == [], (item, data)
                    assert data["key"] == crowd.display_key(item) and len(data["key"]) == 12
        if not show:  # stable per item: a second campaign process on the same store shows the same names
            again = LabelStudioCrowd(crowd.store, ls.url, ls.token, pool.class_names, webhook=False, pool=pool)
            assert [again.display_key(i) for i in tasks] == [crowd.display_key(i) for i in tasks]
            assert len({crowd.display_key(i) for i in tasks}) == len(tasks)
        crowd.close()


def test_settings_and_webhook_a_member_changes_are_put_back(ls, client, annotators, tmp_path, caplog):
    """A labeler's token may PATCH a project's settings and its webhook (Label Studio Community has no roles): a
    swapped alias, fewer answers per task, steering instructions, a silenced or deleted doorbell. The campaign
    puts its created project back at the next poll, says so once, and puts back nothing when nothing changed."""
    crowd = _crowd(ls, tmp_path, "settings", k=2, wait_seconds=1, poll_seconds=0.5)
    assert crowd.ask([60], 0, "query", _everyone) == []  # the first poll records the settings it made
    proj = crowd.project("query", 2)
    keys = ("label_config", "maximum_annotations", "expert_instruction", "show_instruction")
    before = {k: client.project_info(proj.id)[k] for k in keys}
    assert crowd.guard(proj) == []  # nothing changed: nothing put back
    (_, ta), _, _ = annotators
    swapped = before["label_config"].replace(f'value="{CLASSES[0]}"', f'value="{CLASSES[0]}" alias="{CLASSES[3]}"')
    assert swapped != before["label_config"]
    r = httpx.patch(f"{ls.url}/api/projects/{proj.id}/", headers=_as(ta),
                    json={"label_config": swapped, "maximum_annotations": 1, "show_instruction": True,
                          "expert_instruction": "<b>Always pick three</b>"})
    assert r.status_code == 200, r.text  # what a labeler may do
    hook = int(crowd.store.get_meta("ls_webhooks")[str(proj.id)]["id"])
    assert httpx.patch(f"{ls.url}/api/webhooks/{hook}/", headers=_as(ta), json={"is_active": False}).status_code == 200
    with caplog.at_level(logging.WARNING):
        put_back = crowd.guard(proj)
        assert crowd.guard(proj) == []
    assert set(put_back) == {*keys, "webhook"}
    assert {k: client.project_info(proj.id)[k] for k in keys} == before
    assert next(h for h in client.webhooks(proj) if int(h["id"]) == hook)["is_active"]
    assert sum("changed" in r.getMessage() for r in caplog.records) == 1
    # a deleted doorbell is registered again, and rings
    assert httpx.delete(f"{ls.url}/api/webhooks/{hook}/", headers=_as(ta)).status_code == 204
    assert crowd.guard(proj) == ["webhook"]
    again = int(crowd.store.get_meta("ls_webhooks")[str(proj.id)]["id"])
    assert again != hook and any(int(h["id"]) == again and h["is_active"] for h in client.webhooks(proj))
    crowd.finish()
