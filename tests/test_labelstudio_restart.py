"""A Label Studio server that restarts, moves or goes down under a live campaign (issue #27), against a REAL
open-source server: its own data directory (a copy of the migrated template, ~5 s a start), stopped and
started by the tests. The campaign runs as `robust-al run` in a subprocess, as a team would run it."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed (pip install -e '.[labelstudio]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[labelstudio]')")

from conftest import tiny_config
from robust_al.labelstudio import server as ls_server
from robust_al.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robust_al.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def own_ls(ls, tmp_path_factory):
    """A server of this module's own (the session's `ls` is never stopped here); `ls` first: it installs
    Label Studio and builds the template when needed."""
    base = Path(tmp_path_factory.mktemp("restart"))
    srv = ls_server.LabelStudioServer()
    srv.start(base / "run" / "labelstudio")
    yield srv
    srv.stop()


def test_a_restarted_server_keeps_its_url(own_ls, tmp_path):
    url, data_dir = own_ls.url, own_ls.data_dir
    own_ls.stop()
    own_ls.start(data_dir)  # no port given: the stored one (before #27: a fresh random port)
    assert own_ls.url == url
    assert (data_dir / "port").read_text().strip() == str(own_ls.port)
    own_ls.restart()
    assert own_ls.url == url and own_ls.running
    # the stored port taken by someone else: one line saying so, never a silent move to another port
    other = ls_server.LabelStudioServer()
    with pytest.raises(ls_server.LabelStudioError, match=rf"port {own_ls.port} .* is in use by another process") as e:
        other.start(data_dir)
    assert len(str(e.value).splitlines()) == 1 and other.proc is None
    # the same through the CLI: `serve` exits 2 with one line on stderr
    r = _cli("labelstudio", "serve", str(data_dir.parent), timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"port {own_ls.port}" in r.stderr and "--port" in r.stderr


def _config(tmp_path: Path, srv) -> Path:
    cfg = tiny_config(**{
        "annotators": {"kind": "labelstudio", "k": 1, "lookahead": 1, "labelstudio": {
            "url": srv.url, "token_file": str(srv.token_file), "wait_seconds": 900, "poll_seconds": 0.5,
            "webhook": False, "status_seconds": 1}},
        "query.initial": 8, "query.batch": 8, "stop.budget": 16, "stop.max_iterations": 2, "model.epochs": 5,
        "augment.enabled": False})
    path = tmp_path / "ls.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _wait(cond, what: str, timeout: float = 240.0, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got is not None and got is not False:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the campaign exited ({proc.returncode}) before {what}:\n{proc.stderr.read()}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _tasks(run_dir: Path, iteration: int | None = None):
    """The Label Studio tasks the run has made so far, or those of one iteration (None: none yet, or no store
    yet)."""
    try:
        store = RunStore(run_dir, create=False)
    except (ValueError, OSError):  # not created yet
        return None
    try:
        tasks = store.ls_tasks()
    finally:
        store.close()
    if iteration is not None:
        tasks = tasks[tasks["iteration"] == iteration]
    return tasks if len(tasks) else None


def _one_line_naming(r: subprocess.CompletedProcess, url: str) -> None:
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, (r.returncode, r.stderr)
    assert f"Label Studio at {url} is unreachable" in err[0] and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_campaign_survives_its_server_going_down_and_moving(own_ls, tmp_path):
    from robust_al.labelstudio.users import annotate, create_annotator

    cfg = _config(tmp_path, own_ls)
    run_dir = tmp_path / "run"
    old_url = own_ls.url
    _, token = create_annotator(own_ls, "restart-annotator@example.com", "pw-restart-1")
    proc = subprocess.Popen([sys.executable, "-m", "robust_al.cli", "run", str(cfg), "--run-dir", str(run_dir),
                             "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # the first batch's only (with lookahead, the next batch's tasks may already be there too)
        tasks = _wait(lambda: _tasks(run_dir, iteration=0), "the first batch's tasks", proc=proc)
        project = int(tasks["project"].iloc[0])
        # a live campaign waiting for its answers (before #27: "iteration 0 did not complete: resume with ...")
        r = _cli("status", str(run_dir))
        assert r.returncode == 0, r.stderr
        assert f"iteration 0 (query) is waiting for {len(tasks)} answers in project {project} (Label Studio at " \
               f"{old_url})" in r.stdout
        # annotators.lookahead: 1: the next batch is already there to label
        ahead = _wait(lambda: _tasks(run_dir, iteration=1), "the next batch's tasks", proc=proc)
        r = _cli("status", str(run_dir))
        assert (f"the next batch (iteration 1, query) is queued behind it: {len(ahead)} answers to give in "
                f"project {project}") in r.stdout
        assert "resume with" not in r.stdout
    finally:
        proc.send_signal(signal.SIGKILL)  # killed: no handler runs, as after a crash or `kill -9`
        proc.wait()
    r = _cli("status", str(run_dir))
    assert r.returncode == 0 and "waiting for" not in r.stdout
    assert f"resume with `robust-al run --resume {run_dir}`" in r.stdout

    # answers given while the campaign process is down
    names = yaml.safe_load((run_dir / "config.yaml").read_text())
    class_names = RunStore(run_dir, create=False).get_meta("class_names")
    assert names["annotators"]["labelstudio"]["url"] == old_url
    meanwhile = [int(t) for t in tasks["task_id"].iloc[:3]]
    for t in meanwhile:
        annotate(own_ls.url, token, t, class_names[0])

    # the server down: one line naming the URL and what to do, exit 2 (before #27: a 73-line ConnectError)
    data_dir = own_ls.data_dir
    own_ls.stop()
    _one_line_naming(_cli("run", "--resume", str(run_dir), "--no-progress"), old_url)
    _one_line_naming(_cli("labelstudio", "sync", str(run_dir)), old_url)
    r = _cli("status", str(run_dir))
    _one_line_naming(r, old_url)
    assert "resume with" in r.stdout  # the store's view is still printed on stdout
    _one_line_naming(_cli("run", str(cfg), "--run-dir", str(tmp_path / "new"), "--no-progress"), old_url)
    assert not (tmp_path / "new").exists()

    # a key that would change the results is refused on resume, in one line naming it
    r = _cli("run", "--resume", str(run_dir), "--set", "query.batch=5", "--no-progress")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "query.batch" in r.stderr, r.stderr

    # the server back on another port: `sync --url` pulls what arrived meanwhile
    own_ls.start(data_dir, port=ls_server.free_port())
    moved = own_ls.url
    assert moved != old_url
    r = _cli("labelstudio", "sync", str(run_dir), "--url", moved)
    assert r.returncode == 0 and f"pulled {len(meanwhile)} new annotation(s)" in r.stdout, (r.stdout, r.stderr)

    # and once more elsewhere: the campaign resumed with --set annotators.labelstudio.url works there
    own_ls.stop()
    own_ls.start(data_dir, port=ls_server.free_port())
    moved = own_ls.url
    proc = subprocess.Popen([sys.executable, "-m", "robust_al.cli", "run", "--resume", str(run_dir), "--set",
                             f"annotators.labelstudio.url={moved}", "--no-progress"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: f"Label Studio at {moved}" in _cli("status", str(run_dir)).stdout, "the resumed campaign",
              proc=proc)
        for t in tasks["task_id"].iloc[3:]:  # the rest of the first batch, answered on the moved server
            annotate(moved, token, int(t), class_names[1])
        store = RunStore(run_dir, create=False)
        _wait(lambda: store.last_iteration() is not None, "iteration 0 to complete", proc=proc)
        assert store.get_meta("config")["annotators"]["labelstudio"]["url"] == moved
        assert len(store.annotations()) >= len(tasks)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()



@pytest.mark.slow
def test_simulated_users_answer_an_attached_project(ls, client, tmp_path):
    """`labelstudio simulate` on a campaign attached to a project made elsewhere: the simulated users take the
    campaign's queue tab and answer in the project's own choices (before #27 they never answered it); the
    campaign's progress lines say `test acc n/a` (an attached project has no test split), never `nan`."""
    from robust_al.campaign import Campaign
    from robust_al.config import load_config
    from test_labelstudio import _review_project, _trusted_file

    pid, task_ids, truth = _review_project(client)
    cfg = tiny_config(**{  # every task's truth in the file: the simulated users answer from it
        "data": {"name": "labelstudio", "options": {
            "trusted_labels": _trusted_file(tmp_path / "trusted.csv", task_ids, truth)}},
        "holdout.size": 6, "query.initial": 6, "query.batch": 4, "query.n_clusters": 2,
        "augment.enabled": False, "model.epochs": 5, "model.min_steps": 20,
        "annotators": {"kind": "labelstudio", "k": 1, "labelers": [
            {"kind": "benign", "count": 2, "pr": 0.0, "name": "attsim"}], "labelstudio": {
            "url": ls.url, "token_file": str(ls.token_file), "project_id": pid, "wait_seconds": 120,
            "poll_seconds": 0.5, "webhook": False, "status_seconds": 0.5}},
        "stop.budget": 10, "stop.max_iterations": 3})
    path = tmp_path / "attached.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sim = subprocess.Popen([sys.executable, "-m", "robust_al.cli", "labelstudio", "simulate", str(path)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        camp = Campaign.create(load_config(path), tmp_path / "run", echo=lines.append)
        camp.run(progress=False)
    finally:
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=60)
    assert "simulated users answering" in out, (out, err)
    ann = camp.store.annotations()
    # only the campaign's queue was answered (two users served one task at the same moment: both answers count);
    # a task of a batch queued ahead that was taken back (out of the queue) may stay unanswered
    queued = set(camp.store.ls_tasks(pid)["item_id"].astype(int))
    back = set((camp.store.get_meta("ls_taken_back") or {}).get(str(pid), []))
    assert queued - back <= set(ann["task"]) <= queued, ann
    assert len(ann) == camp.labels_used() >= 10
    names = camp.store.get_meta("ls_users") or {}
    assert {names.get(w, "") for w in ann["worker"]} <= {"attsim0@simulated.local", "attsim1@simulated.local"}
    # pr = 0: every answer is the task's truth
    assert all(lab == (1 if truth[task_ids.index(t)] == "pos" else 0) for t, lab in zip(ann["task"], ann["label"]))
    metric_lines = [ln for ln in lines if ln.startswith("iter ")]
    assert metric_lines and all("test acc n/a" in ln for ln in metric_lines), lines
    assert not any("nan" in ln for ln in lines)


# -- no server needed: what `trust` and `status` print -------------------------------------------------------
def test_trust_below_its_interval_says_why(tmp_path):
    """A trust under its own 90 % interval (before #27: `malicious0 0.502 [0.71, 0.86]` with no word of why)."""
    from robust_al.report.text import trust_text

    store = RunStore(tmp_path)
    store.set_meta("config", {"trust": {}, "annotators": {"k": 1}})
    # all labels: accuracy 0.79 [0.71, 0.86]; class 1 is right at most half the time, which caps the trust
    store.add_trust_event(0, "malicious0", -0.40, 0.50, "accuracy 0.790 [0.71, 0.86] over 40 labels, worst class 1 "
                          "<= 0.50", score=0.50, n=40, lower=0.71, upper=0.86, class_upper=0.50, tau=0.3, flags="")
    store.add_trust_event(1, "malicious0", -0.10, 0.40, "contradicted by relabel (conf 0.80)", item_id=5, score=0.50,
                          n=40, lower=0.71, upper=0.86, class_upper=0.50, tau=0.3, flags="")
    store.add_trust_event(0, "benign0", 0.0, 0.90, "accuracy 0.900 [0.80, 0.96] over 40 labels, worst class 3 <= "
                          "0.97", score=0.90, n=40, lower=0.80, upper=0.96, class_upper=0.97, tau=0.3, flags="")
    store.close()
    lines = {ln.split()[0]: ln for ln in trust_text(tmp_path).splitlines()[1:]}
    assert "[0.61, 0.76]" in lines["malicious0"]  # the interval shifted by the cut, the trust 0.40 below it
    assert ("below its interval: capped by its worst class 1, right at most 0.50 of the time; 1 re-examination "
            "cut(s) -0.10 (Fig. 3)") in lines["malicious0"]
    assert "below" not in lines["benign0"]


def test_metrics_without_a_test_split_print_na_not_nan():
    from robust_al.campaign.loop import format_metrics

    line = format_metrics(0, {"labels_used": 6, "secured_acc": 0.5, "test_acc": float("nan"), "trust": {"ls2": 0.9}},
                          10)
    assert "test acc n/a" in line and "nan" not in line


def test_install_prints_its_steps(tmp_path, monkeypatch):
    """`labelstudio install` says what it does and how long it has taken (before #27: silent for minutes)."""
    calls = []

    class FakeBuilder:
        def __init__(self, **kw):
            pass

        def create(self, vdir):
            (Path(vdir) / "bin").mkdir(parents=True)

    def fake_run(cmd, check, env):
        calls.append(cmd)
        if cmd[-1] == ls_server.LS_REQUIREMENT:
            time.sleep(0.3)
            (tmp_path / "venv" / "bin" / "label-studio").write_text("")

    monkeypatch.setattr(ls_server.venv, "EnvBuilder", FakeBuilder)
    monkeypatch.setattr(ls_server.subprocess, "run", fake_run)
    lines: list[str] = []
    ls_server.install(tmp_path / "venv", progress=lines.append)
    assert [ln.split(" ")[0] for ln in lines[:3]] == ["[1/3]", "[2/3]", "[3/3]"], lines
    assert "label-studio" in lines[2] and lines[-1].startswith("installed in ")
    assert len(calls) == 2
