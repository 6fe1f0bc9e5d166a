"""HTML report of evaluation results: synthetic summary.json / result.json trees, and one real run of the
evaluation pipeline (its files are what the report reads)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robust_al.cli import main
from robust_al.report import write_report
from robust_al.report.html import markdown_table_html, mean_curve

VERSIONS = {"robust_al": "0.1.0", "torch": "2.13.0", "numpy": "1.99.7"}


def _summary(question: str, scenario: str, methods: list[str], seeds: list[int], **extra) -> dict:
    return {"question": question, "scenario": scenario, "dataset": "cifar2", "config": "configs/eval-cifar2.yaml",
            "overrides": ["annotators.k=1"], "target": 0.9137, "seeds": seeds, "methods": methods,
            "versions": VERSIONS, "wall_seconds": 812.3,
            "table": "| Method | Mean | never reached |\n|---|---:|---:|\n"
                     + "\n".join(f"| {m} | 300.0 | 0 |" for m in methods), **extra}


def _result(method: str, rep: int, curve: list, kinds: dict | None = None, **extra) -> dict:
    hit = next((labels for labels, acc in curve if acc >= 0.9137), None)
    kinds = kinds or {f"benign{i}": "benign" for i in range(3)}
    trust = {w: [[i, 100 * (i + 1), 0.9 - (0.3 * i if k != "benign" else 0)] for i in range(3)]
             for w, k in kinds.items()}
    return {"method": method, "rep": rep, "seed": rep, "curve": curve, "labels_to_target": hit,
            "final_acc": curve[-1][1], "trust": trust, "kinds": kinds, **extra}


def _write(path: Path, data: dict | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    # Q3: poisoning, two methods x two repetitions, each run with detection scores
    q3 = root / "cifar2" / "q3-poison"
    _write(q3 / "summary.json", _summary("Q3", "poison", ["proposed", "random"], [0, 1], extra_tables={
        "Detection of injected poisons": "| Detector | Precision |\n|---|---:|\n| secured check | 1.00 |"}))
    for m in ("proposed", "random"):
        for rep in (0, 1):
            _write(q3 / f"{m}-rep{rep}" / "result.json", _result(
                m, rep, [[100, 0.6], [200, 0.85], [300, 0.93 + 0.01 * rep]],
                poison={"success": m == "random" or rep == 1, "labeled": 10 + rep},
                detection={"secured check": {"precision": 1.0, "recall": 0.5, "flagged": 6},
                           "activation clustering": {"precision": 0.2, "recall": 0.8 - 0.1 * rep,
                                                     "flagged": 40}}))
    # Q2: a malicious labeler; 'random' has one run that never reaches the target and one that stops early;
    # 'entropy' has a single repetition
    q2 = root / "cifar2" / "q2-malicious"
    _write(q2 / "summary.json", _summary("Q2", "malicious", ["proposed", "random", "entropy"], [0, 1]))
    kinds = {"benign0": "benign", "benign1": "benign", "replay0": "replayed", "evil-7": "malicious",
             "spam0": "spammer"}
    _write(q2 / "proposed-rep0" / "result.json", _result("proposed", 0, [[100, 0.7], [200, 0.95]], kinds))
    _write(q2 / "proposed-rep1" / "result.json", _result("proposed", 1, [[100, 0.72], [200, 0.93]], kinds))
    _write(q2 / "random-rep0" / "result.json", _result("random", 0, [[100, 0.5], [200, 0.6], [300, 0.7]], kinds))
    _write(q2 / "random-rep1" / "result.json", _result("random", 1, [[100, 0.55], [200, 0.92]], kinds))
    _write(q2 / "entropy-rep0" / "result.json", _result("entropy", 0, [[100, 0.6]], kinds))
    return root


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_report_names_methods_labelers_settings_and_figures(results: Path):
    index = write_report(results)
    assert index == results / "report" / "index.html"
    page = index.read_text()
    for name in ("proposed", "random", "entropy", "evil-7", "spam0", "Q2", "Q3", "malicious", "poison"):
        assert name in page, name
    assert "0.9137" in page and "configs/eval-cifar2.yaml" in page and "annotators.k=1" in page
    assert "seeds 0, 1" in page
    for package, version in VERSIONS.items():
        assert f"<td>{package}</td>" in page and version in page
    assert "13 min 32 s" in page  # wall time
    # markdown tables became HTML tables, right-aligned where the separator said so
    assert "<th>Method</th>" in page and "Detection of injected poisons" in page
    assert '<td style="text-align:right">1.00</td>' in page
    # one run of 'random' in Q2 never reached the target: counted in the runs table
    assert re.search(r"<td>random</td><td class=\"num\">2</td><td>1/2</td><td class=\"num\">1</td>", page)
    # detection and poison only for the section that has them
    q2_part = page[page.index("Q2 · scenario malicious · cifar2</h2>"):page.index("Q3 · scenario poison · cifar2</h2>")]
    q3_part = page[page.index("Q3 · scenario poison · cifar2</h2>"):]
    assert "Poison detection" not in q2_part and "Poisoning attack" not in q2_part
    assert "Poison detection" in q3_part and "activation clustering" in q3_part
    assert "<td>proposed</td><td class=\"num\">2</td><td>1/2</td><td class=\"num\">50%</td>" in q3_part
    assert "<td>random</td><td class=\"num\">2</td><td>2/2</td><td class=\"num\">100%</td>" in q3_part
    imgs = _images(page)
    assert len(imgs) == 2 * 3 + 1  # curves, budget, trust per section; detection for Q3
    for src in imgs:
        png = index.parent / src
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
        assert png.stat().st_size > 1000
    # the table of contents links every section
    for anchor in re.findall(r'<h2 id="([^"]+)">', page):
        assert f'href="#{anchor}"' in page
    assert "http" not in page and "<script" not in page  # self-contained


def test_never_reached_count_is_in_the_budget_tick_label(results: Path, monkeypatch):
    import matplotlib.figure

    # the tick labels are drawn into the PNG: read them off each budget figure as it is saved
    labels: dict[str, list[str]] = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, path, **kw):
        if str(path).endswith("-budget.png"):
            labels[Path(path).name] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        return real_savefig(fig, path, **kw)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    write_report(results)
    assert labels == {"01-cifar2-q2-malicious-budget.png": ["proposed", "random (1 never)", "entropy (1 never)"],
                      "02-cifar2-q3-poison-budget.png": ["proposed", "random"]}


def test_cli_writes_to_out_and_prints_the_index(results: Path, tmp_path: Path, capsys):
    out = tmp_path / "elsewhere"
    assert main(["report", str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed) == out / "index.html"
    page = Path(printed).read_text()
    assert all((out / src).stat().st_size > 0 for src in _images(page))
    assert not (results / "report").exists()


def test_cli_as_a_module(results: Path):
    done = subprocess.run([sys.executable, "-m", "robust_al.cli", "report", str(results)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(results / "report" / "index.html")


def test_malformed_summary_names_the_file(results: Path, capsys):
    bad = results / "cifar2" / "q2-malicious" / "summary.json"
    bad.write_text('{"question": "Q2", "target": ')
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        write_report(results)
    assert main(["report", str(results)]) != 0
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid JSON" in err and "summary.json written by" in err
    assert not (results / "report").exists()  # nothing half-written


def test_malformed_result_and_missing_inputs(results: Path, tmp_path: Path):
    bad = results / "cifar2" / "q3-poison" / "random-rep1" / "result.json"
    bad.write_text(json.dumps({"method": "random", "curve": [[100]]}))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*curve"):
        write_report(results)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a JSON object"):
        write_report(results)
    with pytest.raises(FileNotFoundError, match="no such results directory"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no summary.json found"):
        write_report(tmp_path / "empty")


def test_sparse_section_single_rep_without_optional_keys(tmp_path: Path):
    root = tmp_path / "r"
    _write(root / "summary.json", {"question": "Q1", "table": "| a | b |\n|---|---|\n| <x> | 1 |"})
    _write(root / "maxmin-rep0" / "result.json", {"method": "maxmin", "curve": [[50, 0.4], [100, 0.5]],
                                                  "labels_to_target": None})
    page = write_report(root).read_text()
    assert "&lt;x&gt;" in page and "<x>" not in page  # cells are escaped
    assert "maxmin" in page and "target accuracy -" in page
    assert all((root / "report" / src).stat().st_size > 0 for src in _images(page))
    assert "Trust" not in page  # no trust data, no trust figure


def test_mean_curve_only_over_the_range_every_run_reached():
    grid, mean, lo, hi = mean_curve([[(100, 0.5), (300, 0.7)], [(100, 0.6), (200, 0.8), (400, 0.9)]])
    assert grid.tolist() == [100, 200, 300]
    assert np.allclose(mean, [0.55, (0.6 + 0.8) / 2, (0.7 + 0.85) / 2])
    assert np.allclose(lo, [0.5, 0.6, 0.7]) and np.allclose(hi, [0.6, 0.8, 0.85])


def test_markdown_table_alignment_and_escaping():
    out = markdown_table_html("# Title\n| A | B \\| C |\n|:--|--:|\n| **best** | <b> |")
    assert "<p>Title</p>" in out
    assert "<th>A</th><th>B | C</th>" in out
    assert '<td style="text-align:right">&lt;b&gt;</td>' in out
    assert "<strong>best</strong>" in out


def test_the_runner_writes_what_the_report_reads_and_refuses_what_it_would_refuse(tmp_path: Path):
    """One schema (robust_al.report.schema) for both sides: the evaluation pipeline's own files, end to end, are
    read by the report; a record the reader would refuse is refused by the writer, before anything is written."""
    from robust_al.report.schema import read_result, write_result, write_summary

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, str(root / "pipelines" / "robust_al_eval.py"), "q1",
                           str(root / "configs" / "digits.yaml"), "--methods", "random", "random-filter", "--reps", "1",
                           "--workers", "1", "--target", "0.9", "--set", "stop.budget=120", "--set", "model.epochs=3",
                           "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    page = write_report(out).read_text()
    assert "random" in page
    result = json.loads(next(out.rglob("result.json")).read_text())
    assert read_result(next(out.rglob("result.json"))).curve[-1][0] == 120

    for bad, key in (({**result, "final_acc": "0.9"}, "final_acc"), ({**result, "curve": None}, "curve"),
                     ({k: v for k, v in result.items() if k != "trust"}, "trust")):
        with pytest.raises(ValueError, match=f"result.json: .*'{key}'"):
            write_result(tmp_path / "bad", bad)
        assert not (tmp_path / "bad" / "result.json").exists()
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    # the filter's cost in labels, paired with the method without it; the code's commit beside the figures
    assert any(k.startswith("Paired by seed, random-filter against random") for k in summary["extra_tables"])
    assert summary["commit"] is None or len(summary["commit"]) == 40
    with pytest.raises(ValueError, match="summary.json: 'target' must be a number"):
        write_summary(tmp_path / "summary.json", {**summary, "target": "0.9"})
    assert not (tmp_path / "summary.json").exists()
