"""The secured set stays secret, in created and attached projects (issue #27): a real labeler in a real browser
(headless chromium logged in as a labeler, tests/cdp.py) on the session's Label Studio server presses the button
the README names, submits an answer each time, and is served only robust-al's queue, in priority order, never a
task of the secured holdout; the holdout's trusted labels come from a file, never from the project.

Each browser check is also run where it must say no (the queue tab ordered by prediction score, as before; the
"Label All Tasks" button of an attached project), so that a check that cannot fail does not pass for one that
holds. Skipped like tests/test_browser.py; screenshots go to $ROBUST_AL_ARTIFACTS when set.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed (pip install -e '.[labelstudio]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[labelstudio]')")

import httpx
from robust_al.labelstudio.client import choice_result, label_config

CLASSES = ["neg", "pos"]
QPOS = [17, 3, 25, 9, 12, 21, 6, 28, 14, 5]  # the queue, highest priority first (1-based task positions)
HOLD = [2, 8, 11, 15, 19, 22, 30, 33, 36, 39]  # the holdout: interleaved with the queue, so a wrong stream meets it
PRESSES = 20
READY = ("(() => [...document.querySelectorAll('button')]"
         ".some(x => /^Label (All|\\d+) Tasks?$/.test(x.innerText.trim())))()")
CLICK_TEXT = """((txt) => { const els = [...document.querySelectorAll('button, [role=menuitem], li, div, span')]
  .filter(e => e.children.length <= 2 && (e.innerText || '').trim() === txt && e.offsetParent !== null);
  if (!els.length) return false; els[els.length - 1].click(); return true })"""


# -- fixtures: chromium and the server as in tests/test_browser.py -------------------------------------------
@pytest.fixture(scope="module")
def chromium():
    pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed")
    from test_browser import REQUIRED

    try:
        import websocket  # noqa: F401
    except ImportError:
        if REQUIRED:
            pytest.fail("ROBUST_AL_BROWSER_REQUIRED=1 but websocket-client is not installed")
        pytest.skip("websocket-client is not installed")
    from cdp import find_chromium

    exe = find_chromium()
    if exe is None:
        if REQUIRED:
            pytest.fail("ROBUST_AL_BROWSER_REQUIRED=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH")
    return exe


class NetBrowser:
    """tests/cdp.py's Browser with the DevTools Network domain recorded: which task each next-task call served."""

    def __init__(self, exe: str, profile: Path):
        from cdp import Browser, CDPError

        events: list[dict] = []
        self.b, self.events, self.CDPError = Browser(exe, profile, width=1400, height=900), events, CDPError
        self.b.on_event = lambda msg: events.append(msg) if str(msg["method"]).startswith("Network.") else None
        self.b.send("Network.enable")

    def served(self, i: int, timeout: float = 120) -> int | None:
        """The task served by next-task call number i (0-based) of this stream; None: 'no more tasks'."""
        end = time.time() + timeout
        while time.time() < end:
            self.b.evaluate("1")  # pumps the DevTools messages
            calls = [e["params"]["requestId"] for e in self.events if e["method"] == "Network.requestWillBeSent"
                     and "next_task" in e["params"]["request"]["url"]]
            if len(calls) > i:
                rid = calls[i]
                if any(e["method"] in ("Network.loadingFinished", "Network.loadingFailed")
                       and e["params"]["requestId"] == rid for e in self.events):
                    status = [e["params"]["response"]["status"] for e in self.events
                              if e["method"] == "Network.responseReceived" and e["params"]["requestId"] == rid]
                    if not status or status[0] != 200:
                        return None
                    body = self.b.send("Network.getResponseBody", requestId=rid).get("body") or "{}"
                    return int(json.loads(body)["id"])
            time.sleep(0.2)
        raise TimeoutError(f"no answer to next-task call {i + 1}")

    def click_text(self, txt: str, timeout: float = 60):
        return self.b.wait_for(f"{CLICK_TEXT}({json.dumps(txt)})", timeout=timeout)

    def close(self):
        self.b.close()


def shot(b: NetBrowser, tmp_path: Path, name: str) -> None:
    path = b.b.screenshot(tmp_path / "screenshots" / f"{name}.png")
    art = os.environ.get("ROBUST_AL_ARTIFACTS")
    if art:
        Path(art).mkdir(parents=True, exist_ok=True)
        (Path(art) / path.name).write_bytes(path.read_bytes())


def label_stream(chromium, server, tmp_path: Path, name: str, data_url: str, button: str, keys: dict[int, str],
                 stop=lambda tid: False) -> list[int | None]:
    """A new labeler logs in, opens ``data_url``, presses ``button`` once ('Label All Tasks' or 'Label Tasks As
    Displayed', the latter from the ▾ beside the first) and then answers and presses Submit, up to PRESSES
    times: the tasks served, in order, ending with None when the server said there is no task left (or at the
    first task ``stop`` says to stop at). ``keys``: task -> the header text its labeling view shows."""
    from robust_al.labelstudio.users import create_annotator

    email, password = f"{name}-{int(time.time() * 1000) % 10**8}@example.com", f"pw-{name}-12345"
    uid, _ = create_annotator(server, email, password)
    b = NetBrowser(chromium, tmp_path / f"profile-{name}")
    served: list[int | None] = []
    try:
        b.b.login(server.url, email, password)
        b.b.navigate(data_url, settle=1.0)
        b.b.wait_stable(READY, timeout=150)
        time.sleep(2)
        shot(b, tmp_path, f"{name}-0-tab")
        b.events.clear()
        if button == "Label Tasks As Displayed":
            b.b.evaluate("document.querySelector('button[aria-label=\"Toggle open\"]').click()")
            time.sleep(1)
            shot(b, tmp_path, f"{name}-0-dropdown")
        b.click_text(button)
        for i in range(PRESSES):
            tid = b.served(i)
            served.append(tid)
            if tid is None:
                time.sleep(3)
                shot(b, tmp_path, f"{name}-end")
                break
            if stop(tid):
                break
            b.b.wait_stable(f"document.body.innerText.includes({json.dumps(keys[tid])}) && "
                            "[...document.querySelectorAll('label')].some(l => l.innerText.trim().startsWith('neg'))",
                            timeout=120, hold=1.0)
            if i == 0:
                shot(b, tmp_path, f"{name}-1-task")
            b.b.evaluate("[...document.querySelectorAll('label')].find(l => l.innerText.trim().startsWith('neg'))"
                         ".click()")
            time.sleep(0.5)
            b.b.wait_for("""(() => { const x = [...document.querySelectorAll('button')].find(
                x => x.innerText.trim() === 'Submit'); if (!x || x.disabled) return false; x.click();
                return true })()""", timeout=30)
    finally:
        b.close()
    # every press was really answered, on the task the server served (no click went to another task)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {server.token}"}, timeout=60) as h:
        mine = sorted(int(t) for t in served if t is not None and any(
            int(a["completed_by"]) == uid for a in h.get(f"/api/tasks/{t}/annotations/").json()))
    answered = [t for t in served if t is not None and not stop(t)]
    assert mine == sorted(answered), (mine, served)
    return served


def only_the_queue_in_order(served: list[int | None], queue: list[int], holdout: list[int]) -> None:
    """What a labeler's stream must be: never a holdout task, only queued tasks, all of them in priority order,
    then nothing more."""
    assert not set(served) & set(holdout), f"holdout task(s) served: {sorted(set(served) & set(holdout))}"
    assert all(t in queue for t in served if t is not None), f"a task outside the queue served: {served}"
    assert served == [*queue, None], f"not the queue in priority order: served {served}, queue {queue}"


# -- an attached project: 40 tasks, a holdout of 10, a queue of 10 -------------------------------------------
def attached_project(server, tmp_path: Path, title: str):
    """A project made by hand (truth nowhere in it), its holdout's trusted labels in a file, and a campaign's
    crowd attached to it that queued QPOS (in that priority order); returns (crowd, proj, queue, holdout, keys)."""
    from robust_al.annotators.labelstudio import LabelStudioCrowd
    from robust_al.labelstudio.project_pool import dataset_from_project
    from robust_al.store import RunStore

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {server.token}"}, timeout=120) as h:
        r = h.post("/api/projects/", json={"title": title, "label_config": label_config(CLASSES, header=True),
                                           "maximum_annotations": 1})
        r.raise_for_status()
        pid = int(r.json()["id"])
        tasks = [{"data": {"text": f"text of item {i}.", "key": f"item-{i}-{title[:3]}"}} for i in range(1, 41)]
        r = h.post(f"/api/projects/{pid}/import", params={"return_task_ids": "true"}, json=tasks)
        r.raise_for_status()
        ids = [int(t) for t in r.json()["task_ids"]]
    queue, holdout = [ids[p - 1] for p in QPOS], [ids[p - 1] for p in HOLD]
    trusted = tmp_path / f"trusted-{pid}.csv"
    trusted.write_text("task,label\n" + "".join(f"{t},{CLASSES[t % 2]}\n" for t in holdout))
    from robust_al.labelstudio.client import LabelStudioClient

    with LabelStudioClient.for_server(server) as c:
        att = dataset_from_project(c, pid, tmp_path / f"media-{pid}", trusted_labels=trusted)
    store = RunStore(tmp_path / f"run-{pid}")
    crowd = LabelStudioCrowd(store, server.url, server.token, CLASSES, k=1, webhook=False, attached=att,
                             pool=att.dataset.train)
    proj = crowd.project("query", 1)
    crowd.tasks_for(proj, queue, 0, "query")
    keys = {t: f"item-{i}-{title[:3]}" for i, t in enumerate(ids, start=1)}
    return crowd, proj, queue, holdout, keys


@pytest.mark.slow  # a browser presses the button 10-20 times
def test_attached_project_serves_only_the_queue_in_priority_order(chromium, ls, tmp_path):
    """"Label Tasks As Displayed" in the "robust-al queue" tab: 20 presses serve the 10 queued tasks in priority
    order, never a holdout task, then "no more tasks"."""
    crowd, proj, queue, holdout, keys = attached_project(ls, tmp_path, "att queue")
    served = label_stream(chromium, ls, tmp_path, "attached-displayed", crowd.data_url(proj),
                          "Label Tasks As Displayed", keys)
    only_the_queue_in_order(served, queue, holdout)


@pytest.mark.slow  # a browser presses the button 10-20 times
def test_the_checks_can_say_no(chromium, ls, tmp_path):
    """The same checks fail where they must: the old queue tab (ordered by prediction score, which Label Studio
    ignores unless the project's model_version names the predictions) serves the queue in task-id order, and
    "Label All Tasks" in an attached project serves holdout tasks."""
    crowd, proj, queue, holdout, keys = attached_project(ls, tmp_path, "old order")
    view = crowd.queue_view(proj)
    with httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {ls.token}"}, timeout=60) as h:
        data = h.get(f"/api/dm/views/{view}/").json()["data"]
        h.patch(f"/api/dm/views/{view}/", json={"project": proj.id, "data": {
            **data, "ordering": ["-tasks:predictions_score"]}}).raise_for_status()
    served = label_stream(chromium, ls, tmp_path, "old-score-order", crowd.data_url(proj),
                          "Label Tasks As Displayed", keys)
    with pytest.raises(AssertionError, match="not the queue in priority order"):
        only_the_queue_in_order(served, queue, holdout)
    assert served == [*sorted(queue), None]  # task-id order

    crowd, proj, queue, holdout, keys = attached_project(ls, tmp_path, "all tasks")
    served = label_stream(chromium, ls, tmp_path, "attached-all", crowd.data_url(proj), "Label All Tasks", keys,
                          stop=lambda t: t in holdout)
    with pytest.raises(AssertionError, match="holdout task"):
        only_the_queue_in_order(served, queue, holdout)
    print("Label All Tasks in an attached project served", served)


@pytest.mark.slow  # a browser presses the button 10-20 times
def test_created_project_label_all_tasks_serves_the_queue_in_order(chromium, ls, tmp_path):
    """A project the campaign made holds only its queries, imported in priority order: "Label All Tasks" serves
    them in that order, then nothing more."""
    from robust_al.annotators.labelstudio import LabelStudioCrowd
    from robust_al.data.pool import Pool
    from robust_al.store import RunStore

    n = 10
    pool = Pool(np.arange(n), np.zeros((n, 4), np.float32), np.array([i % 2 for i in range(n)]), 2, CLASSES,
                keys=np.array([f"review-{i}" for i in range(n)], dtype=object),
                media=np.array([f"text of item {i}." for i in range(n)], dtype=object), media_kind="text")
    store = RunStore(tmp_path / "run")
    crowd = LabelStudioCrowd(store, ls.url, ls.token, CLASSES, k=1, webhook=False, pool=pool,
                             title=f"queue {tmp_path.name}")
    order = [7, 2, 9, 4, 0, 5, 8, 1, 6, 3]  # priority order of the batch
    proj = crowd.project("query", 1)
    tasks = crowd.tasks_for(proj, order, 0, "query")
    queue = [tasks[i] for i in order]
    keys = {tasks[i]: crowd.display_key(i) for i in order}
    served = label_stream(chromium, ls, tmp_path, "created-all", crowd.data_url(proj), "Label All Tasks", keys)
    only_the_queue_in_order(served, queue, [])


# -- the queue tab is put back; trusted labels come from a file ------------------------------------------------
def test_an_edited_queue_tab_is_put_back(ls, tmp_path, annotators, caplog):
    """Any member can edit the shared tab (filters, ordering): the next batch puts it back (and an unedited tab
    is left alone)."""
    from robust_al.annotators.labelstudio import QUEUE_ORDERING, QUEUE_VIEW_TITLE

    crowd, proj, queue, _, _ = attached_project(ls, tmp_path, "tab repair")
    view = crowd.queue_view(proj)
    assert crowd.queue_view(proj) == view and "put back" not in caplog.text
    _, tok = annotators[0]
    with httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {tok}"}, timeout=60) as h:
        h.patch(f"/api/dm/views/{view}/", json={"project": proj.id, "data": {
            "title": QUEUE_VIEW_TITLE, "filters": {"conjunction": "and", "items": []}, "ordering": ["-tasks:id"]}}
                ).raise_for_status()
        crowd.tasks_for(proj, [queue[0]], 1, "query")  # the next batch
        data = h.get(f"/api/dm/views/{view}/").json()["data"]
    assert "put back" in caplog.text and data["ordering"] == QUEUE_ORDERING
    assert [f["value"] for f in data["filters"]["items"]] == [["robust-al-queue"]]
    versions = sorted(p["model_version"] for t in queue for p in crowd.client.predictions(t))
    assert versions == [f"robust-al-queue-00000-{p:05d}" for p in range(len(queue))]  # the text order = priority


def test_truth_field_is_refused_and_trusted_labels_feed_the_holdout(ls, client, tmp_path, monkeypatch):
    from conftest import tiny_config
    from robust_al.campaign import Campaign
    from robust_al.config import ConfigError, load_config
    from robust_al.labelstudio.project_pool import dataset_from_project

    r = client.http.post("/api/projects/", json={"title": "trusted file", "label_config": label_config(CLASSES)})
    r.raise_for_status()
    pid = int(r.json()["id"])
    r = client.http.post(f"/api/projects/{pid}/import", params={"return_task_ids": "true"},
                         json=[{"data": {"text": f"t{i}", "key": f"k{i}", "truth": "neg"}} for i in range(12)])
    r.raise_for_status()
    ids = [int(t) for t in r.json()["task_ids"]]
    monkeypatch.setenv("LS_TEST_TOKEN", ls.token)

    def cfg(**options):
        return load_config(data=tiny_config(**{
            "data": {"name": "labelstudio", "options": options}, "holdout.size": 4, "query.initial": 2,
            "annotators": {"kind": "labelstudio", "k": 1, "labelstudio": {
                "url": ls.url, "token_env": "LS_TEST_TOKEN", "project_id": pid, "webhook": False}}}))

    with pytest.raises(ConfigError) as e:
        Campaign.create(cfg(truth_field="truth"), tmp_path / "refused")
    assert str(e.value) == ("data.options.truth_field: a task data field every project member can read "
                            "(GET /api/tasks/); give the trusted labels in a file: data.options.trusted_labels")
    assert "\n" not in str(e.value) and not (tmp_path / "refused").exists()

    trusted = {ids[1]: "pos", ids[4]: "neg", ids[6]: "pos", ids[9]: "neg"}
    path = tmp_path / "trusted.csv"
    path.write_text("task,label\n" + "".join(f"{t},{c}\n" for t, c in trusted.items()))
    camp = Campaign.create(cfg(trusted_labels=str(path)), tmp_path / "run")
    try:
        y = dict(zip(camp.pool.ids.astype(int), camp.pool.y.astype(int)))
        assert {t: c for t, c in y.items() if c >= 0} == {t: CLASSES.index(c) for t, c in trusted.items()}
        camp.load_state()
        camp.secure_holdout(0)
        S = camp.pool.subset(camp.ids_with("holdout"))
        assert dict(zip(S.ids.astype(int), S.y.astype(int))) == {t: CLASSES.index(c) for t, c in trusted.items()}
    finally:
        camp.store.close()

    for text, why in [("item,label\n", r"line 1: expected the header task,label"),
                      (f"task,label\n{ids[0]},cat\n", r"line 2: label 'cat' is not a class"),
                      ("task,label\n99999,neg\n", rf"line 2: task 99999 is not a task of Label Studio project {pid}"),
                      (f"task,label\n{ids[0]},neg\n{ids[0]},neg\n", rf"line 3: task {ids[0]} is listed twice")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"^{path}: {why}"):
            dataset_from_project(client, pid, tmp_path / "m", trusted_labels=path)

    # a ground-truth annotation is a label already collected, unless the user opts in (every member can read it)
    r = client.http.post(f"/api/tasks/{ids[2]}/annotations/", json={"result": choice_result("pos"),
                                                                     "ground_truth": True})
    r.raise_for_status()
    client.http.patch(f"/api/annotations/{r.json()['id']}/", json={"ground_truth": True}).raise_for_status()
    plain = dataset_from_project(client, pid, tmp_path / "m")
    assert (plain.dataset.train.y < 0).all() and [a.task_id for a in plain.existing] == [ids[2]]
    opted = dataset_from_project(client, pid, tmp_path / "m", ground_truth_annotations=True)
    assert dict(zip(opted.dataset.train.ids, opted.dataset.train.y))[ids[2]] == 1 and not opted.existing
