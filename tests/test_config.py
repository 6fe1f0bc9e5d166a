"""Configs: a bad key or value is reported by name; overrides apply."""
from __future__ import annotations

import subprocess
import sys

import pytest

from robust_al.config import ConfigError, load_config


def test_shipped_configs_validate():
    for name in ("digits", "cifar2", "labelme", "labelstudio"):
        load_config(f"configs/{name}.yaml")


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("query:\n  stratgy: maxmin\n")
    with pytest.raises(ConfigError, match=r"query\.stratgy"):
        load_config(p)


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
