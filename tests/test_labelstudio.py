"""Label Studio integration against a REAL open-source server (no mocks).

One server per test session, its data directory on /dev/shm when there is one. The server lives in its own
virtualenv: it is installed here only when ROBUST_AL_LS_INSTALL=1 (~1 min, ~1 GB); without that and without
an existing install the server tests are skipped. The very first start ever also builds the migrated
template data directory (~45 s); every later start copies it (~4 s).
"""
from __future__ import annotations

import json
import socket
import stat

import numpy as np
import pytest

pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed (pip install -e '.[labelstudio]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[labelstudio]')")

import httpx
from robust_al.labelstudio import server as ls_server
from robust_al.labelstudio.client import (
    LabelStudioClient, annotation_from_payload, annotations_from_export, class_names_from_config, label_config,
    parse_label_config)
from robust_al.labelstudio.users import annotate
from robust_al.labelstudio.webhook import TokenBucket, WebhookListener, parse_event

CLASSES = ["zero", "one", "two", "three"]


# -- no server needed ------------------------------------------------------------------------------------
def test_label_config_roundtrip():
    cfg = label_config(['a "quoted" <class>', "b", "c"])
    assert class_names_from_config(cfg) == ['a "quoted" <class>', "b", "c"]
    assert '<Text name="item" value="$text"/>' in cfg and "<Image" not in cfg
    assert '<Header value="$key"/>' in cfg and "Pool item" not in cfg  # the user's key, not an internal id
    assert 'choice="single-radio"' in cfg  # radio buttons ("single" renders checkboxes)
    img = parse_label_config(label_config(["a", "b"], image=True))
    assert (img.from_name, img.to_name, img.object_tag, img.value_key, img.class_names) == (
        "label", "item", "Image", "image", ("a", "b"))
    assert "<Header" not in label_config(["a", "b"], header=False)
    with pytest.raises(ValueError):
        label_config(["a", "a"])


def test_small_images_are_shown_sharp_and_large_ones_smoothed(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from robust_al.labelstudio.media import small_images

    def pool(size, n=3):
        paths = []
        for i in range(n):
            p = tmp_path / f"{size[0]}x{size[1]}-{i}.png"
            Image.new("RGB", size, (i * 40, 90, 200)).save(p)
            paths.append(str(p))
        return SimpleNamespace(media=np.array(paths, dtype=object), media_kind="image")

    assert small_images(pool((32, 32))) and not small_images(pool((640, 480)))
    assert not small_images(SimpleNamespace(media=None, media_kind=None))
    cfg = label_config(["a", "b"], image=True, pixelated=True)
    assert 'smoothing="false"' in cfg and parse_label_config(cfg).object_tag == "Image"
    assert "smoothing" not in label_config(["a", "b"], image=True)


def test_parse_a_foreign_label_config():
    """A project made elsewhere: any control and object names, the first Choices on an Image/Text counts."""
    cfg = """<View><Header value="Review"/><Text name="review" value="$review_text"/>
      <Rating name="stars" toName="review"/>
      <Choices name="sentiment" toName="review" choice="single"><Choice value="neg"/><Choice value="pos"/></Choices>
    </View>"""
    s = parse_label_config(cfg)
    assert (s.from_name, s.to_name, s.media, s.value_key, s.class_names) == (
        "sentiment", "review", "text", "review_text", ("neg", "pos"))
    with pytest.raises(ValueError, match="no <Choices>"):
        parse_label_config('<View><Text name="t" value="$t"/><Labels name="l" toName="t"/></View>')


def test_media_settings_are_checked_before_anything_is_created(tmp_path):
    import numpy as np

    from robust_al.config import ConfigError, load_config
    from robust_al.data.pool import Pool
    from robust_al.labelstudio.media import MAX_DATA_URL_BYTES, MediaError, check_media, task_fields

    root = tmp_path / "files" / "pool"
    (root / "cat").mkdir(parents=True)
    small, big = root / "cat" / "a.png", root / "cat" / "b.png"
    small.write_bytes(b"\x89PNG" + b"0" * 100)
    big.write_bytes(b"0" * (MAX_DATA_URL_BYTES + 1))
    pool = Pool(np.arange(2), np.zeros((2, 3)), np.array([0, 0]), 1, ["cat"], keys=np.array(["cat/a.png", "cat/b.png"]),
                media=np.array([str(small), str(big)], dtype=object), media_kind="image", media_root=root)
    with pytest.raises(MediaError, match=r"b.png is \d+ kB, over the 256 kB limit .*use media: local-files"):
        check_media(pool, "data-url")
    check_media(pool, "local-files", files_root=str(tmp_path / "files"))
    assert task_fields(pool, 1, "local-files", str(tmp_path / "files"))["image"] == \
        "/data/local-files/?d=pool/cat/b.png"
    assert task_fields(pool, 0, "data-url")["image"].startswith("data:image/png;base64,")
    with pytest.raises(MediaError, match="files_root = .* not strictly inside it"):
        check_media(pool, "local-files", files_root=str(root))  # Label Studio refuses the root itself
    with pytest.raises(MediaError, match="not strictly inside"):
        check_media(pool, "local-files", files_root=str(tmp_path / "elsewhere"))
    assert task_fields(pool, 0, "url-template", template="https://h/i/{key}")["image"] == "https://h/i/cat/a.png"
    with pytest.raises(ConfigError, match="media_url holding {key}"):
        load_config(data={"annotators": {"kind": "labelstudio", "labelstudio": {"url": "u", "media": "url-template"}}})
    # the URL names the file, e.g. its class folder: refused unless keys may be shown anyway
    template = {"url": "u", "media": "url-template", "media_url": "https://h/i/{key}"}
    with pytest.raises(ConfigError, match="every labeler can read: set show_keys: true"):
        load_config(data={"annotators": {"kind": "labelstudio", "labelstudio": template}})
    assert load_config(data={"annotators": {"kind": "labelstudio", "labelstudio": {**template, "show_keys": True}}})


def test_convert_export_rows():
    task = {"id": 7, "data": {"item_id": 42, "text": "pool item 42"}, "annotations": [
        {"id": 3, "completed_by": 5, "was_cancelled": False, "updated_at": "2026-01-01T00:00:00Z", "task": 7,
         "result": [{"from_name": "label", "to_name": "item", "type": "choices", "value": {"choices": ["two"]}}]},
        {"id": 4, "completed_by": {"id": 6}, "was_cancelled": True, "updated_at": "2026-01-01T00:00:01Z",
         "task": 7, "result": []}]}
    full = annotations_from_export([task], CLASSES)
    assert [(a.item_id, a.user_id, a.label, a.annotation_id, a.was_cancelled, a.task_id) for a in full] == [
        (42, 5, 2, 3, False, 7), (42, 6, None, 4, True, 7)]
    assert full[0].external_id == "3"
    row = {"item_id": 42, "text": "pool item 42", "id": 7, "label": "one", "annotator": 5, "annotation_id": 3,
           "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "lead_time": None}
    (a,) = annotations_from_export([row], CLASSES)
    assert (a.item_id, a.user_id, a.label, a.annotation_id, a.task_id) == (42, 5, 1, 3, 7)


def test_rings_are_parsed_coalesced_and_bounded():
    """A webhook is a doorbell: only the annotation ids it names are kept, each once, at most max_pending."""
    created = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": 7, "data": {"item_id": 42}},
               "annotation": {"id": 3, "updated_at": "t1", "completed_by": 5}}
    ev = parse_event(created)
    assert (ev.action, ev.annotation_ids, ev.project_id) == ("ANNOTATION_CREATED", [3], 1)
    deleted = parse_event({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 3}], "project": {"id": 1}})
    assert deleted.annotation_ids == [3]
    with pytest.raises(ValueError):
        parse_event({"action": "ANNOTATION_CREATED", "annotation": {"id": 1.5}})
    hook = WebhookListener(max_pending=3)
    for e in (ev, parse_event(json.loads(json.dumps(created))), deleted):  # the same id three times: one entry
        hook.ring(e)
    assert hook.take() == ([3], False) and hook.take() == ([], False)
    for i in range(10):  # a flood: three are kept, the rest only say "look at the server yourself"
        hook.ring(parse_event({"action": "ANNOTATION_CREATED", "annotation": {"id": 100 + i}}))
    assert hook.take(2) == ([100, 101], True) and hook.take() == ([102], False)
    bucket = TokenBucket(rate=1.0, burst=5)
    assert bucket.take(100) == 5 and bucket.take(100) == 0


# -- a real server (fixtures ls, client, annotators: tests/conftest.py) ---------------------------------
def test_server_secrets_and_environment(ls):
    assert ls.url == f"http://127.0.0.1:{ls.port}"
    mode = stat.S_IMODE(ls.token_file.stat().st_mode)
    assert mode == 0o600 and ls.token_file.read_text().strip() == ls.token
    assert ls.token not in ls.log_file.read_text()
    with httpx.Client() as h:  # the token works, no token does not
        assert h.get(f"{ls.url}/api/current-user/whoami", headers={"Authorization": f"Token {ls.token}"}
                     ).json()["email"] == ls.username
        assert h.get(f"{ls.url}/api/projects/").status_code == 401


def test_busy_port_is_refused(ls, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ls_server.LabelStudioError, match="already in use"):
            ls_server.LabelStudioServer().start(tmp_path / "d", port=s.getsockname()[1])


def test_create_project(client):
    p = client.create_project("digits round 0", CLASSES, maximum_annotations=3)
    assert p.id > 0 and p.class_names == tuple(CLASSES)
    assert client.get_project(p.id) == p
    img = client.create_project("image project", ["cat", "dog"], image=True)
    assert client.get_project(img.id).image


def test_import_tasks_with_predictions(client):
    p = client.create_project("import test", CLASSES)
    n = 200
    items = [{"item_id": 1000 + i, "prediction": {"label": i % 4, "score": i / n}} for i in range(n)]
    items[5] = {"item_id": 1005}  # no pre-annotation
    task_ids = client.import_tasks(p, items, model_version="iter-3", batch_size=64)
    assert len(task_ids) == n == len(set(task_ids))
    rows = client.export(p, export_type="JSON", all_tasks=True)
    by_task = {r["id"]: r for r in rows}
    assert len(by_task) == n
    for tid, it in zip(task_ids, items):  # task ids come back in the order of the items
        assert by_task[tid]["data"]["item_id"] == it["item_id"]
    preds = client.http.get("/api/predictions/", params={"task": task_ids[7]}).json()
    assert [(x["model_version"], x["score"], x["result"][0]["value"]["choices"]) for x in preds] == [
        ("iter-3", pytest.approx(7 / n), [CLASSES[7 % 4]])]
    assert client.http.get("/api/predictions/", params={"task": task_ids[5]}).json() == []


def test_three_annotators_export_user_ids(client, annotators):
    p = client.create_project("overlap three", CLASSES, maximum_annotations=3)
    task_ids = client.import_tasks(p, [{"item_id": i} for i in range(10)])
    users = {u["id"]: u["email"] for u in client.list_users()}
    assert {uid for uid, _ in annotators} <= set(users)
    expected = {}
    for k, (uid, token) in enumerate(annotators):
        for j, tid in enumerate(task_ids[:4]):
            label = (j + k) % 4
            ann = annotate(client.url, token, tid, CLASSES[label])
            assert ann["completed_by"] == uid
            expected[ann["id"]] = (j, uid, label)
    skip = annotate(client.url, annotators[0][1], task_ids[4], None)  # the Skip button
    got = client.export_annotations(p)
    assert {a.annotation_id: (a.item_id, a.user_id, a.label) for a in got if not a.was_cancelled} == expected
    (cancelled,) = [a for a in got if a.was_cancelled]
    assert (cancelled.annotation_id, cancelled.item_id, cancelled.label) == (skip["id"], 4, None)
    # the compact export has one row per (non-skipped) annotation, with the annotator's id
    rows = client.export(p, export_type="JSON_MIN")
    assert sorted((r["annotation_id"], r["annotator"]) for r in rows) == sorted(
        (aid, uid) for aid, (_, uid, _) in expected.items())
    # incremental pulls: by task, and by time
    only = client.export_annotations(p, task_ids=[task_ids[0]])
    assert {a.user_id for a in only} == {uid for uid, _ in annotators} and {a.item_id for a in only} == {0}
    last = max(a.updated for a in got)
    assert client.export_annotations(p, since=last) == []
    new = annotate(client.url, annotators[1][1], task_ids[5], CLASSES[3])
    (a,) = client.export_annotations(p, since=last)
    assert (a.annotation_id, a.item_id, a.user_id, a.label) == (new["id"], 5, annotators[1][0], 3)


def test_foreign_writes_are_visible(client, annotators):
    """Any member may post as someone else or edit anyone's annotation; ``updated_by`` tells the truth."""
    p = client.create_project("attribution", CLASSES)
    t = client.import_tasks(p, [{"item_id": 70}, {"item_id": 71}])
    (u0, tok0), (u1, tok1) = annotators[:2]
    r = httpx.post(f"{client.url}/api/tasks/{t[0]}/annotations/", headers={"Authorization": f"Token {tok0}"},
                   json={"result": [{"from_name": "label", "to_name": "item", "type": "choices",
                                     "value": {"choices": [CLASSES[0]]}}], "completed_by": u1})
    assert r.status_code == 201  # accepted: the open-source server has no per-user permissions
    honest = annotate(client.url, tok1, t[1], CLASSES[1])
    got = {a.annotation_id: a for a in client.export_annotations(p)}
    spoofed = got[r.json()["id"]]
    assert (spoofed.user_id, spoofed.updated_by, spoofed.foreign_write) == (u1, u0, True)
    assert not got[honest["id"]].foreign_write and got[honest["id"]].updated_by == u1


def test_webhook_delivers_annotation_and_duplicates_are_detected(client, annotators):
    p = client.create_project("webhook test", CLASSES, maximum_annotations=2)
    task_ids = client.import_tasks(p, [{"item_id": 500 + i} for i in range(3)])
    with WebhookListener() as hook:
        client.create_webhook(p, hook.url)
        uid, token = annotators[2]
        ann = annotate(client.url, token, task_ids[1], CLASSES[1])
        assert hook.wait(10)  # sent synchronously while the annotation request is handled
        assert hook.take() == ([ann["id"]], False)
        held = client.annotation(ann["id"])  # what the ring names is read back from the server
        conv = annotation_from_payload(held, {"id": held["task"], "data": {"item_id": 501}}, p)
        assert (conv.item_id, conv.user_id, conv.label, conv.annotation_id) == (501, uid, 1, ann["id"])
        assert conv.updated_by == uid and not conv.foreign_write and held["project"] == p.id
        assert client.annotation(10 ** 9) is None

        # an edit rings again; so does a deletion, and the server then holds no such annotation
        r = httpx.patch(f"{client.url}/api/annotations/{ann['id']}/", headers={"Authorization": f"Token {token}"},
                        json={"result": [{"from_name": "label", "to_name": "item", "type": "choices",
                                          "value": {"choices": [CLASSES[2]]}}]})
        r.raise_for_status()
        assert hook.wait(10) and hook.take() == ([ann["id"]], False)
        client.http.delete(f"/api/annotations/{ann['id']}/").raise_for_status()
        assert hook.wait(10) and hook.take() == ([ann["id"]], False)
        assert client.annotation(ann["id"]) is None
        assert hook.rings == 3 and hook.rejected == 0


def test_restart_keeps_annotations(ls, annotators):
    """Runs last: stops the session's server and serves the same data directory again."""
    with LabelStudioClient.for_server(ls) as c:
        p = c.create_project("restart test", CLASSES, maximum_annotations=3)
        task_ids = c.import_tasks(p, [{"item_id": 900 + i} for i in range(3)])
        for k, (_, token) in enumerate(annotators):
            annotate(c.url, token, task_ids[k], CLASSES[k])
        before = {pr["id"]: c.export_annotations(pr["id"]) for pr in c.get("/api/projects/")["results"]}
    ls.restart()
    assert ls.running and ls.startup_seconds < 60
    with LabelStudioClient.for_server(ls) as c:
        after = {pr["id"]: c.export_annotations(pr["id"]) for pr in c.get("/api/projects/")["results"]}
        assert after == before and len(after[p.id]) == 3
        # annotators' tokens still work after the restart
        uid, token = annotators[0]
        assert httpx.get(f"{ls.url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"}
                         ).json()["id"] == uid


# -- a whole campaign against the real server --------------------------------------------------------------
@pytest.mark.slow
def test_campaign_with_simulated_users_on_a_real_server(ls, tmp_path, monkeypatch):
    """Simulated users (4 benign, 1 malicious that calls every 1 a 7) sign up and annotate through the API
    while a campaign runs against the server; the server is restarted mid-campaign."""
    import threading
    import time

    from conftest import tiny_config
    from robust_al.annotators.simulated import BenignAnnotator, MaliciousAnnotator, truth_map
    from robust_al.campaign import Campaign
    from robust_al.config import load_config
    from robust_al.data.loaders import load_digits_dataset
    from robust_al.labelstudio.simulate import SimulatedUsers
    from robust_al.store import RunStore

    ds = load_digits_dataset()
    truth = truth_map(ds.train.ids, ds.train.y)
    behaviours = [BenignAnnotator(f"sim-benign{i}", truth, 10, pr=0.05, seed=0) for i in range(4)]
    behaviours.append(MaliciousAnnotator("sim-malicious", truth, 10, target=1, to=7, pr=0.05, seed=0))
    run_dir = tmp_path / "run"
    users = SimulatedUsers(ls.url, ls.token, behaviours, ds.train.class_names,
                           title_prefix="robust-al campaign tiny", run_dir=run_dir).start()
    monkeypatch.setenv("LS_TEST_TOKEN", ls.token)
    cfg = load_config(data=tiny_config(**{
        "annotators": {"kind": "labelstudio", "k": 3, "labelstudio": {
            "url": ls.url, "token_env": "LS_TEST_TOKEN", "wait_seconds": 120, "poll_seconds": 1.0}},
        "stop.budget": 270, "stop.max_iterations": 5, "model.epochs": 10}))
    camp = Campaign.create(cfg, run_dir, dataset=ds, echo=None)
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=camp.run(progress=False)))
    thread.start()
    store = RunStore(run_dir)
    deadline = time.time() + 300
    while store.last_iteration() is None or store.last_iteration() < 1:
        assert time.time() < deadline and thread.is_alive(), "the campaign did not get through iteration 1"
        time.sleep(0.5)
    port, data_dir = ls.port, ls.data_dir
    ls.stop()  # a server restart mid-campaign, on the same address
    time.sleep(2)
    ls.start(data_dir, port=port, username=ls.username, token=ls.token)
    thread.join(timeout=600)
    users.stop()
    camp.crowd.close()
    assert not thread.is_alive()

    ann = store.annotations()
    user_of = {w: f"ls{uid}" for w, uid in users.user_of.items()}
    by_user = {v: k for k, v in user_of.items()}
    assert set(ann["worker"]) <= set(by_user)
    # every stored answer is the one the simulated user with that identity gives for that item
    behaviour = {b.worker_id: b for b in behaviours}
    for t, w, label in zip(ann["task"], ann["worker"], ann["label"]):
        assert behaviour[by_user[w]].annotate([int(t)])[0].label == label
    # nothing Label Studio holds is missing from the store, and nothing is stored twice
    client = LabelStudioClient(ls.url, ls.token)
    in_ls = []
    for pid in store.get_meta("ls_projects").values():
        proj = client.get_project(int(pid))
        in_ls += [(proj.id, a.annotation_id) for a in client.export_annotations(proj) if not a.was_cancelled]
        tasks = client.export(proj, export_type="JSON", all_tasks=True)
        held = {i for i, s in store.statuses().items() if s in ("holdout", "retired")}
        item_of = dict(zip(store.ls_tasks(proj.id)["task_id"], store.ls_tasks(proj.id)["item_id"]))
        assert all("item_id" not in t["data"] for t in tasks)
        assert held.isdisjoint({item_of[t["id"]] for t in tasks})  # no holdout item in any task
    stored = set(store.annotations()["external_id"].dropna())
    assert {f"{p}:{a}" for p, a in in_ls} <= stored
    assert len(ann) == len(set(zip(ann["task"], ann["worker"])))
    # a webhook delivered twice stores nothing twice
    proj = client.get_project(int(next(iter(store.get_meta("ls_projects").values()))))
    some = client.export_annotations(proj)[:5]
    before = len(store.annotations())
    camp.crowd.ingest(proj.id, some + some, 0, "query")
    assert len(store.annotations()) == before
    # an annotation made while the campaign is not running arrives with `sync` (a filtered pull, not a walk)
    free = next(int(i) for i in ds.train.ids if int(i) not in store.statuses())
    tid = camp.crowd.tasks_for(proj, [free], 0, "query")[free]  # a task of the campaign (no other one counts)
    annotate(ls.url, users.users[0][2], tid, ds.train.class_names[0])
    assert camp.crowd.sync() == 1 and camp.crowd.sync() == 0
    assert (store.annotations()["task"] == free).sum() == 1
    # the malicious user ends with the lowest trust
    trust = result["r"].metrics["trust"]
    mal = user_of["sim-malicious"]
    assert trust[mal] < min(t for w, t in trust.items() if w != mal)


# -- attaching to a project made elsewhere -------------------------------------------------------------------
REVIEW_CONFIG = """<View>
  <Header value="What does the reviewer think?"/>
  <Text name="review" value="$review"/>
  <Choices name="sentiment" toName="review" choice="single" showInline="true">
    <Choice value="neg"/><Choice value="pos"/>
  </Choices>
</View>"""
GOOD = ["great", "wonderful", "loved", "superb", "delightful", "brilliant"]
BAD = ["awful", "boring", "hated", "dreadful", "tedious", "clumsy"]


def _snapshot(client, pid: int) -> tuple[dict, dict]:
    """The project's settings and every task with its data and annotations (full export of all tasks)."""
    info = client.project_info(pid)
    settings = {k: info.get(k) for k in ("title", "label_config", "maximum_annotations", "sampling",
                                         "show_collab_predictions", "model_version", "show_skip_button")}
    tasks = {}
    for row in client.export(pid, export_type="JSON", all_tasks=True):
        tasks[row["id"]] = {"data": row["data"], "annotations": {
            a["id"]: (a["completed_by"], json.dumps(a["result"], sort_keys=True), a.get("was_cancelled"))
            for a in row["annotations"]}}
    return settings, tasks


def _review_project(client, n: int = 30, maximum_annotations: int = 2) -> tuple[int, list[int], list[str]]:
    r = client.http.post("/api/projects/", json={"title": "customer reviews (made by hand)",
                                                 "label_config": REVIEW_CONFIG,
                                                 "maximum_annotations": maximum_annotations})
    r.raise_for_status()
    pid = r.json()["id"]
    truth = ["pos" if i % 2 else "neg" for i in range(n)]
    words = [(GOOD if t == "pos" else BAD)[i % 6] for i, t in enumerate(truth)]
    # no truth in the task data: every member can read it (GET /api/tasks/); it goes in a file (_trusted_file)
    tasks = [{"data": {"review": f"Review {i}: the film was {w}, truly {w}."}} for i, w in enumerate(words)]
    r = client.http.post(f"/api/projects/{pid}/import", params={"return_task_ids": "true"}, json=tasks)
    r.raise_for_status()
    return pid, [int(t) for t in r.json()["task_ids"]], truth


def _trusted_file(path, task_ids, truth) -> str:
    """``data.options.trusted_labels`` of a review project: a CSV task,label kept outside Label Studio."""
    path.write_text("task,label\n" + "".join(f"{t},{c}\n" for t, c in zip(task_ids, truth)))
    return str(path)


def test_attach_to_an_existing_project(ls, client, annotators, tmp_path, monkeypatch):
    """A project made beforehand (its own control names, tasks and two annotations): the campaign takes its
    tasks as the pool, asks nothing about the two annotated items, sends labelers its queries through the
    "robust-al queue" tab, and leaves every setting, task and annotation of the project as it was."""
    import re
    import threading

    from conftest import tiny_config
    from robust_al.campaign import Campaign
    from robust_al.config import load_config
    from robust_al.store import RunStore

    pid, task_ids, truth = _review_project(client)
    (u0, tok0), (u1, tok1) = annotators[:2]
    existing = []
    for i in (0, 1):
        r = httpx.post(f"{client.url}/api/tasks/{task_ids[i]}/annotations/", headers={"Authorization": f"Token {tok0}"},
                       json={"result": [{"from_name": "sentiment", "to_name": "review", "type": "choices",
                                         "value": {"choices": [truth[i]]}}]})
        r.raise_for_status()
        existing.append(r.json()["id"])
    before = _snapshot(client, pid)

    served: list[int] = []
    stop = threading.Event()

    def labeler():  # a person who starts labeling from the "robust-al queue" tab
        with httpx.Client(base_url=client.url, headers={"Authorization": f"Token {tok1}"}, timeout=60) as h:
            while not stop.is_set():
                views = [v for v in h.get("/api/dm/views/", params={"project": pid}).json()
                         if v["data"].get("title", "").startswith("robust-al queue")]
                r = h.get(f"/api/projects/{pid}/next", params={"view": views[0]["id"]}) if views else None
                if r is None or r.status_code != 200:
                    stop.wait(0.3)
                    continue
                task = r.json()
                served.append(int(task["id"]))
                h.post(f"/api/tasks/{task['id']}/annotations/", json={"result": [
                    {"from_name": "sentiment", "to_name": "review", "type": "choices",
                     "value": {"choices": [truth[task_ids.index(int(task["id"]))]]}}]}).raise_for_status()

    thread = threading.Thread(target=labeler, daemon=True)
    thread.start()
    monkeypatch.setenv("LS_TEST_TOKEN", ls.token)
    cfg = load_config(data=tiny_config(**{
        "data": {"name": "labelstudio", "options": {
            "trusted_labels": _trusted_file(tmp_path / "trusted.csv", task_ids, truth)}},
        "holdout.size": 6, "query.initial": 6, "query.batch": 4, "query.n_clusters": 2,
        "augment.enabled": False, "model.epochs": 5, "model.min_steps": 20,
        "annotators": {"kind": "labelstudio", "k": 1, "labelstudio": {
            "url": ls.url, "token_env": "LS_TEST_TOKEN", "project_id": pid, "wait_seconds": 120,
            "poll_seconds": 0.5, "webhook": False, "status_seconds": 0.5}},
        "stop.budget": 14, "stop.max_iterations": 4}))
    lines: list[str] = []
    camp = Campaign.create(cfg, tmp_path / "run", echo=lines.append)
    try:
        camp.run(progress=False)
    finally:
        stop.set()
        thread.join(timeout=30)
    store = RunStore(tmp_path / "run")

    # the project's tasks are the pool; its two annotations are stored as labels already collected
    assert sorted(camp.pool.ids) == sorted(task_ids) and camp.pool.class_names == ["neg", "pos"]
    ann = store.annotations()
    old = ann[ann["purpose"] == "existing"]
    assert sorted(zip(old["task"], old["worker"], old["label"])) == [
        (task_ids[0], f"ls{u0}", 0), (task_ids[1], f"ls{u0}", 1)]
    asked = set(store.ls_tasks(pid)["item_id"].astype(int))
    assert asked and not asked & {task_ids[0], task_ids[1]}  # never asked again
    assert set(served) == asked  # the queue tab served exactly robust-al's queries
    new = ann[ann["purpose"] != "existing"]
    assert len(new) == 14 == camp.labels_used()  # the budget counts only the labels this campaign bought
    assert all(lab == (1 if truth[task_ids.index(t)] == "pos" else 0) for t, lab in zip(new["task"], new["label"]))
    assert store.get_meta("ls_users")[f"ls{u1}"] == "annotator1@example.com"
    assert any(re.fullmatch(rf"waiting: \d+/\d+ answers in project {pid} at {re.escape(ls.url)}/projects/{pid}/data"
                            r'\?tab=\d+: open the "robust-al queue" tab, then the ▾ beside "Label All Tasks" → '
                            r'"Label Tasks As Displayed" .*', ln) for ln in lines), lines

    # nothing of the project was deleted or rewritten, no task duplicated; robust-al's queue predictions are gone
    settings, tasks = _snapshot(client, pid)
    assert settings == before[0] and set(tasks) == set(before[1])
    for tid, t in before[1].items():
        assert tasks[tid]["data"] == t["data"]
        assert {a: v for a, v in tasks[tid]["annotations"].items() if a in t["annotations"]} == t["annotations"]
    assert sum(len(t["annotations"]) for t in tasks.values()) == 2 + 14
    assert all(not p["model_version"].startswith("robust-al-queue")
               for tid in task_ids for p in client.http.get("/api/predictions/", params={"task": tid}).json())


def test_attach_refuses_a_missing_project_or_too_few_annotations(ls, client, tmp_path, monkeypatch):
    from conftest import tiny_config
    from robust_al.campaign import Campaign
    from robust_al.config import ConfigError, load_config

    monkeypatch.setenv("LS_TEST_TOKEN", ls.token)

    def cfg(project_id: int, k: int = 1):
        return load_config(data=tiny_config(data={"name": "labelstudio"}, annotators={
            "kind": "labelstudio", "k": k, "labelstudio": {"url": ls.url, "token_env": "LS_TEST_TOKEN",
                                                             "project_id": project_id}}))

    with pytest.raises(ConfigError, match=rf"annotators.labelstudio.project_id = 99999: no such project on the "
                                          rf"Label Studio server {ls.url}$"):
        Campaign.create(cfg(99999), tmp_path / "missing")
    assert not (tmp_path / "missing").exists()  # nothing written
    pid, _, _ = _review_project(client, n=4, maximum_annotations=1)
    with pytest.raises(ConfigError, match=r"annotators.k = 2, but Label Studio project \d+ takes at most 1 "
                                          r"annotation.*maximum_annotations"):
        Campaign.create(cfg(pid, k=2), tmp_path / "few")
    assert not (tmp_path / "few").exists()


def test_a_user_signed_up_before_logs_in_again_and_a_wrong_password_is_refused(ls):
    """`labelstudio simulate` run twice against one server: its users exist already and log in again."""
    from robust_al.labelstudio.users import SignupError, create_annotator, log_in

    uid, token = create_annotator(ls, "again@example.com", "again-password-1")
    with pytest.raises(SignupError, match="sign-up of again@example.com refused"):
        create_annotator(ls, "again@example.com", "again-password-1")
    assert log_in(ls, "again@example.com", "again-password-1") == (uid, token)
    with pytest.raises(SignupError, match="log-in of again@example.com refused"):
        log_in(ls, "again@example.com", "wrong-password-1")
