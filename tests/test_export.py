"""Results out of a campaign: export, predict, the one-campaign report, all read from one tiny digits run."""
from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import tiny_config
from robust_al.campaign import Campaign
from robust_al.cli import main
from robust_al.config import load_config
from robust_al.export import export_run, predict_file
from robust_al.report.campaign import trust_figure, trust_history, write_campaign_report
from robust_al.store import RunStore
from robust_al.trust import TrustLedger

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished campaign with one label per item, so that some inferred labels are wrong."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    camp = Campaign.create(load_config(data=tiny_config(**{"annotators.k": 1, "stop.budget": 150})), run_dir,
                           echo=None)
    camp.run(progress=False)
    camp.store.checkpoint()  # so that a copied run directory is complete
    return camp


def _truth(camp: Campaign) -> dict[str, str]:
    return {str(k): camp.pool.class_names[y] for k, y in zip(camp.pool.keys, camp.pool.y)}


def test_labels_csv_accuracy_is_the_runs_label_accuracy(run, tmp_path):
    out = tmp_path / "ex"
    export_run(run.run_dir, "csv", out)
    labels = pd.read_csv(out / "labels.csv", dtype={"item": str, "label": str})
    last = run.store.metrics()[-1]
    passed = labels[labels["status"] == "labeled"]
    assert len(passed) == last["labeled_items"]
    acc = float((passed["label"] == passed["item"].map(_truth(run))).mean())
    assert acc == pytest.approx(last["label_acc"], abs=1e-12)
    assert 0.5 < acc < 1.0  # a campaign where inference gets some labels wrong, so equality means something
    assert (passed["n_answers"] >= 1).all() and passed["confidence"].between(0, 1).all()
    assert (labels["status"] == "holdout").sum() == 60  # S's trusted labels, with no answers
    assert (labels.loc[labels["status"] == "holdout", "n_answers"] == 0).all()


def test_annotations_csv_holds_exactly_the_stored_answers(run, tmp_path):
    export_run(run.run_dir, "csv", tmp_path / "csv")
    export_run(run.run_dir, "crowdkit", tmp_path / "ck")
    ann = pd.read_csv(tmp_path / "csv" / "annotations.csv", dtype={"task": str, "label": str})
    stored = run.store.annotations()
    keys = dict(zip(run.pool.ids.tolist(), run.pool.keys))
    expected = sorted((keys[t], w, run.pool.class_names[lab], it, p)
                      for t, w, lab, it, p in stored[["task", "worker", "label", "iteration", "purpose"]].itertuples(
                          index=False))
    got = sorted(ann[["task", "worker", "label", "iteration", "purpose"]].itertuples(index=False, name=None))
    assert got == expected
    assert pd.to_datetime(ann["time"]).notna().all()
    ck = pd.read_csv(tmp_path / "ck" / "annotations.csv", dtype=str)
    assert list(ck.columns) == ["task", "worker", "label"]  # crowd-kit's exact long format
    assert sorted(ck.itertuples(index=False, name=None)) == sorted(e[:3] for e in expected)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["annotations.csv"]


def test_workers_csv_trust_is_robust_al_trusts(run, tmp_path, capsys):
    export_run(run.run_dir, "csv", tmp_path)
    workers = pd.read_csv(tmp_path / "workers.csv").set_index("worker")
    assert main(["trust", str(run.run_dir)]) == 0
    printed = {ln.split()[0]: float(ln.split()[1]) for ln in capsys.readouterr().out.splitlines()[1:]}
    assert printed == {w: round(t, 3) for w, t in workers["trust"].items()}
    ledger = TrustLedger(list(workers.index), run.store).table()
    assert workers["trust"].to_dict() == pytest.approx(ledger, abs=1e-12)
    counts = run.store.annotations().groupby("worker").size()
    assert workers["labels"].to_dict() == counts.to_dict()
    assert not workers["routed_out"].any()


def test_label_studio_display_names_in_trust_and_workers(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    RunStore(copy).set_meta("ls_users", {"malicious0": "Mallory <mallory@example.org>"})
    assert main(["trust", str(copy)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("malicious0"))
    assert "Mallory <mallory@example.org>" in line
    export_run(copy, "jsonl")
    rows = {r["worker"]: r for r in map(json.loads, (copy / "export" / "workers.jsonl").read_text().splitlines())}
    assert rows["malicious0"]["name"] == "Mallory <mallory@example.org>" and rows["benign0"]["name"] == ""


def test_labelstudio_format_predicts_the_inferred_labels(run, tmp_path):
    export_run(run.run_dir, "labelstudio", tmp_path)
    export_run(run.run_dir, "csv", tmp_path / "csv")
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    labels = pd.read_csv(tmp_path / "csv" / "labels.csv", dtype={"item": str, "label": str})
    want = dict(zip(labels["item"], labels["label"]))
    assert len(tasks) == len(want)
    for t in tasks:
        (r,) = t["predictions"][0]["result"]
        assert (r["from_name"], r["to_name"], r["type"]) == ("label", "item", "choices")
        assert r["value"]["choices"] == [want[t["data"]["item"]]]


def test_model_pt_in_a_fresh_process_predicts_what_the_run_does(run, tmp_path):
    out = tmp_path / "ex"
    export_run(run.run_dir, "csv", out)
    X = run.pool.X[:200]
    np.save(tmp_path / "x.npy", X)
    code = ("import sys, numpy as np, torch; from robust_al.export import load_model; "
            "sd = torch.load(sys.argv[1] + '/model.pt', weights_only=True); m = load_model(sys.argv[1]); "
            "p = torch.softmax(m(torch.as_tensor(np.load(sys.argv[2]))), 1).detach().numpy(); "
            "np.save(sys.argv[3], p); print(len(sd))")
    res = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), run.learner.predict_proba(X))
    info = json.loads((out / "model.json").read_text())
    assert info["input_shape"] == [64] and info["class_names"] == run.pool.class_names
    assert info["model"]["hidden"] == [64]


def test_predict_on_a_npy_file(run, tmp_path):
    X = run.dataset.test.X[:50]
    np.save(tmp_path / "new.npy", X)
    assert main(["predict", str(run.run_dir), str(tmp_path / "new.npy"), "--out", str(tmp_path / "p.csv")]) == 0
    df = pd.read_csv(tmp_path / "p.csv", dtype={"label": str})
    proba = run.learner.predict_proba(X)
    assert list(df.columns) == ["item", "label", "confidence"] + [f"p_{c}" for c in run.pool.class_names]
    assert df["item"].tolist() == list(range(50))
    assert df["label"].tolist() == [run.pool.class_names[k] for k in proba.argmax(1)]
    np.testing.assert_allclose(df[[f"p_{c}" for c in run.pool.class_names]].to_numpy(), proba, atol=1e-6)
    # a .csv with a key column gives the same predictions under those keys
    pd.DataFrame(X).assign(key=[f"x{i}" for i in range(50)])[["key", *range(64)]].to_csv(tmp_path / "new.csv",
                                                                                         index=False)
    df2 = pd.read_csv(predict_file(run.run_dir, tmp_path / "new.csv", tmp_path / "p2.csv"), dtype={"label": str})
    assert df2["item"].tolist() == [f"x{i}" for i in range(50)] and df2["label"].tolist() == df["label"].tolist()
    # ... and so does a bare .csv without a header line (its first row is data, not column names)
    pd.DataFrame(X).to_csv(tmp_path / "bare.csv", index=False, header=False)
    df3 = pd.read_csv(predict_file(run.run_dir, tmp_path / "bare.csv", tmp_path / "p3.csv"), dtype={"label": str})
    assert df3["label"].tolist() == df["label"].tolist()


def test_predict_with_the_wrong_width_names_the_file_and_the_width(run, tmp_path, capsys):
    bad = tmp_path / "narrow.npy"
    np.save(bad, np.zeros((3, 63), np.float32))
    assert main(["predict", str(run.run_dir), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "width 63" in err and "width 64" in err


def test_export_of_a_directory_without_a_campaign_is_a_one_line_error(tmp_path, capsys):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert main(["export", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(empty) in err
    assert list(empty.iterdir()) == []  # nothing was created there


def test_report_writes_figures_and_the_trust_plot_draws_the_threshold(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    assert main(["report", str(copy)]) == 0
    index = Path(capsys.readouterr().out.strip())
    assert index == copy / "report" / "index.html"
    page = index.read_text()
    pngs = sorted(p.name for p in index.parent.glob("*.png"))
    assert pngs == ["accuracy.png", "checks.png", "classes.png", "labels_per_labeler.png", "trust.png"]
    assert all(f'src="{p}"' in page for p in pngs) and "malicious0" in page
    assert all((index.parent / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    store = RunStore(copy)
    history = trust_history(store, [m["iteration"] for m in store.metrics()], 0.9)
    assert list(history.index) == [m["iteration"] for m in store.metrics()]
    fig = trust_figure(history, 0.5, True)
    flat = [ln for ln in fig.axes[0].lines if np.allclose(ln.get_ydata(), 0.5) and ln.get_linestyle() == "--"]
    assert len(flat) == 1
    assert write_campaign_report(copy, tmp_path / "elsewhere") == tmp_path / "elsewhere" / "index.html"


@pytest.mark.slow
def test_resumed_run_has_the_same_labels_table(run, tmp_path):
    # killed after the last iteration stored its inferred labels but before it completed: those derived rows
    # must be dropped and recomputed
    killed = tmp_path / "killed"
    last = run.store.last_iteration()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(run.cfg.model_dump(mode="json")))
    r = subprocess.run([sys.executable, "-m", "robust_al.cli", "run", str(cfg), "--run-dir", str(killed),
                        "--no-progress"], capture_output=True, text=True,
                       env={**os.environ, "ROBUST_AL_KILL_AT": f"before-checkpoint@{last}"})
    assert r.returncode == -9, r.stdout + r.stderr
    assert len(RunStore(killed).inferred(last)) and RunStore(killed).last_iteration() == last - 1
    Campaign.resume(killed, echo=None).run(progress=False)
    resumed = RunStore(killed)
    for it in range(last + 1):
        pd.testing.assert_frame_equal(resumed.inferred(it), run.store.inferred(it))
    export_run(killed, "csv")
    export_run(run.run_dir, "csv", tmp_path / "whole")
    assert (killed / "export" / "labels.csv").read_text() == (tmp_path / "whole" / "labels.csv").read_text()
