"""Paid answers survive a Label Studio restart and the end of a campaign (a real server, no mocks).

Two ways answers went missing (CI saw five annotations in Label Studio that never reached the store):
an import whose response was lost in a server restart was imported again, so people answered two copies of
each task and the second copy's answers were repeats; and answers that arrived after a batch closed (or to the
other project while one waited) were dropped. Fixtures ``ls``, ``client``, ``annotators``: tests/conftest.py.
"""
from __future__ import annotations

import time

import pytest

pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed (pip install -e '.[labelstudio]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[labelstudio]')")

import httpx
from robust_al.annotators.labelstudio import LabelStudioCrowd
from robust_al.labelstudio.users import annotate
from robust_al.store import RunStore

CLASSES = ["zero", "one", "two", "three"]


def _crowd(ls, tmp_path, title: str, **kw) -> LabelStudioCrowd:
    return LabelStudioCrowd(RunStore(tmp_path / "run"), ls.url, ls.token, CLASSES, title=title, **kw)


def _trust(_worker: str) -> bool:  # everyone may be asked
    return True


def test_an_import_whose_response_was_lost_is_adopted_not_repeated(ls, client, tmp_path, monkeypatch):
    crowd = _crowd(ls, tmp_path, "lost import", k=2)
    proj = crowd.project("query", 2)
    real_import = crowd.client.import_tasks
    calls = []

    def import_then_disconnect(*a, **kw):  # the server stores the tasks, then dies before it answers
        calls.append(real_import(*a, **kw))
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return calls[-1]

    monkeypatch.setattr(crowd.client, "import_tasks", import_then_disconnect)
    tasks = crowd.retry_until(lambda: crowd.tasks_for(proj, [10, 11, 12], 0, "query"), time.time() + 30)
    assert len(calls) == 1 and tasks == dict(zip([10, 11, 12], calls[0]))
    # a later batch imports only what is new, and the project holds each item once
    more = crowd.tasks_for(proj, [12, 13], 1, "query")
    assert len(calls) == 2 and more[12] == tasks[12]
    held = client.export(proj, export_type="JSON", all_tasks=True)
    item_of = dict(zip(crowd.store.ls_tasks()["task_id"], crowd.store.ls_tasks()["item_id"]))
    assert sorted(item_of[t["id"]] for t in held) == [10, 11, 12, 13]
    crowd.close()


def test_answers_after_a_batch_closed_are_pulled_and_counted_late(ls, client, annotators, tmp_path):
    crowd = _crowd(ls, tmp_path, "late answers", k=1, wait_seconds=2, poll_seconds=0.5)
    (u0, t0), (u1, t1), (u2, t2) = annotators
    assert crowd.ask([20, 21], 0, "query", _trust) == []  # nobody answers in time: the batch closes empty
    store = crowd.store
    tasks = dict(zip(store.ls_tasks()["item_id"], store.ls_tasks()["task_id"]))
    annotate(ls.url, t0, int(tasks[20]), CLASSES[2])  # after the batch closed (delivered by webhook)
    # the campaign now waits on its re-examination project: the query project's answer is stored meanwhile
    assert crowd.ask([22], 0, "reexam", _trust, n_per_item=1) == []
    assert list(store.annotations()["task"]) == [20]
    # answers given when nothing listens any more are pulled at the end of the campaign
    crowd.close()
    annotate(ls.url, t1, int(tasks[21]), CLASSES[3])
    annotate(ls.url, t2, int(tasks[20]), CLASSES[1])
    crowd.finish()
    ann = store.annotations()
    got = sorted(zip(ann["task"], ann["worker"], ann["label"], ann["iteration"], ann["purpose"]))
    assert got == [(20, f"ls{u0}", 2, 0, "query"), (20, f"ls{u2}", 1, 0, "query"), (21, f"ls{u1}", 3, 0, "query")]
    assert store.late_answers() == 3
    # nothing Label Studio holds for the run is missing from the store, and a second pull adds nothing
    held = {f"{pid}:{a.annotation_id}" for pid in store.get_meta("ls_projects").values()
            for a in client.export_annotations(int(pid))}
    assert held == set(ann["external_id"]) and crowd.sync() == 0


# forged webhook deliveries and impersonation: tests/test_labelstudio_security.py


def test_a_task_a_member_deleted_never_names_the_item_whose_task_took_its_id(ls, client, tmp_path):
    """Label Studio (SQLite) gives a deleted task's id to the next task imported. A member deletes the campaign's
    newest task; the next batch's task takes its id: the store must map that id to the new item only, or the
    answers to the new task would be stored on the old item."""
    crowd = _crowd(ls, tmp_path, "deleted task", k=1, webhook=False)
    proj = crowd.project("query", 1)
    first = crowd.tasks_for(proj, [30, 31], 0, "query")
    client.http.delete(f"/api/tasks/{first[31]}/").raise_for_status()  # any member may
    second = crowd.tasks_for(proj, [32], 1, "query")
    assert second[32] == first[31]  # the id was given again
    t = crowd.store.ls_tasks(proj.id)
    assert dict(zip(t["task_id"].astype(int), t["item_id"].astype(int)))[second[32]] == 32
    assert 31 not in set(t["item_id"].astype(int))  # asked again when chosen: a new task
    crowd.close()
