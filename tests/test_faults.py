"""Fault injection: a real ``kill -9`` at named points of a campaign, then ``--resume``.

Every resumed run must equal the uninterrupted one: the same stored answers, labeled set, trust table,
metrics and final weights (bit for bit). The points (``robust_al.faults.kill_point``) cover each step that
writes: the stored batch, the k-th of n answers (query, and the overlap's in a run of its own), training, between
augmentation writes, mid trust update, before and after the checkpoint, the re-examination, and the last,
budget-limited iteration (killed after some and after all of its answers); plus a resume that is itself killed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config

from robust_al.campaign import VOLATILE_METRICS
from robust_al.store import RunStore, progress

pytestmark = pytest.mark.slow  # each test runs one to three whole campaigns in subprocesses

# a liar on 90 % of its items and re-examination on any drop of S accuracy (so re-examinations happen), and
# a budget that cuts the last iteration short. Seed 1: since training weighs labels by trust (model.targets
# trust), seeds 0 and 3 no longer drop S accuracy at all (the liar's items count for little); 1 re-examines at
# iteration 4
CONFIG = tiny_config(**{"seed": 1,
    "annotators.k": 1, "annotators.labelers": [{"kind": "benign", "count": 5, "pr": 0.0},
                                               {"kind": "colluding", "count": 1, "rate": 0.9, "pr": 0.0,
                                                "name": "liar"}],
    "trust.epsilon": 0.0, "trust.significance": None, "query.initial": 60, "query.batch": 30,
    "stop.budget": 235, "stop.max_iterations": 8, "model.epochs": 5})


def _cli(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ROBUST_AL_KILL_AT"}
    if kill_at:
        env["ROBUST_AL_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "robust_al.cli", "run", *args, "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=900)


def snapshot(run_dir: Path) -> dict:
    """What a resumed run must reproduce exactly."""
    store = RunStore(run_dir)
    ann = store.annotations()
    cols = ["task", "worker", "label", "iteration", "purpose"]
    metrics = [{k: v for k, v in m.items() if k not in VOLATILE_METRICS} for m in store.metrics()]
    last = store.last_iteration()
    weights = store.iteration_state(last)[2]
    out = {"annotations": sorted(map(tuple, ann[cols].to_numpy().tolist())), "status": store.statuses(),
           "trust": metrics[-1]["trust"], "metrics": metrics, "weights": weights,
           "augmentations": len(store.augmentations((64,))[0]),
           "trust_events": store.trust_events()[["iteration", "worker", "trust", "reason"]].values.tolist()}
    store.close()
    return out


def assert_same(got: dict, want: dict) -> None:
    for key in ("annotations", "status", "trust", "metrics", "augmentations", "trust_events"):
        assert got[key] == want[key], key
    assert got["weights"].keys() == want["weights"].keys()
    for name, w in want["weights"].items():
        assert torch.equal(got["weights"][name], w), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    r = _cli([str(cfg), "--run-dir", str(root / "whole")])
    assert r.returncode == 0, r.stdout + r.stderr
    snap = snapshot(root / "whole")
    store = RunStore(root / "whole")
    per_iter = store.annotations().groupby(["iteration", "purpose"]).size().to_dict()
    reexamined = sorted({it for it, p in per_iter if p == "reexam"})
    store.close()
    return cfg, snap, per_iter, reexamined


def _points(per_iter: dict, reexamined: list[int]) -> list[str]:
    last = max(it for it, _ in per_iter)
    points = ["batch-stored@2", "answer:query@2:20", "training@2", "augmentation-written@1", "trust-event@2:2",
              "before-checkpoint@1", "after-checkpoint@1",
              f"answer:query@{last}:{per_iter[(last, 'query')] // 2}",  # the last, budget-limited iteration
              f"answer:query@{last}:{per_iter[(last, 'query')]}"]  # ... after all of its answers
    if reexamined:
        points.append(f"answer:reexam@{reexamined[0]}:2")
    return points


def test_the_reference_run_exercises_every_point(reference):
    _, snap, per_iter, reexamined = reference
    last = max(it for it, _ in per_iter)
    assert reexamined, "no re-examination happened: the config must trigger one"
    assert snap["metrics"][-1]["stop"].startswith("label budget spent")
    assert per_iter[(last, "query")] < CONFIG["query"]["batch"]  # budget-limited


@pytest.mark.parametrize("index", range(10))
def test_kill_9_at_a_named_point_then_resume_is_identical(reference, tmp_path, index):
    cfg, want, per_iter, reexamined = reference
    points = _points(per_iter, reexamined)
    if index >= len(points):
        pytest.skip("no such point in this run")
    point = points[index]
    run_dir = tmp_path / "run"
    killed = _cli([str(cfg), "--run-dir", str(run_dir)], kill_at=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stdout}{killed.stderr}"
    _resume_to_the_end(run_dir, want)


def test_kill_9_among_the_overlap_answers_then_resume_is_identical(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "annotators": {**CONFIG["annotators"], "overlap": 0.3},
                                   "stop": {**CONFIG["stop"], "max_iterations": 3}}))
    assert _cli([str(cfg), "--run-dir", str(tmp_path / "whole")]).returncode == 0
    want = snapshot(tmp_path / "whole")
    assert any(p == "overlap" for _, _, _, _, p in want["annotations"])
    killed = _cli([str(cfg), "--run-dir", str(tmp_path / "run")], kill_at="answer:overlap@2:2")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    _resume_to_the_end(tmp_path / "run", want)


def _resume_to_the_end(run_dir: Path, want: dict) -> None:
    resumed = _cli(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_same(snapshot(run_dir), want)


def test_a_resume_killed_again_still_ends_identical(reference, tmp_path):
    cfg, want, _, _ = reference
    run_dir = tmp_path / "run"
    assert _cli([str(cfg), "--run-dir", str(run_dir)], kill_at="answer:query@2:15").returncode == -signal.SIGKILL
    assert _cli(["--resume", str(run_dir)], kill_at="training@2").returncode == -signal.SIGKILL
    _resume_to_the_end(run_dir, want)


def test_a_second_resume_exits_at_once_naming_the_first(reference, tmp_path):
    cfg, _, _, _ = reference
    run_dir = tmp_path / "run"
    assert _cli([str(cfg), "--run-dir", str(run_dir)], kill_at="answer:query@1:1").returncode == -signal.SIGKILL
    env = {**os.environ, "ROBUST_AL_KILL_AT": "nowhere"}
    first = subprocess.Popen([sys.executable, "-m", "robust_al.cli", "run", "--resume", str(run_dir),
                              "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lock = run_dir / "campaign.lock"
        import time

        deadline = time.time() + 120
        while time.time() < deadline:  # until the first holds the lock (its PID is in the file)
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.05)
        before = snapshot(run_dir)["annotations"]
        second = _cli(["--resume", str(run_dir)])
        assert second.returncode == 3
        assert f"in use by process {first.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert set(before) <= set(snapshot(run_dir)["annotations"])
    finally:
        first.kill()
        first.wait()
    # a lock left by a killed process never blocks
    assert _cli(["--resume", str(run_dir)]).returncode == 0


def test_sigterm_stops_between_writes_with_a_resume_hint(reference, tmp_path):
    cfg, want, _, _ = reference
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "robust_al.cli", "run", str(cfg), "--run-dir", str(run_dir),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    deadline = time.time() + 300
    while time.time() < deadline:  # until iteration 0 is complete; read-only, so the test writes nothing
        if progress(run_dir)["completed"]:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert f"robust-al run --resume {run_dir}" in err and "Traceback" not in err
    _resume_to_the_end(run_dir, want)


def test_kill_9_in_a_campaign_that_queues_the_next_batch_ahead_then_resume_is_identical(tmp_path):
    """``annotators.lookahead: 1`` (Label Studio's default): batch i+1 is chosen with F_{i-1} and stored while
    batch i is answered; the model's opinion on it is F_{i-1}'s, which a resumed run no longer holds, so it must
    survive the kill. Killed while choosing ahead, among the answers, mid training and around the checkpoint, each
    resumed run ends identical to the uninterrupted one, the model's stored opinions included."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "annotators": {**CONFIG["annotators"], "lookahead": 1,
                                                            "overlap": 0.3},
                                   "aggregation": {"model_as_worker": True},
                                   "stop": {**CONFIG["stop"], "max_iterations": 5}}))
    assert _cli([str(cfg), "--run-dir", str(tmp_path / "whole")]).returncode == 0
    want = snapshot(tmp_path / "whole")
    want_pred = RunStore(tmp_path / "whole").predictions()
    assert [m["ahead_items"] for m in want["metrics"]][:3] == [30, 30, 30]
    for point in ("ahead-stored@2", "answer:query@2:10", "answer:overlap@1:2", "before-checkpoint@1",
                  "after-checkpoint@2"):
        run_dir = tmp_path / point.replace(":", "_").replace("@", "_")
        killed = _cli([str(cfg), "--run-dir", str(run_dir)], kill_at=point)
        assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stdout}{killed.stderr}"
        _resume_to_the_end(run_dir, want)
        assert RunStore(run_dir).predictions().equals(want_pred), point


def test_kill_9_after_the_poison_filter_removed_items_then_resume_is_identical(tmp_path):
    """The filter's removals (statuses and the ``filtered`` table) are derived: killed while training on what it
    kept, the resumed run judges the batch again and ends with the same removals, reasons and model."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "poison_filter": {"enabled": True, "rules": ["trusted-knn", "clump"]},
                                   "stop": {**CONFIG["stop"], "max_iterations": 4}}))
    assert _cli([str(cfg), "--run-dir", str(tmp_path / "whole")]).returncode == 0
    want = snapshot(tmp_path / "whole")
    removed = RunStore(tmp_path / "whole").filtered()
    assert len(removed) and 2 in set(removed["iteration"]), "the filter removed nothing at iteration 2"
    killed = _cli([str(cfg), "--run-dir", str(tmp_path / "run")], kill_at="training@2")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    _resume_to_the_end(tmp_path / "run", want)
    assert RunStore(tmp_path / "run").filtered().equals(removed)
