"""The README and the docs site: generated pages current, results summaries complete, no development-round dates.

Fast (no mkdocs build: CI runs ``mkdocs build --strict`` on its own)."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
README_MAX_LINES = 250
# a figure dated by a development round instead of a commit: "session 12", "sessions 7-8", "round 7", "sprint 3"
# (a command's --rounds 25 is not one)
DEV_ROUND = re.compile(r"(?<![-\w])(?:session|round|sprint)s?\s+\d+", re.IGNORECASE)
HEX = re.compile(r"[0-9a-f]{7,40}")


def _make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "pipelines" / "make_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def make_docs():
    return _make_docs()


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), *sorted(RESULTS.glob("*.json"))]


def _summaries() -> list[Path]:
    return sorted(RESULTS.glob("*.json"))


def test_generated_pages_are_current(make_docs, capsys):
    assert make_docs.main(["--check"]) == 0, capsys.readouterr().err


def test_check_names_a_stale_page(make_docs, monkeypatch, capsys):
    real = make_docs.generate

    def one_changed():
        pages = real()
        pages["docs/reference/config.md"] += "\nchanged\n"
        return pages

    monkeypatch.setattr(make_docs, "generate", one_changed)
    assert make_docs.main(["--check"]) == 1
    assert "docs/reference/config.md" in capsys.readouterr().err


def test_generated_pages_say_so(make_docs):
    for rel in make_docs.generate():
        text = (ROOT / rel).read_text()
        assert text.startswith(make_docs.MARK), f"{rel}: does not start with the generated-page comment"
        assert "python pipelines/make_docs.py" in text.splitlines()[0]


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"


def test_readme_keeps_the_ci_command():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Tests and checks (what CI runs)", 1)
    assert len(section) == 2, "README.md lost its '## Tests and checks (what CI runs)' section"
    blocks = re.findall(r"```[a-z]*\n(.*?)```", section[1], re.S)
    assert blocks and len(blocks[0].strip().splitlines()) == 1, "the section holds one fenced command line"
    assert "pytest" in blocks[0]


def test_no_development_round_dates():
    bad = []
    for path in _pages():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in DEV_ROUND.finditer(line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r}")
    assert not bad, "dated by a development round (name a commit instead):\n" + "\n".join(bad)


@pytest.mark.parametrize("path", _summaries(), ids=lambda p: p.name)
def test_results_summary_fields(path):
    s = json.loads(path.read_text())
    for key in ("title", "command", "commit", "seeds", "config", "versions", "figures"):
        assert key in s, f"{path.name}: no {key!r}"
    commands = s["command"] if isinstance(s["command"], list) else [s["command"]]
    assert commands and all(isinstance(c, str) and c.strip() for c in commands), f"{path.name}: empty command"
    assert isinstance(s["seeds"], list) and all(isinstance(x, int) for x in s["seeds"]), f"{path.name}: seeds"
    assert isinstance(s["config"], dict) and "file" in s["config"], f"{path.name}: config needs 'file' (or null)"
    assert isinstance(s["config"].get("overrides", []), list)
    assert isinstance(s["versions"], dict) and s["versions"], f"{path.name}: versions"
    assert s["figures"], f"{path.name}: no figures"
    for fig in s["figures"]:
        assert fig["columns"] and fig["rows"], f"{path.name}: a table without columns or rows"
        assert all(len(r) == len(fig["columns"]) for r in fig["rows"]), f"{path.name}: a row of the wrong width"
    for key in ("commit", "figures_commit"):
        if key in s:
            assert HEX.fullmatch(s[key]), f"{path.name}: {key} {s[key]!r} is not a commit hash"


def _in_git_checkout() -> bool:
    if not shutil.which("git"):
        return False
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--is-inside-work-tree"], capture_output=True,
                       text=True)
    return r.returncode == 0 and r.stdout.strip() == "true"


@pytest.mark.skipif(not _in_git_checkout(), reason="not a git checkout")
@pytest.mark.parametrize("path", _summaries(), ids=lambda p: p.name)
def test_results_commits_exist(path):
    s = json.loads(path.read_text())
    for key in ("commit", "figures_commit"):
        if key in s:
            r = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{s[key]}^{{commit}}"],
                               capture_output=True)
            assert r.returncode == 0, f"{path.name}: {key} {s[key]} is not a commit of this repository"


def _config_keys(model, prefix: str = "") -> list[str]:
    """Every dotted key of the campaign config, walked from the pydantic models (list items as ``key[]``)."""
    from pydantic import BaseModel

    def is_model(t) -> bool:
        return isinstance(t, type) and issubclass(t, BaseModel)

    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        tp = field.annotation
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if is_model(tp):
            keys += _config_keys(tp, f"{key}.")
        elif typing.get_origin(tp) is list and args and is_model(args[0]):
            keys += _config_keys(args[0], f"{key}[].")
        elif len(args) == 1 and is_model(args[0]):
            keys += _config_keys(args[0], f"{key}.")
    return keys


def test_config_reference_lists_every_key():
    from robust_al.config import CampaignConfig

    page = (DOCS / "reference" / "config.md").read_text()
    keys = _config_keys(CampaignConfig)
    assert len(keys) > 80
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert not missing, f"docs/reference/config.md lacks {missing}: run python pipelines/make_docs.py"


def test_config_reference_follows_a_new_key(make_docs, monkeypatch):
    """A field added to a model appears in the generated page."""
    from pydantic import Field, create_model

    from robust_al import config

    stop = create_model("StopConfig", __base__=config.StopConfig,
                        patience=(int, Field(3, ge=1, description="iterations without progress")))
    campaign = create_model("CampaignConfig", __base__=config.CampaignConfig,
                            stop=(stop, Field(default_factory=stop)))
    monkeypatch.setattr(config, "CampaignConfig", campaign)
    page = make_docs.config_page()
    assert "| `stop.patience` | int (≥ 1) | `3` | iterations without progress |" in page


def test_cli_reference_lists_every_option(make_docs):
    parser = make_docs.cli_parser()
    page = (DOCS / "reference" / "cli.md").read_text()

    def walk(p, prog):
        for name, _, sub in make_docs._subparsers(p):
            here = f"{prog} {name}"
            assert f"`{here}`" in page, f"docs/reference/cli.md lacks {here}"
            for a in sub._actions:
                for opt in a.option_strings:
                    if opt not in ("-h", "--help"):
                        assert opt in page, f"docs/reference/cli.md lacks {here} {opt}"
            walk(sub, here)

    walk(parser, "robust-al")
