"""Labels only: ``robust-al aggregate`` and ``robust_al.aggregate_labels`` on real and synthetic crowds, bad input."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robust_al
from robust_al.cli import main
from robust_al.data.loaders import default_datasets_dir

NAMES = ["bird", "cat", "dog"]


def crowd(n_items=120, seed=0, accs=(0.9, 0.85, 0.8, 0.75, 0.3), names=NAMES):
    """Answers with string ids and string labels, and the truth."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(len(names), size=n_items)
    rows = []
    for w, acc in enumerate(accs):
        for i in range(n_items):
            if rng.random() < 0.8:
                y = truth[i] if rng.random() < acc else (truth[i] + 1 + rng.integers(len(names) - 1)) % len(names)
                rows.append((f"img-{i:04d}.jpg", f"AMT_{w}", names[y]))
    ann = pd.DataFrame(rows, columns=["task", "worker", "label"])
    return ann, pd.DataFrame({"task": [f"img-{i:04d}.jpg" for i in range(n_items)],
                              "truth": [names[y] for y in truth]})


def run_cli(*args, capsys):
    rc = main(["aggregate", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_on_string_labels_writes_decoded_tables(tmp_path, capsys):
    ann, truth = crowd()
    ann.to_csv(tmp_path / "answers.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    out = tmp_path / "out"
    rc, text, err = run_cli(tmp_path / "answers.csv", "--out", out, "--truth", tmp_path / "truth.csv",
                            capsys=capsys)
    assert rc == 0, err
    assert "items: 120  workers: 5" in text and "classes: 3 (bird, cat, dog)" in text and "method: twds" in text
    acc = float(text.split("accuracy: ")[1].split()[0])
    assert acc > 0.9
    labels = pd.read_csv(out / "labels.csv", dtype={"task": str, "label": str})
    workers = pd.read_csv(out / "workers.csv", dtype={"worker": str, "flags": str}, keep_default_na=False)
    assert list(labels.columns) == ["task", "label", "confidence"]
    assert list(workers.columns) == ["worker", "trust", "lower", "upper", "labels", "flags", "routed"]
    assert set(labels["task"]) == set(ann["task"]) and set(labels["label"]) <= set(NAMES)
    assert labels["confidence"].between(0, 1).all()
    merged = labels.merge(truth, on="task")
    assert (merged["label"] == merged["truth"]).mean() == pytest.approx(acc, abs=1e-4)
    assert workers.set_index("worker").loc["AMT_4", "trust"] < workers.set_index("worker").loc["AMT_0", "trust"]
    assert (workers["lower"] <= workers["trust"]).all() and (workers["trust"] <= workers["upper"]).all()
    assert workers["labels"].sum() == len(ann)
    assert sorted(p.name for p in out.iterdir()) == ["labels.csv", "workers.csv"]  # no temporary file left


@pytest.mark.parametrize("method", ["twds", "ds", "mv", "mmsr"])
def test_every_method_through_the_function(method):
    ann, truth = crowd(n_items=60, seed=1)
    r = robust_al.aggregate_labels(ann, method=method, route=method == "twds", truth=truth)
    assert r.accuracy is not None and r.accuracy > 0.8
    assert r.labels["task"].tolist() == sorted(ann["task"].unique())
    assert set(r.workers["worker"]) == set(ann["worker"])
    assert r.truth_tasks == 60 and r.method == method


def test_truth_outside_the_answers_is_counted_not_fatal():
    ann, truth = crowd(n_items=40, seed=2)
    truth = pd.concat([truth, pd.DataFrame({"task": ["nobody-saw-it"], "truth": ["cat"]})])
    truth.loc[0, "truth"] = "zebra"  # a class no worker gave: scored as wrong
    r = robust_al.aggregate_labels(ann, method="ds", truth=truth)
    assert (r.truth_tasks, r.truth_ignored, r.truth_unseen) == (40, 1, 1)
    assert "1 truth rows about unanswered tasks ignored" in r.summary()
    assert robust_al.aggregate_labels(ann, method="ds").accuracy is None
    none = robust_al.aggregate_labels(ann, method="mv", truth=truth.iloc[:0])  # a truth file with no rows
    assert none.accuracy is None and "accuracy: n/a on 0 items" in none.summary()


def test_dataframe_ids_come_back_with_their_types():
    ann = pd.DataFrame({"task": [3, 3, 1, 1, 2, 2], "worker": ["a", "b"] * 3, "label": [1, 1, 0, 0, 1, 0]})
    r = robust_al.aggregate_labels(ann, method="mv")
    assert r.labels["task"].tolist() == [1, 2, 3] and r.labels["label"].tolist()[0] == 0


@settings(max_examples=8, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(["twds", "mv"]))
def test_row_order_changes_nothing(rnd, method):
    ann, _ = crowd(n_items=50, seed=rnd.randint(0, 100))
    a = robust_al.aggregate_labels(ann, method=method, route=True)
    b = robust_al.aggregate_labels(ann.sample(frac=1, random_state=rnd.randint(0, 10**6)), method=method,
                                   route=True)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    pd.testing.assert_frame_equal(a.workers, b.workers)


def test_write_replaces_files_whole(tmp_path, monkeypatch):
    ann, _ = crowd(n_items=30)
    r = robust_al.aggregate_labels(ann, method="mv")
    r.write(tmp_path)
    before = (tmp_path / "labels.csv").read_text()

    def broken(self, f, **kw):
        f.write("task,label,confidence\nhalf")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        r.write(tmp_path)
    assert (tmp_path / "labels.csv").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "workers.csv"]


# -- bad input: one line naming the file and line, exit code 2, nothing written ----------------------------
BAD = [
    ("task,worker\n1,a\n", None, "line 1: no label column"),
    ("task,worker,label\n1,a,0\n,b,1\n", None, "line 3: empty task id"),
    ("task,worker,label\n1,a,0\n2,,1\n", None, "line 3: empty worker id"),
    ("task,worker,label\n1,a,0\n2,b,-1\n", None, "line 3: label '-1' is a negative integer"),
    ("task,worker,label\n1,a,0\n2,b,2.5\n", None, "line 3: label '2.5' is not an integer"),
    ("task,worker,label\n1,a,0\n2,b,inf\n", None, "line 3: label 'inf' is not a class"),
    ("task,worker,label\n1,a,dog\n2,b,NaN\n", None, "line 3: label 'NaN' is not a class"),
    ("task,worker,label\n1,a,0\n2,a,1\n1,a,1\n", None, "line 4: worker 'a' answers task '1' with '1', but line 2"),
    ("task,worker,label\n1,a,0\n2,b,1,1\n", None, "line 3: 4 fields; expected 3"),
    ("task,worker,label\n1,a,0\n2,b,0\n", None, "every answer is 0; expected at least two classes"),
    ("task,worker,label\n1,a,0\n2,b,1\n", "task,truth\n1,0\n1,1\n", "line 3: task '1' has truth '1', but line 2"),
    ("task,worker,label\n1,a,0\n2,b,1\n", "task,truth\n1,x\n", "line 2: truth 'x' is not an integer"),
    ("task,worker,label\n1,a,0\n2,b,1\n", "id,truth\n1,0\n", "line 1: no task column"),
]


@pytest.mark.parametrize("answers, truth, words", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, answers, truth, words):
    a = tmp_path / "answers.csv"
    a.write_text(answers)
    args = [a, "--out", tmp_path / "out"]
    bad = a
    if truth is not None:
        bad = tmp_path / "truth.csv"
        bad.write_text(truth)
        args += ["--truth", bad]
    rc, _out, err = run_cli(*args, capsys=capsys)
    assert rc == 2
    assert err.startswith(f"error: {bad}: ") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_missing_file_and_unknown_method(tmp_path, capsys):
    rc, _, err = run_cli(tmp_path / "nope.csv", "--out", tmp_path / "out", capsys=capsys)
    assert rc == 2 and "nope.csv not found" in err and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="method must be one of"):
        robust_al.aggregate_labels(pd.DataFrame({"task": [1], "worker": ["a"], "label": [0]}), method="glad")


# -- the real crowds, as they are --------------------------------------------------------------------------
ZHENG = default_datasets_dir()


@pytest.mark.parametrize("name, least", [("dog", 0.8), ("duck", 0.85), ("face_sentiment", 0.6),
                                         ("product", 0.85)])
def test_zheng_benchmarks_as_they_are(tmp_path, capsys, name, least):
    folder = ZHENG / f"zheng_vldb17_{name}"
    if not (folder / "answer.csv").is_file():
        pytest.skip(f"{folder} not here (shared datasets)")
    rc, text, err = run_cli(folder / "answer.csv", "--out", tmp_path / "plain", capsys=capsys)
    assert rc == 0, err
    assert "accuracy" not in text
    answers = pd.read_csv(folder / "answer.csv", dtype=str)
    labels = pd.read_csv(tmp_path / "plain" / "labels.csv", dtype=str)
    assert len(labels) == answers["question"].nunique()
    assert len(pd.read_csv(tmp_path / "plain" / "workers.csv")) == answers["worker"].nunique()
    rc, text, err = run_cli(folder / "answer.csv", "--out", tmp_path / "scored", "--truth", folder / "truth.csv",
                            "--route", capsys=capsys)
    assert rc == 0, err
    assert float(text.split("accuracy: ")[1].split()[0]) >= least
    assert "routed: " in text and "flagged: " in text


def test_our_weighted_vote_is_crowdkits_weighted_majority_vote():
    from crowdkit.aggregation import MajorityVote

    from robust_al.crowd.aggregate import TrustWeightedDS

    ann, _ = crowd(n_items=2000, seed=3)
    weights = {"AMT_0": 0.5, "AMT_4": 0.0}
    ours = TrustWeightedDS(3, "mv").fit(ann.assign(label=ann["label"].map(NAMES.index)), weights)
    skills = pd.Series({w: max(weights.get(w, 1.0), 1e-6) for w in ann["worker"].unique()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MajorityVote().fit(ann.assign(label=ann["label"].map(NAMES.index)), skills=skills).probas_
    ref = (ref.reindex(columns=range(3), fill_value=0) + 1e-3)
    np.testing.assert_allclose(ours.posteriors_.to_numpy(), (ref / ref.to_numpy().sum(1, keepdims=True)).loc[
        ours.posteriors_.index].to_numpy(), atol=1e-12)


def test_import_stays_light():
    code = ("import sys, robust_al; assert 'pandas' not in sys.modules; import pandas as pd; "
            "r = robust_al.aggregate_labels(pd.DataFrame({'task': [1, 1, 2], 'worker': ['a', 'b', 'a'], "
            "'label': ['x', 'y', 'y']})); assert 'torch' not in sys.modules, 'torch'; "
            "print(len(r.labels))")  # crowd-kit's MMSR is the detectors' second opinion
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
