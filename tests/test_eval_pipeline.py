"""The evaluation pipeline: repetitions on Ray give exactly what local processes give."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import robust_al.evaluate.experiment as ev

from conftest import tiny_config


def jobs(tmp_path, out: str, config: Path) -> list[dict]:
    over = ['annotators.labelers=[{"kind": "benign", "count": 10, "pr": 0.05}, '
            '{"kind": "malicious", "count": 1, "pr": 0.05, "target": 1, "to": 7}]']
    return [{"config": str(config), "overrides": over + ev.METHODS[m], "method": m, "rep": r, "seed": r,
             "target": 0.8, "poison": False, "run_dir": str(tmp_path / out / f"{m}-rep{r}")}
            for r in range(2) for m in ("proposed",)]


@pytest.mark.slow
def test_ray_and_processes_give_identical_results(tmp_path):
    pytest.importorskip("ray")
    import yaml

    cfg = tiny_config(**{"augment.enabled": False, "stop.budget": 90, "stop.max_iterations": 3,
                         "annotators.k": 1, "model.epochs": 3, "model.min_steps": 30, "holdout.size": 40})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    local = ev.run_all(jobs(tmp_path, "processes", config), workers=2, ray_address=None)
    remote = ev.run_all(jobs(tmp_path, "ray", config), workers=2, ray_address="local")
    assert len(local) == len(remote) == 2
    for a, b in zip(local, remote):
        for key in ("method", "seed", "curve", "trust", "labels_to_target", "final_acc"):
            assert a[key] == b[key], key
    # each repetition wrote its own folder, read back identically
    for j in jobs(tmp_path, "ray", config):
        assert json.loads((Path(j["run_dir"]) / "result.json").read_text())["curve"]
    # and the seeds really differ (the comparison is not vacuous)
    assert local[0]["trust"] != local[1]["trust"]


@pytest.mark.slow
def test_a_failing_repetition_leaves_the_others_intact(tmp_path):
    import yaml

    cfg = tiny_config(**{"augment.enabled": False, "stop.budget": 60, "stop.max_iterations": 2,
                         "annotators.k": 1, "model.epochs": 3, "model.min_steps": 30, "holdout.size": 40})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    good, bad = jobs(tmp_path, "runs", config)
    bad["overrides"] = bad["overrides"] + ["query.strategy=farthest"]  # fails validation in its process
    failures: list[dict] = []
    results = ev.run_all([good, bad], workers=2, ray_address=None, failures=failures)
    assert [r["seed"] for r in results] == [good["seed"]] and results[0]["curve"]
    assert len(failures) == 1 and failures[0]["run_dir"] == bad["run_dir"] and "farthest" in failures[0]["error"]
    assert (Path(good["run_dir"]) / "result.json").exists()


def test_the_config_crowd_is_kept_unless_a_scenario_is_asked_for():
    from robust_al.config import load_config

    own = ['annotators.labelers=[{"kind": "benign", "count": 4, "pr": 0.1}, '
           '{"kind": "malicious", "count": 1, "target": 3, "to": 5}]']
    cfg = load_config("configs/eval-cifar2.yaml", own)
    assert ev.scenario_overrides(cfg, "config") == ([], "the config's crowd is kept")

    class Args:  # what the command line passes
        config, set, question, scenario, malicious = "configs/eval-cifar2.yaml", own, "q1", "config", None
    over = ev.run_overrides(Args, "proposed")
    assert load_config(Args.config, over).annotators.labelers == cfg.annotators.labelers  # --set survives q1
    # a scenario replaces the simulated crowd, says so, and takes the attacked classes from the config
    assert ev.malicious_pair(cfg) == (3, 5)
    (o,), said = ev.scenario_overrides(cfg, "malicious")
    new = load_config(Args.config, [o]).annotators.labelers
    assert [(lab.kind, lab.count) for lab in new] == [("benign", 10), ("malicious", 1)]
    assert (new[1].target, new[1].to) == (3, 5) and "replaced" in said and '"count": 4' in said
    # a replayed crowd is kept; the attacker is injected next to it
    (o,), said = ev.scenario_overrides(load_config("configs/labelme.yaml"), "spammer")
    assert o.startswith("annotators.inject=") and "spammer" in o and "benign" not in o
