"""Real crowds as label tables, injected adversaries, trust metrics and the trust_eval pipeline (issue #12).

Real-data tests skip when the shared datasets are absent; the rest run on small synthetic crowds.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robust_al.data import crowds as crowds_mod
from robust_al.data.crowds import CROWDS, Crowd, load_crowd, load_snow, load_zheng
from robust_al.data.loaders import default_datasets_dir
from robust_al.evaluate.trust import (
    MethodTimeout,
    acceptance_checks,
    adversary_auc,
    inject_adversaries,
    label_accuracy,
    n_adversaries,
    time_limit,
    trust_spearman,
    worker_accuracy,
)

# name: (folder, items, workers, labels, classes, median labels per worker)
COUNTS = {
    "dog": ("zheng_vldb17_dog", 807, 109, 8070, 4, 38),
    "duck": ("zheng_vldb17_duck", 108, 39, 4212, 2, 108),
    "face_sentiment": ("zheng_vldb17_face_sentiment", 584, 27, 5242, 4, 56),
    "product": ("zheng_vldb17_product", 8315, 176, 24945, 2, 32),
    "rte": ("snow2008", 800, 164, 8000, 2, 20),
    "temp": ("snow2008", 462, 76, 4620, 2, 16),
    "wsd": ("snow2008", 177, 34, 1770, 3, 20),
    "labelme": ("labelme", 1000, 59, 2547, 8, 27),
    "sentiment": ("sentiment_polarity", 4999, 203, 27746, 2, 40),
    "cifar10n": ("cifar10n", 50000, 747, 150000, 10, 80),
}


def _need(folder: str) -> Path:
    root = default_datasets_dir() / folder
    if not root.is_dir():
        pytest.skip(f"{folder} not found under {default_datasets_dir()} (set ROBUST_AL_DATASETS)")
    return root


def synthetic_crowd(n_items: int = 60, n_workers: int = 24, n_classes: int = 3, seed: int = 0,
                    name: str = "tiny") -> Crowd:
    """Workers of accuracy 0.45..0.95 labelling 12..30 random items each (wrong labels uniform)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    rows = []
    for w in range(n_workers):
        acc = 0.45 + 0.5 * w / (n_workers - 1)
        items = rng.choice(n_items, size=int(rng.integers(12, 31)), replace=False)
        right = rng.random(len(items)) < acc
        lab = np.where(right, truth[items], (truth[items] + rng.integers(1, n_classes, len(items))) % n_classes)
        rows += [(int(i), w, int(v)) for i, v in zip(items, lab)]
    ann = pd.DataFrame(rows, columns=["task", "worker", "label"]).astype(np.int64)
    return Crowd(name=name, annotations=ann, truth=truth.astype(np.int64), n_classes=n_classes,
                 tasks=np.arange(n_items), workers=np.arange(n_workers), classes=list(range(n_classes)))


# ------------------------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------------------------
def test_registry_names():
    assert set(CROWDS) == set(COUNTS)
    with pytest.raises(ValueError, match="unknown crowd 'nope'; valid names: dog"):
        load_crowd("nope")


@pytest.mark.parametrize("name", list(COUNTS))
def test_real_crowd_counts(name):
    folder, items, workers, labels, classes, median = COUNTS[name]
    _need(folder)
    c = load_crowd(name)
    assert (c.n_items, c.n_workers, c.n_labels, c.n_classes) == (items, workers, labels, classes)
    s = c.stats()
    assert s["median_labels_per_worker"] == median and s["known_truth"] == items
    a = c.annotations
    assert list(a.columns) == ["task", "worker", "label"] and all(a[k].dtype == np.int64 for k in a)
    assert a["task"].nunique() == items and a["worker"].nunique() == workers
    assert not a.duplicated(["task", "worker"]).any()
    assert ((c.truth >= 0) & (c.truth < classes)).all() and len(c.classes) == classes
    if folder.startswith("zheng"):  # one answer per data row of answer.csv, one truth per row of truth.csv
        root = default_datasets_dir() / folder
        n_rows = lambda f: len((root / f).read_text().splitlines()) - 1
        assert n_rows("answer.csv") == labels and n_rows("truth.csv") == items


def test_labelme_crowd_matches_the_dataset_loader():
    _need("labelme")
    from robust_al.data.loaders import load_labelme

    ds, c = load_labelme(), load_crowd("labelme")
    rec = ds.recorded.assign(worker=ds.recorded["worker"].str[3:].astype(np.int64))
    got = c.annotations.assign(task=c.tasks[c.annotations["task"]], worker=c.workers[c.annotations["worker"]])
    key = ["task", "worker"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  rec.sort_values(key).reset_index(drop=True), check_dtype=False)
    np.testing.assert_array_equal(c.truth, ds.train.y[c.tasks])


def test_snow_codes_answers_and_gold_to_0_based():
    _need("snow2008")
    t = load_snow("temp")
    assert t.classes == [1, 2] and set(np.unique(t.truth)) == {0, 1}


# ------------------------------------------------------------------------------------------------------------
# bad input: one-line errors naming the file
# ------------------------------------------------------------------------------------------------------------
def _zheng(tmp_path, answers: str, truth: str = "question,truth\n1,0\n2,1\n") -> Path:
    (tmp_path / "answer.csv").write_text(answers)
    (tmp_path / "truth.csv").write_text(truth)
    return tmp_path


@pytest.mark.parametrize("answers,truth,match", [
    ("question,worker,answer\n1,a,0\n2,a,x\n", None, r"answer\.csv: line 3: answer 'x' is not an integer"),
    ("question,worker,answer\n1,a,0\n1,a,1\n", None, r"answer\.csv: line 3: worker 'a' answers item 1 differently"),
    ("question,worker\n1,a\n", None, r"answer\.csv: lacks column\(s\) \['answer'\]"),
    ("question,worker,answer\n1,a,0\n", "question,truth\n1,0\n1,1\n",
     r"truth\.csv: line 3: question '1' is given truth 1"),
    ("question,worker,answer\n1,,0\n", None, r"answer\.csv: line 2: empty worker"),
])
def test_zheng_refuses_bad_input(tmp_path, answers, truth, match):
    root = _zheng(tmp_path, answers, truth or "question,truth\n1,0\n2,1\n")
    with pytest.raises(ValueError, match=match) as e:
        load_zheng("dog", root=root)
    assert "\n" not in str(e.value)


def test_zheng_coding_repeats_and_unknown_truth(tmp_path):
    root = _zheng(tmp_path, "question,worker,answer\n10,b,3\n2,a,1\n2,a,1\n7,a,3\n",
                  "question,truth\n2,1\n10,3\n99,0\n")
    c = load_zheng("duck", root=root)
    assert list(c.tasks) == [2, 7, 10] and list(c.workers) == ["a", "b"] and c.classes == [1, 3]
    assert c.n_labels == 3 and list(c.truth) == [0, -1, 1]  # item 99 (no answer) is no task; item 7 has no truth


def test_snow_refuses_inconsistent_gold_and_missing_files(tmp_path):
    head = "!amt_annotation_ids\t!amt_worker_ids\torig_id\tresponse\tgold\n"
    (tmp_path / "rte.standardized.tsv").write_text(head + "x1\tw1\t5\t1\t1\nx2\tw2\t5\t0\t0\n")
    with pytest.raises(ValueError, match=r"rte\.standardized\.tsv: line 3: item '5' has gold 0"):
        load_snow("rte", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"temp\.standardized\.tsv not found"):
        load_snow("temp", root=tmp_path)


def test_matrix_crowds_refuse_bad_values(tmp_path):
    (tmp_path / "answers.txt").write_text("0 -1\n-1 9\n")
    (tmp_path / "LabelMe_Z_train.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"answers\.txt: line 2, column 2: value 9; expected -1\.\.7"):
        crowds_mod.load_labelme_crowd(root=tmp_path)
    (tmp_path / "answers.txt").write_text("0 -1\n-1 1\n")
    (tmp_path / "Sentiment_Z_train.txt").write_text("0\n1\n1\n")
    with pytest.raises(ValueError, match=r"Sentiment_Z_train\.txt: 3 truth values, but .*answers\.txt has 2 rows"):
        crowds_mod.load_sentiment_crowd(root=tmp_path)


def test_cifar10n_refuses_bad_label(tmp_path):
    (tmp_path / "cifar10n_worker_labels_long.csv").write_text(
        "image_index,slot,worker_id,label,clean_label\n0,1,5,3,3\n1,1,5,12,4\n")
    with pytest.raises(ValueError, match=r"cifar10n_worker_labels_long\.csv: line 3: label 12 is not a CIFAR-10"):
        crowds_mod.load_cifar10n_crowd(root=tmp_path)


# ------------------------------------------------------------------------------------------------------------
# injection
# ------------------------------------------------------------------------------------------------------------
def test_n_adversaries_makes_them_the_fraction_of_all_workers():
    assert n_adversaries(0.2, 100) == 25 and n_adversaries(0.0, 100) == 0 and n_adversaries(0.5, 30) == 30
    for f in (0.05, 0.1, 0.2, 0.3, 0.4):
        for m in (27, 59, 747):
            n = n_adversaries(f, m)
            assert abs(n / (n + m) - f) <= 1 / (n + m)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        n_adversaries(1.0, 10)


@pytest.mark.parametrize("kind", ["spammer", "flipper", "bloc"])
def test_injected_workers_label_the_median_count(kind):
    c = synthetic_crowd()
    k = round(c.annotations.groupby("worker").size().median())
    inj = inject_adversaries(c.annotations, c.truth, c.n_classes, kind, 0.2, seed=1)
    assert len(inj.adversaries) == 6 and inj.labels_per_adversary == k and inj.n_real == 24
    a = inj.annotations
    pd.testing.assert_frame_equal(a.iloc[:len(c.annotations)], c.annotations)
    adv = a[a["worker"].isin(inj.adversaries)]
    assert set(adv["worker"]) == set(range(24, 30))
    assert (adv.groupby("worker").size() == k).all() and not adv.duplicated(["task", "worker"]).any()
    assert adv["task"].isin(c.tasks).all() and adv["label"].between(0, c.n_classes - 1).all()
    assert abs(inj.realized_fraction - 0.2) < 1e-9


def test_injection_accuracy_by_kind():
    c = synthetic_crowd(n_items=400, n_workers=40, n_classes=4)
    spam = inject_adversaries(c.annotations, c.truth, 4, "spammer", 0.4, seed=0)
    acc = worker_accuracy(spam.annotations, c.truth).loc[spam.adversaries]
    assert abs(acc["correct"].sum() / acc["n"].sum() - 0.25) < 0.05

    flip = inject_adversaries(c.annotations, c.truth, 4, "flipper", 0.4, seed=0)
    real = worker_accuracy(c.annotations, c.truth)
    assert flip.honest_accuracy == pytest.approx(real[real["n"] >= 10]["accuracy"].median())
    adv = flip.annotations[flip.annotations["worker"].isin(flip.adversaries)]
    t = c.truth[adv["task"].to_numpy()]
    on = t == flip.target
    assert on.any() and (adv["label"].to_numpy()[on] == flip.to).all()
    assert abs((adv["label"].to_numpy()[~on] == t[~on]).mean() - flip.honest_accuracy) < 0.06
    assert flip.target == np.bincount(c.truth).argmax() and flip.to != flip.target


def test_bloc_members_agree_on_shared_items_and_are_wrong():
    c = synthetic_crowd(n_items=200, n_workers=30)
    inj = inject_adversaries(c.annotations, c.truth, c.n_classes, "bloc", 0.3, seed=3)
    adv = inj.annotations[inj.annotations["worker"].isin(inj.adversaries)]
    assert adv.groupby("task")["label"].nunique().max() == 1  # the same label from every member on an item
    assert (adv["label"].to_numpy() != c.truth[adv["task"].to_numpy()]).all()
    assert set(adv["task"]) <= set(inj.pool) and len(inj.pool) == math.ceil(1.5 * inj.labels_per_adversary)
    sets = [set(g) for _, g in adv.groupby("worker")["task"]]
    overlap = np.mean([len(a & b) / inj.labels_per_adversary for i, a in enumerate(sets) for b in sets[i + 1:]])
    assert overlap > 0.5  # ~2/3 with a pool of 1.5 k


def test_injection_is_seeded():
    c = synthetic_crowd()
    for kind in ("spammer", "flipper", "bloc"):
        a = inject_adversaries(c.annotations, c.truth, 3, kind, 0.3, seed=[7, 1]).annotations
        b = inject_adversaries(c.annotations, c.truth, 3, kind, 0.3, seed=[7, 1]).annotations
        d = inject_adversaries(c.annotations, c.truth, 3, kind, 0.3, seed=[8, 1]).annotations
        pd.testing.assert_frame_equal(a, b)
        assert not a.equals(d)
    none = inject_adversaries(c.annotations, c.truth, 3, "bloc", 0.0, seed=0)
    assert len(none.adversaries) == 0 and none.annotations.equals(c.annotations)


def test_injection_with_string_workers_and_unknown_truth():
    ann = pd.DataFrame({"task": [0, 0, 1, 1, 2], "worker": ["a", "b", "a", "b", "a"], "label": [1, 1, 0, 0, 1]})
    inj = inject_adversaries(ann, np.array([1, -1, -1]), 2, "bloc", 0.5, seed=0)
    adv = inj.annotations[inj.annotations["worker"].isin(inj.adversaries)]
    assert list(inj.adversaries) == ["adv0", "adv1"]
    belief = {0: 1, 1: 0, 2: 1}  # truth where known, else the real majority vote
    assert all(lab != belief[t] for t, lab in zip(adv["task"], adv["label"]))
    with pytest.raises(ValueError, match="unknown adversary kind"):
        inject_adversaries(ann, np.array([1, 0, 1]), 2, "sybil", 0.2)


# ------------------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------------------
def test_metrics_on_a_hand_made_example():
    truth = np.array([0, 1, 1, -1])
    # task 2 has no label (counts wrong), task 3 has no truth (not counted)
    assert label_accuracy(pd.Series({0: 0, 1: 0, 3: 1}), truth) == pytest.approx(1 / 3)
    assert math.isnan(label_accuracy(pd.Series({0: 1}), np.array([-1])))

    rows = []  # worker w answers tasks 0..11 (truth 0) right on the first 12 - 3w ... (accuracies 1, .75, .5, .25)
    for w in range(4):
        rows += [(i, w, 0 if i < 12 - 3 * w else 1) for i in range(12)]
    rows += [(0, 9, 0)] * 1  # a worker with one label: below min_labels
    ann = pd.DataFrame(rows, columns=["task", "worker", "label"])
    tr = np.zeros(12, dtype=np.int64)
    acc = worker_accuracy(ann, tr)
    assert list(acc["accuracy"].round(2)) == [1.0, 0.75, 0.5, 0.25, 1.0] and list(acc["n"]) == [12] * 4 + [1]
    trust = pd.Series({0: 0.9, 1: 0.8, 2: 0.3, 3: 0.1, 9: 0.0})
    assert trust_spearman(trust, ann, tr) == (pytest.approx(1.0), 4)
    assert trust_spearman(-trust, ann, tr)[0] == pytest.approx(-1.0)
    assert trust_spearman(trust, ann, tr, workers=[0, 1, 2])[1] == 3
    assert math.isnan(trust_spearman(trust, ann, tr, min_labels=13)[0])

    assert adversary_auc(trust, [3, 9]) == 1.0        # both adversaries below every honest worker ...
    assert adversary_auc(trust, [0, 1]) == 0.0        # ... or above
    assert adversary_auc(trust, [2, 3]) == pytest.approx(4 / 6)  # honest worker 9 is lowest of all
    assert adversary_auc(pd.Series({0: 0.9, 1: 0.2, 2: 0.5, 3: 0.4}), [1, 2]) == 0.75  # 3 of 4 pairs
    assert math.isnan(adversary_auc(trust, []))


def test_acceptance_checks_pass_and_fail():
    rows = []
    for crowd in ("a", "b"):
        base = {"crowd": crowd, "seed": 0, "n_workers_ge10": 30, "note": "", "seconds": 1.0}
        rows += [dict(base, kind="none", rate=0.0, method="ds", label_accuracy=0.80, spearman=0.5, auc=np.nan),
                 dict(base, kind="none", rate=0.0, method="robust-al", label_accuracy=0.82, spearman=0.7, auc=np.nan),
                 dict(base, kind="none", rate=0.0, method="robust-al-route", label_accuracy=0.818, spearman=0.7,
                      auc=np.nan)]
        for m, acc, auc in (("ds", 0.75, 0.8), ("mv", 0.7, 0.7), ("robust-al-route", 0.78, 0.95)):
            rows.append(dict(base, kind="spammer", rate=0.2, method=m, label_accuracy=acc, spearman=0.6, auc=auc))
        rows.append(dict(base, kind="spammer", rate=0.4, method="robust-al-route", label_accuracy=0.1, spearman=0.1,
                         auc=0.1))  # above 30%: not in check (iii)
    r = pd.DataFrame(rows)
    checks = acceptance_checks(r)
    assert [c.verdict for c in checks] == ["PASS", "PASS", "PASS", "PASS"]
    assert "a +0.20" in checks[0].figures
    r.loc[(r["crowd"] == "b") & (r["method"] == "robust-al-route") & (r["rate"] == 0), "label_accuracy"] = 0.81
    r.loc[(r["method"] == "robust-al-route") & (r["rate"] == 0.2), "auc"] = 0.85
    assert [c.verdict for c in acceptance_checks(r)] == ["FAIL", "PASS", "PASS", "FAIL"]


def test_time_limit_counts_cpu_time():
    start = time.process_time()
    with pytest.raises(MethodTimeout, match="0.05 CPU s"), time_limit(0.05):
        t = time.perf_counter()
        while time.perf_counter() - t < 30:  # busy: the limit is on CPU time
            pass
    assert time.process_time() - start < 5
    with time_limit(0.05):
        time.sleep(0.2)  # sleeping uses no CPU time
    with time_limit(None):
        sum(range(1000))


# ------------------------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------------------------
def _pipeline():
    path = Path(__file__).resolve().parents[1] / "pipelines" / "trust_eval.py"
    spec = importlib.util.spec_from_file_location("trust_eval_pipeline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its unit function is pickled by name for the worker processes
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tiny_registry(monkeypatch):
    monkeypatch.setitem(CROWDS, "tiny", lambda root=None: synthetic_crowd())


def _busy_fit(self, data):
    t = time.perf_counter()
    while time.perf_counter() - t < 60:  # busy: only the CPU-time limit stops it
        pass
    return self


def test_pipeline_quick_writes_outputs(tiny_registry, tmp_path, capsys, monkeypatch):
    from crowdkit.aggregation import GLAD

    pipe = _pipeline()
    out = tmp_path / "out"
    # GLAD runs past its limit on the clean crowd (made to, whatever the machine's speed: on a quiet fast CPU the
    # real fit of this tiny crowd ended inside 0.01 CPU s), so it is skipped with adversaries
    monkeypatch.setattr(GLAD, "fit", _busy_fit)
    pipe.main(["--quick", "--crowds", "tiny", "--glad-timeout", "0.01", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.count("] tiny") == 4 and "[4/4]" in printed
    assert "(i) clean crowds" in printed and "written to" in printed
    r = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert set(r.columns) >= {"crowd", "kind", "rate", "seed", "method", "label_accuracy", "spearman", "auc",
                              "n_workers_ge10", "seconds"}
    assert len(r) == (1 + 3) * 6 and set(r["rate"]) == {0.0, 0.2} and set(r["seed"]) == {0}
    glad = r[r["method"] == "glad"]
    assert glad[glad["rate"] == 0]["note"].str.startswith("timeout").all()
    assert glad[glad["rate"] > 0]["note"].str.startswith("skipped").all()
    ok = r[r["method"] != "glad"]
    assert ok["note"].isna().all() and ok["label_accuracy"].between(0.3, 1).all() and (ok["seconds"] >= 0).all()
    assert ok[ok["rate"] > 0]["auc"].notna().all() and ok[ok["rate"] == 0]["auc"].isna().all()
    summary = (out / "summary.md").read_text()
    assert "## Acceptance checks" in summary and summary.count("**PASS**") + summary.count("**FAIL**") + \
        summary.count("**n/a**") == 4
    assert "glad skipped with adversaries (timeout: ran past 0.01 CPU s on the clean crowd)" in summary
    assert "| tiny | spammer | 20% |" in summary
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["args"]["quick"] and cfg["seeds"] == [0]
    assert {"numpy", "pandas", "crowdkit", "sklearn", "robust_al", "git_commit"} <= set(cfg["versions"])
    assert [c["name"] for c in cfg["crowds"]] == ["tiny"] and cfg["crowds"][0]["workers"] == 24


def test_pipeline_runs_units_in_processes(tiny_registry, tmp_path):
    pipe = _pipeline()
    out = tmp_path / "par"
    pipe.main(["--crowds", "tiny", "--kinds", "bloc", "--rates", "0", "0.3", "--seeds", "2", "--jobs", "2",
               "--methods", "mv", "robust-al-route", "--out", str(out)])
    r = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert len(r) == 2 * 2 * 2 and r["note"].isna().all()
    assert sorted(set(zip(r["kind"], r["rate"]))) == [("bloc", 0.3), ("none", 0.0)]
