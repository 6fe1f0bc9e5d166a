"""Configs: a bad key or value is reported by name; overrides apply."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robust_al.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def validate(path, overrides=None):
    """Everything about a config that can be checked without its data (what ``robust-al run`` checks before it
    loads anything): the schema (load_config), the loader's options against its signature (unknown or missing
    ``data.options`` keys), a backbone's keys, and that the budget buys an item and the simulated crowd has k
    labelers. Left to the start, as they need the data: holdout.size vs the trusted labels, a replayed crowd's
    size, files named in data.options."""
    from robust_al.data.backbone import BACKBONE_KEYS
    from robust_al.data.loaders import check_loader_options, check_options

    cfg = load_config(path, overrides)
    if cfg.data.name != "labelstudio":  # an attached project is the pool: its tasks are read at the start
        check_loader_options(cfg.data.name, cfg.data.options)
    if "backbone" in cfg.data.options:
        check_options(cfg.data.options["backbone"], BACKBONE_KEYS, "data.options.backbone",
                      required=("arch", "weights"))
    assert cfg.stop.budget >= cfg.annotators.k, "stop.budget buys no item"
    if cfg.annotators.kind == "simulated":
        assert sum(lab.count for lab in cfg.annotators.labelers) >= cfg.annotators.k, "annotators.k > the crowd"
    return cfg


def test_every_shipped_config_is_found():
    assert len(CONFIGS) >= 11 and {p.name for p in CONFIGS} >= {"digits.yaml", "cifar2.yaml", "labelme.yaml",
                                                                "labelstudio.yaml", "imagefolder.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates_without_its_data(path, tmp_path, monkeypatch):
    # no data set anywhere: an empty datasets folder, and relative paths (data/photos, results/...) resolve
    # under an empty working directory
    monkeypatch.setenv("ROBUST_AL_DATASETS", str(tmp_path / "no-datasets"))
    monkeypatch.chdir(tmp_path)
    cfg = validate(path)
    assert cfg.model_dump() == validate(path).model_dump()  # a pure function of the file
    assert not any(tmp_path.iterdir())  # validating wrote nothing


@pytest.mark.parametrize("edit, key", [
    ({"query": {"stratgy": "maxmin"}}, "query.stratgy"),                 # a typo'd key
    ({"stop": {"budget": -5}}, "stop.budget"),                           # a bad value
    ({"data": {"options": {"n_trian": 3000}}}, "data.options.n_trian"),  # a typo'd loader option
    ({"annotators": {"k": 50}}, "annotators.k"),                         # more labelers per item than the crowd
])
def test_a_broken_shipped_config_is_refused_naming_the_key(tmp_path, edit, key):
    raw = yaml.safe_load((CONFIGS[0].parent / "cifar2.yaml").read_text())
    for section, values in edit.items():
        node = raw.setdefault(section, {})
        for k, v in values.items():
            if isinstance(v, dict):
                node.setdefault(k, {}).update(v)
            else:
                node[k] = v
    p = tmp_path / "broken.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises((ConfigError, ValueError, AssertionError), match=key.replace(".", r"\.")):
        validate(p)


@pytest.mark.parametrize("text, line", [
    ("query:\n  stratgy: maxmin\n", "query.stratgy = 'maxmin': Extra inputs are not permitted"),
    ("model:\n  epochs: lots\n", "model.epochs = 'lots': Input should be a valid integer"),
    ("annotators:\n  labelers:\n    - {kind: benign, count: 2, pr: 1.5}\n", "annotators.labelers.0.pr = 1.5: "),
])
def test_a_bad_key_or_value_is_named_on_one_line_with_its_value(tmp_path, text, line):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg.splitlines()[0]
    named = [ln for ln in msg.splitlines() if line.split(" = ")[0] in ln]
    assert len(named) == 1 and line in named[0], msg  # the dotted key, its value and why, on one line


def test_the_cli_refuses_a_typo_in_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("query:\n  stratgy: maxmin\n")
    out = subprocess.run([sys.executable, "-m", "robust_al.cli", "run", str(p), "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and not (tmp_path / "r").exists()
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and "query.stratgy = 'maxmin'" in out.stderr


def test_bad_value_names_key_and_value(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("query:\n  strategy: farthest\nstop:\n  budget: -5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "query.strategy = 'farthest'" in msg and "maxmin" in msg
    assert "stop.budget = -5" in msg


def test_malicious_labeler_needs_its_classes():
    with pytest.raises(ConfigError, match="annotators.labelers.0"):
        load_config(data={"annotators": {"labelers": [{"kind": "malicious", "count": 1}]}})


def test_overrides_apply_and_are_typed():
    cfg = load_config("configs/digits.yaml", ["query.batch=7", "trust.routing=false", "holdout.refresh_every=3"])
    assert cfg.query.batch == 7 and cfg.trust.routing is False and cfg.holdout.refresh_every == 3
    with pytest.raises(ConfigError, match="key=value"):
        load_config("configs/digits.yaml", ["query.batch"])


def test_cli_reports_a_bad_config_by_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  epochs: lots\n")
    out = subprocess.run([sys.executable, "-m", "robust_al.cli", "run", str(p), "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "model.epochs = 'lots'" in out.stderr
    assert not (tmp_path / "r").exists()


def test_missing_labelstudio_extra_is_a_one_line_hint(tmp_path, monkeypatch, capsys):
    """A config asking for Label Studio without the labelstudio extra installed: an install hint, no traceback."""
    import sys

    import yaml

    from robust_al.cli import main

    monkeypatch.setitem(sys.modules, "label_studio_sdk", None)  # as if not installed
    cfg = tmp_path / "ls.yaml"
    cfg.write_text(yaml.safe_dump({"annotators": {"kind": "labelstudio", "labelstudio": {"url": "http://127.0.0.1:9"}}}))
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'error: Label Studio support needs the labelstudio extra: pip install "robust-al[labelstudio]"'
    assert not (tmp_path / "run" / "campaign.sqlite").exists()


def test_loading_and_validating_a_config_imports_no_torch():
    code = ("import sys; from robust_al.config import load_config; "
            "load_config(data={'model': {'learner': 'malc'}}); "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    subprocess.run([sys.executable, "-c", code], check=True)
    try:
        load_config(data={"model": {"learner": "nonsense"}})
    except ConfigError as e:
        assert "malc" in str(e)
    else:
        raise AssertionError("an unknown learner was accepted")
