"""Pools from a user's own data: image folders, tables, texts, arrays, a local backbone, new inputs, bad input."""
from __future__ import annotations

import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from robust_al.config import load_config
from robust_al.data import Dataset, draw_holdout
from robust_al.data.inputs import load_inputs
from robust_al.data.loaders import default_datasets_dir, load_dataset


def _img(path: Path, seed: int, size=(20, 24), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, format=fmt)
    return path


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "pets"
    for c, cls in enumerate(["dog", "cat", "bird"]):
        for i in range(4):
            _img(root / cls / f"{i:02d}.{'png' if i % 2 else 'jpg'}", 10 * c + i)
    return root


@pytest.fixture
def flat_folder(tmp_path):
    root = tmp_path / "flat"
    for i in range(6):
        _img(root / f"im{i}.jpg", i)
    return root


# ------------------------------------------------------------------------------------ image folders
def test_class_folder_pool(class_folder):
    ds = load_dataset("imagefolder", root=str(class_folder), image_size=16)
    p = ds.train
    assert p.X.shape == (12, 3, 16, 16) and p.X.dtype == np.float32 and p.X.min() >= 0 and p.X.max() <= 1
    assert p.class_names == ["bird", "cat", "dog"]  # sorted sub-folder names
    assert list(p.keys) == sorted(p.keys) and p.keys[0] == "bird/00.jpg"
    assert np.array_equal(p.ids, np.arange(12))
    assert np.array_equal(p.y, np.repeat([0, 1, 2], 4)) and p.has_truth
    assert p.media_kind == "image" and p.media_root == class_folder.resolve()
    assert Path(p.media[5]) == class_folder.resolve() / p.keys[5] and Path(p.media[5]).is_absolute()
    assert len(ds.test) == 0
    # pixels are the file's, resized
    want = np.asarray(Image.open(p.media[1]).convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(p.X[1], want.transpose(2, 0, 1) / 255.0, atol=1e-6)
    # a stratified test split, ids still the sorted positions
    ds = load_dataset("imagefolder", root=str(class_folder), image_size=8, test_size=0.25, seed=3)
    assert len(ds.test) == 3 and np.bincount(ds.test.y, minlength=3).tolist() == [1, 1, 1]
    assert np.array_equal(np.sort(np.concatenate([ds.train.ids, ds.test.ids])), np.arange(12))
    assert all(k.startswith(ds.test.class_names[y]) for k, y in zip(ds.test.keys, ds.test.y))


def test_flat_folder_with_trusted_labels_feeds_the_holdout(flat_folder, tmp_path):
    with pytest.raises(ValueError, match="class_names is required"):
        load_dataset("imagefolder", root=str(flat_folder))
    trusted = tmp_path / "trusted.csv"
    trusted.write_text("item,label\nim1.jpg,dog\nim4.jpg,cat\nim2.jpg,cat\n")
    ds = load_dataset("imagefolder", root=str(flat_folder), class_names=["cat", "dog"], trusted_labels=str(trusted))
    p = ds.train
    assert list(p.keys) == [f"im{i}.jpg" for i in range(6)]
    assert p.y.tolist() == [-1, 1, 0, -1, 0, -1]
    assert draw_holdout(p, p.ids, 2, np.random.default_rng(0)).tolist() in ([1, 2], [1, 4])


def test_cifar10_jpegs_extracted_to_a_class_folder(tmp_path):
    archive = default_datasets_dir() / "cifar10_images" / "CIFAR-10-images_jpg.tar.gz"
    if not archive.exists():
        pytest.skip("shared CIFAR-10 JPEG archive absent")
    want = {"airplane": 0, "frog": 0, "ship": 0}
    root = tmp_path / "cifar"
    with tarfile.open(archive, mode="r|gz") as tar:
        for m in tar:
            parts = m.name.lstrip("./").split("/")
            if m.isfile() and "train" in parts and parts[-2] in want and want[parts[-2]] < 100:
                out = root / parts[-2] / parts[-1]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(m).read())
                want[parts[-2]] += 1
            if all(v == 100 for v in want.values()):
                break
    ds = load_dataset("imagefolder", root=str(root), test_size=0.2)
    assert ds.train.X.shape == (240, 3, 32, 32) and len(ds.test) == 60
    assert ds.train.class_names == ["airplane", "frog", "ship"]
    assert np.bincount(ds.train.y).tolist() == [80, 80, 80]
    # airplanes and ships are bluer than frogs: the images are decoded into the right classes
    blue = ds.train.X[:, 2].mean(axis=(1, 2)) - ds.train.X[:, 1].mean(axis=(1, 2))
    assert blue[ds.train.y == 1].mean() < blue[ds.train.y == 0].mean()


def test_corrupt_jpeg_empty_folder_and_mixed_layout_are_named(flat_folder, tmp_path, class_folder):
    bad = flat_folder / "im3.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match=r"im3\.jpg: not a readable image"):
        load_dataset("imagefolder", root=str(flat_folder), class_names=["a", "b"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*empty folder"):
        load_dataset("imagefolder", root=str(tmp_path / "empty"))
    (tmp_path / "nofiles" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"nofiles: empty folder"):
        load_dataset("imagefolder", root=str(tmp_path / "nofiles"))
    _img(class_folder / "stray.png", 99)
    with pytest.raises(ValueError, match=r"mixes images at the top level \(stray\.png\)"):
        load_dataset("imagefolder", root=str(class_folder))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset("imagefolder", root=str(tmp_path / "nowhere"))


def test_trusted_label_errors_name_file_line_and_value(flat_folder, tmp_path, class_folder):
    trusted = tmp_path / "t.csv"
    trusted.write_text("item,label\nim1.jpg,dog\nim2.jpg,horse\n")
    unknown_class = r"t\.csv: line 3: label 'horse' is not a class; known classes: \['cat', 'dog'\]"
    with pytest.raises(ValueError, match=unknown_class):
        load_dataset("imagefolder", root=str(flat_folder), class_names=["cat", "dog"], trusted_labels=str(trusted))
    trusted.write_text("item,label\nim9.jpg,dog\n")
    with pytest.raises(ValueError, match=r"t\.csv: line 2: item 'im9\.jpg' is not an image in the folder"):
        load_dataset("imagefolder", root=str(flat_folder), class_names=["cat", "dog"], trusted_labels=str(trusted))
    trusted.write_text("item,label\ncat/00.jpg,dog\n")
    with pytest.raises(ValueError, match=r"line 2: item 'cat/00\.jpg' labelled 'dog', but its folder says 'cat'"):
        load_dataset("imagefolder", root=str(class_folder), trusted_labels=str(trusted))
    with pytest.raises(ValueError, match=r"sub-folder 'bird' is not a class"):
        load_dataset("imagefolder", root=str(class_folder), class_names=["cat", "dog"])


# ------------------------------------------------------------------------------------ tables
def _frame(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": [f"item-{i:03d}" for i in rng.permutation(n)], "f1": rng.normal(size=n),
                         "f2": rng.integers(0, 100, size=n).astype(float), "note": ["x"] * n,
                         "label": [["spam", "ham", ""][i % 3] for i in range(n)]})


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_table_string_ids_and_labels(tmp_path, fmt):
    df = _frame()
    path = tmp_path / f"items.{fmt}"
    {"parquet": lambda: df.to_parquet(path), "csv": lambda: df.to_csv(path, index=False),
     "jsonl": lambda: df.to_json(path, orient="records", lines=True)}[fmt]()
    ds = load_dataset("table", path=str(path), test_size=0.25)
    full = pd.concat([pd.DataFrame({"key": ds.train.keys, "y": ds.train.y, "id": ds.train.ids}),
                      pd.DataFrame({"key": ds.test.keys, "y": ds.test.y, "id": ds.test.ids})]).sort_values("id")
    assert list(full["key"]) == sorted(df["id"])
    assert ds.train.class_names == ["ham", "spam"] and ds.train.X.shape[1] == 2  # f1, f2; note is text
    truth = dict(zip(df["id"], df["label"].map({"ham": 0, "spam": 1, "": -1})))
    assert [truth[k] for k in full["key"]] == full["y"].tolist()
    assert ds.train.X.min() == 0 and ds.train.X.max() == 1 and ds.train.media is None
    ds = load_dataset("table", path=str(path), feature_columns=["f2"], class_names=["spam", "ham", "eggs"])
    assert ds.train.X.shape == (12, 1) and ds.train.n_classes == 3
    pos = ds.train.positions([0])
    assert ds.train.y[pos][0] == {"spam": 0, "ham": 1, "": -1}[df.set_index("id").loc[ds.train.keys[0], "label"]]


def test_csv_ids_stay_strings(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,v\n007,1\n7,2\n010,3\n")
    assert list(load_dataset("table", path=str(path), class_names=["a"]).train.keys) == ["007", "010", "7"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="abcXYZ019-_/ .é", min_size=1, max_size=8).filter(lambda s: s.strip() == s),
                min_size=2, max_size=15, unique=True))
def test_keys_ids_round_trip(keys):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.parquet"
        pd.DataFrame({"id": keys, "v": np.arange(len(keys), dtype=float)}).to_parquet(path)
        p = load_dataset("table", path=str(path), class_names=["a"]).train
    assert np.array_equal(p.ids, np.arange(len(keys)))
    assert list(p.keys) == sorted(keys)
    by_key = {k: v for v, k in enumerate(keys)}
    raw = np.array([by_key[k] for k in p.keys], dtype=float)
    np.testing.assert_allclose(p.X[:, 0], raw / (len(keys) - 1), atol=1e-6)
    sub = p.subset(p.ids[::-1])
    assert [by_key[k] for k in sub.keys] == [int(round(x * (len(keys) - 1))) for x in sub.X[:, 0]]


def test_table_errors_name_file_and_key(tmp_path, monkeypatch):
    df = _frame()
    pq_path = tmp_path / "t.parquet"
    df.rename(columns={"id": "item"}).to_parquet(pq_path)
    with pytest.raises(ValueError, match=r"t\.parquet: no id .*column 'id'; its columns are item, f1, f2, note, label"):
        load_dataset("table", path=str(pq_path))
    csv = tmp_path / "t.csv"
    csv.write_text("id,f1,label\na,1,x\nb,2,y\na,3,x\n")
    with pytest.raises(ValueError, match=r"t\.csv: duplicate item id 'a'"):
        load_dataset("table", path=str(csv))
    csv.write_text("id,f1,label\na,1,x\nb,2,z\n")
    with pytest.raises(ValueError, match=r"t\.csv: line 3: label 'z' is not a class; known classes: \['x', 'y'\]"):
        load_dataset("table", path=str(csv), class_names=["x", "y"])
    csv.write_text("id,f1,f2\nb,1,2\na,inf,3\n")
    with pytest.raises(ValueError, match=r"t\.csv: line 3: feature 0 is inf"):
        load_dataset("table", path=str(csv), class_names=["x"])
    csv.write_text("id,f1,f2\nb,1,2\na,4,nan\n")
    with pytest.raises(ValueError, match=r"t\.csv: line 3: feature 1 is nan"):
        load_dataset("table", path=str(csv), class_names=["x"])
    csv.write_text("")
    with pytest.raises(ValueError, match=r"t\.csv: empty file"):
        load_dataset("table", path=str(csv))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"t\.parquet: reading Parquet needs pyarrow: pip install pyarrow"):
        load_dataset("table", path=str(pq_path))


@pytest.mark.parametrize("name, options", [
    ("digits", {"seed": 0, "test_siz": 0.2}),
    ("imagefolder", {"root": "x", "imagesize": 32}),
    ("table", {"path": "x", "label": "y"}),
    ("text", {"path": "x", "n_component": 5}),
    ("cifar2", {"n_trian": 5}),
])
def test_unknown_option_is_one_line_naming_the_key(name, options):
    bad = next(k for k in options if k not in ("seed", "root", "path"))
    with pytest.raises(ValueError, match=rf"^data\.options\.{bad}: unknown option; accepted keys: .*") as e:
        load_dataset(name, **options)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"^data\.options\.root is required"):
        load_dataset("imagefolder")


# ------------------------------------------------------------------------------------ texts
TEXTS = ["a great and moving film", "dull , slow and far too long", "great acting , great story",
         "a waste of time", "moving and funny", "slow , dull , boring", "funny and great", "boring film"]


def test_text_csv_and_jsonl_same_pool(tmp_path):
    rows = [{"id": f"r{i}", "text": t, "label": ["pos", "neg"][i % 2]} for i, t in enumerate(TEXTS)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = load_dataset("text", path=str(tmp_path / "t.csv"), n_components=4, seed=1).train
    b = load_dataset("text", path=str(tmp_path / "t.jsonl"), n_components=4, seed=1).train
    assert a.X.shape == (8, 4) and np.array_equal(a.X, b.X)
    assert a.media_kind == "text" and a.media[0] == TEXTS[0] and a.class_names == ["neg", "pos"]
    assert a.X.min() == 0 and a.X.max() == 1
    # new texts are featurized by the same (refitted) TF-IDF + SVD: the pool's own rows come back unchanged
    keys, X = load_inputs("text", {"path": str(tmp_path / "t.csv"), "n_components": 4, "seed": 1},
                          tmp_path / "t.jsonl")
    assert list(keys) == [r["id"] for r in rows]
    np.testing.assert_allclose(X[np.argsort(keys)], a.X, atol=1e-5)


def test_sentiment_polarity_subsample(tmp_path):
    root = default_datasets_dir() / "sentiment_polarity"
    if not root.exists():
        pytest.skip("shared sentiment_polarity folder absent")
    texts = (root / "Sentiment_text_train.txt").read_text(encoding="utf-8", errors="replace").splitlines()
    gold = np.loadtxt(root / "Sentiment_Z_train.txt", dtype=int)
    assert len(texts) == len(gold)
    rows = np.random.default_rng(0).choice(len(texts), 1200, replace=False)
    pd.DataFrame({"id": [f"s{r}" for r in rows], "text": [texts[r] for r in rows],
                  "label": [["negative", "positive"][gold[r]] for r in rows]}).to_csv(tmp_path / "s.csv", index=False)
    ds = load_dataset("text", path=str(tmp_path / "s.csv"), n_components=50, test_size=0.25, seed=0)
    assert ds.train.X.shape == (900, 50) and len(ds.test) == 300
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(ds.train.X, ds.train.y)
    # measured 0.633 (chance 0.5): short sentences, 900 of them, carry some sentiment in 50 SVD dimensions
    assert clf.score(ds.test.X, ds.test.y) > 0.58


# ------------------------------------------------------------------------------------ from Python
def test_from_arrays_and_from_torch():
    import torch

    X = np.random.default_rng(0).normal(size=(10, 3))
    ds = Dataset.from_arrays(X, ["b", "a"] * 5, keys=[f"k{i}" for i in range(10)], test=(X[:4], ["a"] * 4))
    assert ds.train.class_names == ["a", "b"] and ds.train.y[:2].tolist() == [1, 0]
    assert ds.train.keys[3] == "k3" and np.array_equal(ds.train.ids, np.arange(10))
    assert ds.train.X.min() == 0 and ds.train.X.max() == 1 and len(ds.test) == 4
    with pytest.raises(ValueError, match=r"duplicate item id 'k'"):
        Dataset.from_arrays(X, keys=["k"] * 10, class_names=["a"])
    with pytest.raises(ValueError, match=r"X\[2\]: feature 1 is nan"):
        Dataset.from_arrays(np.where(np.arange(30).reshape(10, 3) == 7, np.nan, X), class_names=["a"])

    class Toy(torch.utils.data.Dataset):
        classes = ("zero", "one")

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.full((3, 4, 4), i / 10.0), i % 2

    ds = Dataset.from_torch(Toy(), test=Toy())
    assert ds.train.X.shape == (6, 3, 4, 4) and ds.train.is_image and ds.train.class_names == ["zero", "one"]
    assert ds.train.y.tolist() == [0, 1, 0, 1, 0, 1] and np.allclose(ds.train.X[5], 0.5)


# ------------------------------------------------------------------------------------ backbone
@pytest.fixture
def weights(tmp_path):
    import torch

    from robust_al.data.backbone import import_torchvision

    torch.manual_seed(0)
    path = tmp_path / "resnet18.pt"
    torch.save(import_torchvision().models.resnet18(weights=None).state_dict(), path)
    return path


def test_backbone_features_are_deterministic_and_scaled(class_folder, weights, tmp_path):
    options = {"root": str(class_folder), "image_size": 32, "backbone": {"arch": "resnet18", "weights": str(weights)}}
    a, b = load_dataset("imagefolder", **options).train, load_dataset("imagefolder", **options).train
    assert a.X.shape == (12, 512) and a.X.dtype == np.float32 and np.array_equal(a.X, b.X)
    assert a.X.min() == 0 and a.X.max() == 1 and not a.is_image and a.media_kind == "image"
    keys, X = load_inputs("imagefolder", options, class_folder / "cat")
    assert list(keys) == ["00.jpg", "01.png", "02.jpg", "03.png"]
    np.testing.assert_allclose(X, a.X[4:8], atol=1e-5)
    layer = load_dataset("imagefolder", **{**options, "backbone": {**options["backbone"], "layer": "layer3"}})
    assert layer.train.X.shape == (12, 256 * 2 * 2)


def test_backbone_errors(class_folder, weights, tmp_path):
    base = {"root": str(class_folder)}
    with pytest.raises(FileNotFoundError, match=r"backbone\.weights: .*nope\.pt not found.*never downloaded"):
        load_dataset("imagefolder", **base, backbone={"arch": "resnet18", "weights": str(tmp_path / "nope.pt")})
    with pytest.raises(ValueError, match=r"^data\.options\.backbone\.wieghts: unknown option"):
        load_dataset("imagefolder", **base, backbone={"arch": "resnet18", "wieghts": str(weights)})
    with pytest.raises(ValueError, match=r"resnet18\.pt: not a state_dict of torchvision's resnet34"):
        load_dataset("imagefolder", **base, backbone={"arch": "resnet34", "weights": str(weights)})


# ------------------------------------------------------------------------------------ new inputs, configs
def test_load_inputs_images_and_tables(class_folder, tmp_path):
    keys, X = load_inputs("imagefolder", {"root": str(class_folder), "image_size": 16}, class_folder)
    pool = load_dataset("imagefolder", root=str(class_folder), image_size=16).train
    assert list(keys) == list(pool.keys) and np.array_equal(X, pool.X)
    one = _img(tmp_path / "new.png", 5, size=(64, 40))
    keys, X = load_inputs("imagefolder", {"root": str(class_folder), "image_size": 16}, one)
    assert list(keys) == ["new.png"] and X.shape == (1, 3, 16, 16)
    df = _frame()
    df.to_csv(tmp_path / "t.csv", index=False)
    opts = {"path": str(tmp_path / "t.csv"), "test_size": 0.25}
    ds = load_dataset("table", **opts)
    new = df.iloc[[0, 1]].copy()
    new["f1"] = [df["f1"].max() + 100, df["f1"].min()]
    new.drop(columns=["label"]).to_parquet(tmp_path / "new.parquet")
    keys, X = load_inputs("table", opts, tmp_path / "new.parquet")
    assert list(keys) == list(new["id"]) and X.shape == (2, 2) and X[0, 0] == 1.0  # clipped like the test split
    np.save(tmp_path / "new.npy", new[["f1", "f2"]].to_numpy())
    assert np.array_equal(load_inputs("table", opts, tmp_path / "new.npy")[1], X)
    assert ds.train.X.shape[1] == 2
    with pytest.raises(ValueError, match=r"new\.csv: no feature column 'f2'"):
        new[["id", "f1"]].to_csv(tmp_path / "new.csv", index=False)
        load_inputs("table", opts, tmp_path / "new.csv")


def test_imagefolder_config_validates():
    cfg = load_config("configs/imagefolder.yaml")
    assert cfg.data.name == "imagefolder" and "root" in cfg.data.options
