"""What a labeler really sees: a headless chromium, logged in as a labeler (not the admin), opens robust-al's
tasks in a real Label Studio server (the session server of tests/conftest.py) and the page is checked.

Skipped when chromium, websocket-client or the server are missing, unless ROBUST_AL_BROWSER_REQUIRED=1 (then
those fail). Screenshots go to RUN_DIR/screenshots/ and, when set, to $ROBUST_AL_ARTIFACTS.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from robust_al.data.loaders import default_datasets_dir
from robust_al.data.pool import Pool

REQUIRED = os.environ.get("ROBUST_AL_BROWSER_REQUIRED") == "1"
CLASSES = ["airplane", "automobile"]


def _unavailable(why: str):
    if REQUIRED:
        pytest.fail(f"ROBUST_AL_BROWSER_REQUIRED=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def chromium():
    pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _unavailable("websocket-client is not installed (pip install -e '.[dev]')")
    from cdp import find_chromium

    exe = find_chromium()
    if exe is None:
        _unavailable("no chromium on PATH")
    return exe


@pytest.fixture(scope="module")
def server(request, chromium):
    try:
        return request.getfixturevalue("ls")
    except pytest.skip.Exception as e:
        _unavailable(f"no Label Studio server: {e}")


@pytest.fixture(scope="module")
def labeler(server):
    """A labeler account (signed up through the invite link, as a person joins): (user id, email, password)."""
    from robust_al.labelstudio.users import create_annotator

    email, password = "browser-labeler@example.com", "pw-browser-labeler"
    uid, _ = create_annotator(server, email, password)
    return uid, email, password


@pytest.fixture
def browser(chromium, tmp_path):
    from cdp import Browser

    from cdp import CDPError

    try:
        b = Browser(chromium, tmp_path / "chromium-profile")
    except CDPError:  # seen once on a machine at load 11: start it again, with a fresh profile
        b = Browser(chromium, tmp_path / "chromium-profile-2")
    try:
        yield b
    finally:
        b.close()


def image_folder(root: Path, per_class: int = 10) -> Path:
    """A class-folder of real images: CIFAR-10 test JPEGs of two classes when the archive is there, else PNGs."""
    archive = default_datasets_dir() / "cifar10_images" / "CIFAR-10-images_jpg.tar.gz"
    got = dict.fromkeys(CLASSES, 0)
    if archive.exists():
        with tarfile.open(archive, "r|gz") as tf:  # a stream: stop as soon as there are enough
            for m in tf:
                parts = m.name.lstrip("./").split("/")
                if m.isfile() and len(parts) >= 3 and parts[-2] in got and got[parts[-2]] < per_class:
                    dst = root / parts[-2] / parts[-1]
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(tf.extractfile(m).read())
                    got[parts[-2]] += 1
                if all(v >= per_class for v in got.values()):
                    break
    if not all(v >= per_class for v in got.values()):
        from PIL import Image, ImageDraw

        for ci, c in enumerate(CLASSES):
            for i in range(per_class):
                im = Image.new("RGB", (64, 64), (40 + 150 * ci, 90, 200 - 150 * ci))
                ImageDraw.Draw(im).text((8, 24), f"{c[:4]}{i}", fill=(255, 255, 255))
                (root / c).mkdir(parents=True, exist_ok=True)
                im.save(root / c / f"{i:04d}.png")
    return root


def image_pool(root: Path) -> Pool:
    from PIL import Image

    files = sorted(p for p in root.rglob("*") if p.is_file())
    X = np.stack([np.asarray(Image.open(f).convert("RGB").resize((32, 32)), np.float32).transpose(2, 0, 1) / 255
                  for f in files])
    return Pool(np.arange(len(files)), X, np.array([CLASSES.index(f.parent.name) for f in files]), 2, CLASSES,
                keys=np.array([f.relative_to(root).as_posix() for f in files], dtype=object),
                media=np.array([str(f.resolve()) for f in files], dtype=object), media_kind="image",
                media_root=root.resolve())


def save_shot(browser, run_dir: Path, name: str) -> Path:
    path = browser.screenshot(run_dir / "screenshots" / f"{name}.png")
    art = os.environ.get("ROBUST_AL_ARTIFACTS")
    if art:
        Path(art).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(art) / path.name)
    return path


def open_task(browser, server, labeler, project_id: int, task_id: int) -> None:
    _, email, password = labeler
    browser.login(server.url, email, password)
    browser.navigate(f"{server.url}/projects/{project_id}/data?task={task_id}")


# the labeling view as the labeler sees it: the page text, the choices of Label Studio's editor (radio or
# checkbox inputs, with their labels less the hotkey hint "[1]"), and the task's image (-1: none, 0: broken)
SNAPSHOT_JS = """(() => {
  const inputs = [...document.querySelectorAll('[class*="lsf-choice"] input, [class*="choice"] input')];
  const img = [...document.querySelectorAll('img')].find(
    i => (i.src || '').startsWith('data:image/') || (i.src || '').includes('/data/local-files/'));
  return {text: document.body.innerText,
          image: img ? (img.complete ? img.naturalWidth : 0) : -1,
          choices: inputs.map(i => ({type: i.type, checked: i.checked,
            label: ((i.closest('label') || i.parentElement).innerText || '').replace(/\\[\\d+\\]\\s*$/, '').trim()}))};
})()"""


def labeling_view(browser, key: str, n_choices: int, image: bool) -> dict:
    """Wait until the labeling view of the item ``key`` has fully rendered, and stays so (the editor mounts in
    steps, and mounts again when the Data Manager beside it reloads); returns that snapshot."""
    ready = (f"(() => {{ const s = {SNAPSHOT_JS}; return s.text.includes({json.dumps(key)}) "
             f"&& s.choices.length >= {n_choices} && s.choices.every(c => c.label) "
             f"{'&& s.image > 0' if image else ''} ? s : null }})()")
    return browser.wait_stable(ready, timeout=150)


def no_answer_in_text(snapshot: dict, pool, items) -> None:
    """No class name in the page's text but the choices' own labels, and no item's key anywhere."""
    text = snapshot["text"]
    for c in pool.class_names:
        assert text.count(c) == sum(ch["label"] == c for ch in snapshot["choices"]), (c, text)
    assert not any(str(pool.keys[i]) in text for i in items), text


def check_choices(snapshot: dict, class_names) -> None:
    """Radio buttons labeled exactly with the class names, none pre-selected (no pre-annotation shown)."""
    choices = snapshot["choices"]
    assert [c["type"] for c in choices] == ["radio"] * len(class_names), choices  # single choice
    assert [c["label"] for c in choices] == list(class_names)
    assert not any(c["checked"] for c in choices), "a choice is pre-selected: a pre-annotation is shown"


def make_crowd(server, tmp_path, pool, **kw):
    from robust_al.annotators.labelstudio import LabelStudioCrowd
    from robust_al.store import RunStore

    store = RunStore(tmp_path / "run")
    crowd = LabelStudioCrowd(store, server.url, server.token, pool.class_names, k=1, webhook=False, pool=pool,
                             title=f"browser {tmp_path.name}", **kw)
    return store, crowd


def put(crowd, store, item_ids, with_guess: bool = True):
    """Create the project and its tasks as a campaign's first batch does (without waiting for answers)."""
    if with_guess:  # the model's out-of-sample guess exists: it must still not be shown by default
        for i in item_ids:
            store.set_prediction(int(i), 0, 1, 0.93)
    proj = crowd.project("query", crowd.k)
    return proj, crowd.tasks_for(proj, [int(i) for i in item_ids], 0, "query")


@pytest.mark.parametrize("media", ["data-url", "local-files"])
def test_labeler_sees_the_image_and_radio_choices(server, labeler, browser, tmp_path, media):
    from robust_al.labelstudio.client import LabelStudioClient

    root_parent = Path(server.files_root) / f"pool-{tmp_path.name}" if media == "local-files" else tmp_path
    pool = image_pool(image_folder(root_parent / "images"))
    store, crowd = make_crowd(server, tmp_path, pool, media=media,
                              files_root=str(server.files_root) if media == "local-files" else None)
    items = [0, 15]  # one of each class
    proj, tasks = put(crowd, store, items)
    with LabelStudioClient.for_server(server) as c:
        assert c.http.get("/api/predictions/", params={"task": tasks[15]}).json() == []  # no guess imported
        data = c.get(f"/api/tasks/{tasks[15]}/")["data"]
    # nothing in the task tells the answer: the key (airplane/0001.jpg) is shown as an opaque display key
    shown = crowd.display_key(15)
    assert data["key"] == shown != pool.keys[15] and "item_id" not in data  # ids follow the class folders
    assert data["image"].startswith("data:image/" if media == "data-url" else "/data/local-files/?d=")
    assert not any(c in json.dumps(data) for c in [*CLASSES, pool.keys[15]])  # the image's URL included

    open_task(browser, server, labeler, proj.id, tasks[15])
    # the header shows the display key; the image loaded (a broken image has naturalWidth 0)
    view = labeling_view(browser, shown, len(CLASSES), image=True)
    assert view["image"] > 0 and "Pool item" not in view["text"]
    check_choices(view, CLASSES)
    no_answer_in_text(view, pool, items)
    save_shot(browser, tmp_path / "run", f"image-task-{media}")

    # the labeler answers in the page: pick the true class, submit; the campaign's store gets it
    browser.evaluate(f"""(() => {{ const l = [...document.querySelectorAll('label')].find(
        l => l.innerText.replace(/\\[\\d+\\]\\s*$/, '').trim() === {json.dumps(CLASSES[1])}); l.click(); }})()""")
    browser.wait_for(f"{SNAPSHOT_JS}.choices.filter(c => c.checked).map(c => c.label).join() === "
                     f"{json.dumps(CLASSES[1])}", timeout=30)
    browser.wait_for("""(() => { const b = [...document.querySelectorAll('button')].find(
        b => b.innerText.trim() === 'Submit'); if (!b || b.disabled) return false; b.click(); return true })()""",
                     timeout=30)
    with LabelStudioClient.for_server(server) as c:
        import time

        deadline = time.time() + 90
        while not c.task_annotations(tasks[15], proj):
            assert time.time() < deadline, "the labeler's Submit did not create an annotation"
            time.sleep(0.5)
    crowd.poll_answers(proj, tasks, 0, "query")
    ann = store.annotations()
    assert list(zip(ann["task"], ann["worker"], ann["label"])) == [(15, f"ls{labeler[0]}", 1)]


def test_labeler_sees_the_text(server, labeler, browser, tmp_path):
    texts = ["The plot drags, the actors look bored and the ending is a cheat.",
             "A warm, funny film with a cast that clearly loved making it.",
             "Two hours I will never get back."]
    pool = Pool(np.arange(3), np.random.default_rng(0).random((3, 8)), np.array([0, 1, 0]), 2, ["negative", "positive"],
                keys=np.array(["review-a", "review-b", "review-c"], dtype=object),
                media=np.array(texts, dtype=object), media_kind="text")
    store, crowd = make_crowd(server, tmp_path, pool)
    proj, tasks = put(crowd, store, [0, 1, 2])
    open_task(browser, server, labeler, proj.id, tasks[1])
    # the header with the key is only in the labeling view (the Data Manager's list beside it shows the texts)
    view = labeling_view(browser, crowd.display_key(1), 2, image=False)
    assert view["text"].count(texts[1]) >= 2  # in the Data Manager's list and in the labeling view
    check_choices(view, ["negative", "positive"])
    assert "review-b" not in view["text"]  # keys are not shown (annotators.labelstudio.show_keys)
    save_shot(browser, tmp_path / "run", "text-task")
