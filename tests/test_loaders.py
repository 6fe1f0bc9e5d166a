"""Tests for robust_al.data.loaders (real-data tests skip when the shared datasets are absent)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robust_al.data.loaders import (
    CIFAR10_CLASSES,
    TEST_ID_OFFSET,
    default_datasets_dir,
    load_cifar2,
    load_dataset,
    load_digits_dataset,
    load_generic_crowd,
    load_labelme,
)


# ------------------------------------------------------------------------------------ digits
def test_digits_shapes_ranges_split():
    ds = load_digits_dataset(test_size=0.3, seed=0)
    tr, te = ds.train, ds.test
    assert len(tr) + len(te) == 1797
    assert len(te) == 540  # ceil(0.3 * 1797)
    assert tr.X.shape == (1257, 64) and te.X.shape == (540, 64)
    assert tr.X.dtype == np.float32
    for X in (tr.X, te.X):
        assert X.min() >= 0.0 and X.max() <= 1.0
    assert tr.X.max() == 1.0
    assert tr.n_classes == te.n_classes == 10
    assert tr.has_truth and te.has_truth
    assert ds.recorded is None
    # ids are original row indices, disjoint, covering everything
    assert len(np.intersect1d(tr.ids, te.ids)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr.ids, te.ids])), np.arange(1797))
    # rows really are the original rows
    from sklearn.datasets import load_digits

    b = load_digits()
    np.testing.assert_allclose(te.X, b.data[te.ids] / 16.0, rtol=0, atol=1e-7)
    assert np.array_equal(te.y, b.target[te.ids])
    # stratified: every class has ~30% of its items in test
    counts = np.bincount(b.target, minlength=10)
    frac = np.bincount(te.y, minlength=10) / counts
    assert np.all(np.abs(frac - 0.3) < 0.02), frac


def test_digits_seeded():
    a, b, c = load_digits_dataset(seed=0), load_digits_dataset(seed=0), load_digits_dataset(seed=1)
    assert np.array_equal(a.test.ids, b.test.ids)
    assert not np.array_equal(a.test.ids, c.test.ids)


# ------------------------------------------------------------------------------------ generic
def _tiny(tmp_path: Path, n: int = 20, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = np.arange(100, 100 + n)
    X = rng.normal(size=(n, 4)) * np.array([1.0, 10.0, 100.0, 0.1]) + 5
    y = np.arange(n) % k
    ann = []
    for i, t in zip(ids, y):
        for w in ("w1", "w2"):
            ann.append((int(i), w, int(t) if w == "w1" else int((t + 1) % k)))
    return ids, X, y, ann


def _write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(str(v) for v in r) + "\n")
    return path


def test_generic_csv_round_trip(tmp_path):
    ids, X, y, ann = _tiny(tmp_path)
    feats = _write_csv(tmp_path / "feats.csv", ["item", "a", "b", "c", "d"], [[i, *x] for i, x in zip(ids, X)])
    anns = _write_csv(tmp_path / "ann.csv", ["item", "worker", "label"], ann)
    truth = _write_csv(tmp_path / "truth.csv", ["item", "label"], zip(ids, y))

    ds = load_generic_crowd(feats, anns, truth, test_size=0.25, seed=3)
    tr, te = ds.train, ds.test
    assert ds.name == "feats"
    assert len(tr) == 15 and len(te) == 5
    assert tr.n_classes == 3
    assert len(np.intersect1d(tr.ids, te.ids)) == 0
    assert set(tr.ids) | set(te.ids) == set(ids)
    pos = {int(i): p for p, i in enumerate(ids)}
    # truth follows the ids, stratified split keeps class balance
    assert np.array_equal(tr.y, y[[pos[i] for i in tr.ids]])
    assert np.array_equal(te.y, y[[pos[i] for i in te.ids]])
    assert sorted(np.bincount(te.y, minlength=3)) == [1, 2, 2]  # 7/7/6 items per class, 5 in test
    # scaling: train stats only; train spans exactly [0, 1]; test clipped
    Xtr_raw = X[[pos[i] for i in tr.ids]]
    Xte_raw = X[[pos[i] for i in te.ids]]
    lo, hi = Xtr_raw.min(0), Xtr_raw.max(0)
    np.testing.assert_allclose(tr.X, (Xtr_raw - lo) / (hi - lo), atol=1e-6)
    np.testing.assert_allclose(te.X, np.clip((Xte_raw - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert np.allclose(tr.X.min(0), 0) and np.allclose(tr.X.max(0), 1)
    # recorded: only train items, all of their annotations, crowd-kit dtypes
    rec = ds.recorded
    assert list(rec.columns) == ["task", "worker", "label"]
    assert set(rec["task"]) == set(tr.ids)
    assert len(rec) == 2 * len(tr)
    w1 = rec[rec.worker == "w1"].set_index("task")["label"]
    assert all(w1[i] == y[pos[i]] for i in tr.ids)
    assert rec["task"].dtype == np.int64 and rec["label"].dtype == np.int64


def test_generic_npy_txt_and_separate_test(tmp_path):
    _ids, X, y, ann = _tiny(tmp_path, n=12)
    np.save(tmp_path / "train.npy", X.astype(np.float32))
    Xt = np.vstack([X[:3], X[:1] + 1000.0])  # last row far outside the train range
    np.save(tmp_path / "test.npy", Xt)
    # npy features have no ids: ids are row indices, so rewrite annotations with rows
    ann_rows = [(i - 100, w, lab) for i, w, lab in ann]
    anns = _write_csv(tmp_path / "ann.csv", ["task", "worker", "label"], ann_rows)  # `task` accepted
    (tmp_path / "truth.txt").write_text("\n".join(str(v) for v in y) + "\n")
    (tmp_path / "test_truth.txt").write_text("0\n1\n2\n0\n")

    ds = load_generic_crowd(
        tmp_path / "train.npy", anns, tmp_path / "truth.txt",
        test_features=tmp_path / "test.npy", test_truth=tmp_path / "test_truth.txt",
    )
    assert np.array_equal(ds.train.ids, np.arange(12))
    assert np.array_equal(ds.test.ids, TEST_ID_OFFSET + np.arange(4))
    assert np.array_equal(ds.train.y, y)
    assert np.array_equal(ds.test.y, [0, 1, 2, 0])
    assert len(ds.recorded) == 24
    np.testing.assert_allclose(ds.test.X[:3], ds.train.X[:3], atol=1e-6)
    assert np.all(ds.test.X[3] == 1.0)  # clipped
    # no truth at all: random split, unknown truth, n_classes inferred from annotations
    ds2 = load_generic_crowd(tmp_path / "train.npy", anns, test_size=0.25)
    assert ds2.train.n_classes == 3
    assert np.all(ds2.train.y == -1) and np.all(ds2.test.y == -1)
    assert set(ds2.recorded["task"]) <= set(ds2.train.ids)


def test_generic_bad_label_names_file_line_value(tmp_path):
    ids, X, _y, ann = _tiny(tmp_path)
    feats = _write_csv(tmp_path / "feats.csv", ["item", "a", "b", "c", "d"], [[i, *x] for i, x in zip(ids, X)])
    bad = list(ann)
    bad[4] = (bad[4][0], "w9", 7)  # data row 5 -> line 6
    anns = _write_csv(tmp_path / "bad_ann.csv", ["item", "worker", "label"], bad)
    with pytest.raises(ValueError, match=r"bad_ann\.csv: line 6: label '7'.*0\.\.2"):
        load_generic_crowd(feats, anns, n_classes=3)

    bad[4] = (bad[4][0], "w9", "cat")
    anns = _write_csv(tmp_path / "bad_ann2.csv", ["item", "worker", "label"], bad)
    with pytest.raises(ValueError, match=r"bad_ann2\.csv: line 6: label 'cat' is not an integer"):
        load_generic_crowd(feats, anns)

    bad[4] = (bad[4][0], "w9", -1)
    anns = _write_csv(tmp_path / "bad_ann3.csv", ["item", "worker", "label"], bad)
    with pytest.raises(ValueError, match=r"bad_ann3\.csv: line 6: label '-1'"):
        load_generic_crowd(feats, anns)

    truth = _write_csv(tmp_path / "truth.csv", ["item", "label"], [(i, 3) for i in ids])
    good = _write_csv(tmp_path / "ann.csv", ["item", "worker", "label"], ann)
    with pytest.raises(ValueError, match=r"truth\.csv: line 2: label '3'"):
        load_generic_crowd(feats, good, truth, n_classes=3)


def test_generic_unknown_item_names_file(tmp_path):
    ids, X, _y, ann = _tiny(tmp_path)
    feats = _write_csv(tmp_path / "feats.csv", ["item", "a", "b", "c", "d"], [[i, *x] for i, x in zip(ids, X)])
    bad = [*list(ann), (999, "w1", 0)]
    anns = _write_csv(tmp_path / "ann.csv", ["item", "worker", "label"], bad)
    line = len(bad) + 1
    with pytest.raises(ValueError, match=rf"ann\.csv: line {line}: item '999' is not an item"):
        load_generic_crowd(feats, anns)
    # truth naming an unknown item
    good = _write_csv(tmp_path / "good.csv", ["item", "worker", "label"], ann)
    truth = _write_csv(tmp_path / "truth.csv", ["item", "label"], [(5, 0)])
    with pytest.raises(ValueError, match=r"truth\.csv: line 2: item '5'"):
        load_generic_crowd(feats, good, truth)


def test_generic_malformed_files(tmp_path):
    _ids, X, _y, ann = _tiny(tmp_path)
    anns = _write_csv(tmp_path / "ann.csv", ["item", "worker", "label"], [(i - 100, w, lab) for i, w, lab in ann])
    rows = [list(x) for x in X]
    rows[2][1] = "oops"
    feats = _write_csv(tmp_path / "feats.csv", ["a", "b", "c", "d"], rows)
    with pytest.raises(ValueError, match=r"feats\.csv: line 4: feature value 'oops'"):
        load_generic_crowd(feats, anns)
    noheader = _write_csv(tmp_path / "ann2.csv", ["0", "w1", "1"], [])
    good_feats = tmp_path / "f.npy"
    np.save(good_feats, X)
    with pytest.raises(ValueError, match=r"ann2\.csv: header .* lacks a 'item'/'task' column"):
        load_generic_crowd(good_feats, noheader)
    (tmp_path / "short.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"short\.txt: 2 labels for 20 feature rows"):
        load_generic_crowd(good_feats, anns, tmp_path / "short.txt")
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        load_generic_crowd(good_feats, tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------ misc
def test_load_dataset_dispatch_and_unknown_name():
    ds = load_dataset("digits", seed=1)
    assert ds.name == "digits"
    with pytest.raises(ValueError, match=r"cifar10n.*digits.*generic.*labelme"):
        load_dataset("mnist")


def test_default_datasets_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUST_AL_DATASETS", str(tmp_path))
    assert default_datasets_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="ROBUST_AL_DATASETS"):
        load_labelme()
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10-images_jpg\.tar\.gz.*ROBUST_AL_DATASETS"):
        load_cifar2()
    monkeypatch.delenv("ROBUST_AL_DATASETS")
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    (tmp_path / "proj" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "proj")
    assert default_datasets_dir() == (tmp_path / "shared" / "datasets").resolve()
    monkeypatch.chdir(tmp_path / "proj" / "sub")  # no ../shared/datasets from here
    import robust_al.data.loaders as loaders_module

    checkout = Path(loaders_module.__file__).resolve().parents[2]
    assert default_datasets_dir() == (checkout.parent / "shared" / "datasets").resolve()


# ------------------------------------------------------------------------------------ LabelMe
def _labelme_root() -> Path:
    root = default_datasets_dir() / "labelme"
    if not (root / "answers.txt").exists():
        pytest.skip(f"LabelMe data not found at {root} (set ROBUST_AL_DATASETS)")
    return root


@pytest.fixture(scope="module")
def labelme():
    return load_labelme(_labelme_root())


def test_labelme_shapes_and_crowd(labelme):
    ds = labelme
    assert ds.train.X.shape == (1000, 512) and ds.test.X.shape == (1188, 512)
    assert ds.train.n_classes == 8 and ds.train.class_names[:2] == ["highway", "insidecity"]
    assert ds.train.has_truth and ds.test.has_truth
    assert ds.train.X.min() == 0.0 and ds.train.X.max() == 1.0
    assert ds.test.X.min() >= 0.0 and ds.test.X.max() <= 1.0
    assert np.array_equal(ds.train.ids, np.arange(1000))
    assert len(np.intersect1d(ds.train.ids, ds.test.ids)) == 0
    rec = ds.recorded
    assert len(rec) == 2547
    assert rec["worker"].nunique() == 59
    assert set(rec["worker"]) == {f"amt{j}" for j in range(59)}
    assert set(rec["task"]) == set(range(1000))
    assert not rec.duplicated(["task", "worker"]).any()
    assert rec["label"].between(0, 7).all()


def test_labelme_majority_vote_accuracy(labelme):
    ds = labelme
    counts = np.zeros((1000, 8))
    np.add.at(counts, (ds.recorded["task"].to_numpy(), ds.recorded["label"].to_numpy()), 1)
    mv = counts.argmax(1)
    acc = (mv == ds.train.y).mean()
    assert 0.7 < acc < 0.85, acc


# ------------------------------------------------------------------------------------ CIFAR-2
def _cifar_root() -> Path:
    root = default_datasets_dir()
    need = [
        root / "cifar10_images" / "CIFAR-10-images_jpg.tar.gz",
        root / "cifar10_images" / "train_index_pytorch_order.csv",
        root / "cifar10n" / "cifar10n_worker_labels_long.csv",
    ]
    if not all(p.exists() for p in need):
        pytest.skip(f"CIFAR-10 / CIFAR-10N data not found under {root} (set ROBUST_AL_DATASETS)")
    return root


@pytest.fixture(scope="module")
def cifar2():
    root = _cifar_root()
    return root, load_cifar2(root)


def test_cifar2_shapes_balance_ids(cifar2):
    root, ds = cifar2
    tr, te = ds.train, ds.test
    assert tr.X.shape == (3000, 3, 32, 32) and te.X.shape == (2000, 3, 32, 32)
    assert tr.X.dtype == np.float32 and tr.is_image
    for X in (tr.X, te.X):
        assert X.min() >= 0.0 and X.max() <= 1.0 and X.std() > 0.1
    assert tr.class_names == ["airplane", "frog"] and tr.n_classes == 2
    assert np.array_equal(np.bincount(tr.y), [1500, 1500])
    assert np.array_equal(np.bincount(te.y), [1000, 1000])
    # train ids are CIFAR-10 training indices with the right clean labels
    index = pd.read_csv(root / "cifar10_images" / "train_index_pytorch_order.csv").set_index("index")
    clean = index.loc[tr.ids, "clean_label"].to_numpy()
    assert np.array_equal(np.where(clean == 0, 0, np.where(clean == 6, 1, -1)), tr.y)
    # test ids: offset + class*1000 + file number -> airplane 0..999, frog 6000..6999
    assert len(np.intersect1d(tr.ids, te.ids)) == 0
    rel = te.ids - TEST_ID_OFFSET
    assert np.all((rel // 1000) == np.where(te.y == 0, 0, CIFAR10_CLASSES.index("frog")))
    # the two classes look different on average (frogs are greener/darker than airplanes' sky)
    assert np.abs(tr.X[tr.y == 0].mean(axis=(0, 2, 3)) - tr.X[tr.y == 1].mean(axis=(0, 2, 3))).max() > 0.05


def test_cifar2_recorded_crowd(cifar2):
    root, ds = cifar2
    tr, rec = ds.train, ds.recorded
    assert set(rec["task"]) <= set(tr.ids)
    assert rec["worker"].str.startswith("c10n_").all()
    assert rec["label"].isin([0, 1]).all()
    raw = pd.read_csv(root / "cifar10n" / "cifar10n_worker_labels_long.csv")
    raw = raw[raw["image_index"].isin(tr.ids)]
    assert len(raw) == 3 * 3000
    in_subset = raw["label"].isin([0, 6])
    # exactly the labels naming airplane/frog are kept
    assert len(rec) == int(in_subset.sum())
    # every train item had 3 human labels; those now without any are exactly the items whose
    # annotators all named a class outside {airplane, frog}
    unlabelled = set(tr.ids) - set(rec["task"])
    all_outside = set(raw.groupby("image_index")["label"].apply(lambda s: not s.isin([0, 6]).any()).pipe(
        lambda s: s[s].index))
    assert unlabelled == all_outside
    assert len(unlabelled) < 0.03 * len(tr)
    # human accuracy: over kept labels, and over all raw labels (dropped ones count as wrong)
    truth = dict(zip(tr.ids, tr.y))
    kept_acc = (rec["label"].to_numpy() == rec["task"].map(truth).to_numpy()).mean()
    raw_acc = (raw["label"] == raw["clean_label"]).mean()
    assert kept_acc > 0.8 and raw_acc > 0.8, (kept_acc, raw_acc)


def test_an_id_list_to_exclude_is_read_strictly(tmp_path):
    from robust_al.data.loaders import read_id_list

    good = tmp_path / "ids.csv"
    good.write_text("index\n3\n1\n")
    assert list(read_id_list(good, "data.options.exclude")) == [3, 1]
    for text, why in [("idx\n1\n", "integer 'index' column"), ("index\n1.5\n", "integer 'index' column"),
                      ("index\n1\n1\n", "negative or repeated"), ("index\n-2\n", "negative or repeated")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ValueError, match=why) as e:
            read_id_list(bad, "data.options.exclude")
        assert "data.options.exclude" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="data.options.exclude"):
        read_id_list(tmp_path / "missing.csv", "data.options.exclude")


def test_pretraining_images_can_be_left_out_of_a_cifar10_pool(tmp_path):
    from robust_al.data.loaders import CIFAR10_CLASSES, cifar10_train_sample, class_remap

    index = pd.DataFrame({"index": np.arange(40), "clean_label": np.arange(40) % 10,
                          "path": [f"train/{CIFAR10_CLASSES[i % 10]}/{i}.jpg" for i in range(40)]})
    csv = tmp_path / "index.csv"
    index.to_csv(csv, index=False)
    ids = tmp_path / "seen.csv"
    pd.DataFrame({"index": [0, 1, 2, 13]}).to_csv(ids, index=False)
    remap = class_remap(["airplane", "automobile", "bird", "cat"])
    kept = cifar10_train_sample(csv, remap, None, np.random.default_rng(0), exclude=ids)
    assert sorted(kept["index"]) == [3, 10, 11, 12, 20, 21, 22, 23, 30, 31, 32, 33]
    sample = cifar10_train_sample(csv, remap, 8, np.random.default_rng(0), exclude=ids)
    assert set(sample["index"]).isdisjoint({0, 1, 2, 13}) and len(sample) == 8
