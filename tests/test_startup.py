"""A campaign that cannot run is refused before anything is written; broken stores give one-line errors."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import yaml
from conftest import tiny_config

from robust_al.campaign import Campaign
from robust_al.cli import main
from robust_al.config import ConfigError, load_config
from robust_al.data.loaders import load_digits_dataset
from robust_al.data.pool import Dataset, Pool
from robust_al.store import RunStore, StoreError


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _config_file(tmp_path, **over) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(**over)))
    return str(path)


@pytest.mark.parametrize("over, key", [
    ({"annotators.k": 12}, "annotators.k = 12, but the crowd has 11 labelers"),
    ({"stop.budget": 2}, "stop.budget = 2 buys no item"),
    ({"holdout.size": 5000}, "holdout.size = 5000, but only"),
])
def test_an_impossible_campaign_is_refused_with_nothing_written(tmp_path, capsys, over, key):
    run_dir = tmp_path / "run"
    code, err = _cli(capsys, "run", _config_file(tmp_path, **over), "--run-dir", str(run_dir), "--no-progress")
    assert code == 2 and key in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not run_dir.exists()


def test_a_pool_without_trusted_labels_cannot_have_a_secured_holdout(tmp_path):
    digits = load_digits_dataset()
    unlabeled = Pool(digits.train.ids, digits.train.X, np.full(len(digits.train.ids), -1), 10)
    ds = Dataset("unlabeled", unlabeled, digits.test)
    with pytest.raises(ConfigError, match="holdout.size = 60, but only 0 pool items have a trusted label"):
        Campaign.create(load_config(data=tiny_config(**{"annotators.kind": "labelstudio",
                                                        "annotators.labelstudio": {"url": "http://127.0.0.1:9"}})),
                        tmp_path / "run", dataset=ds, echo=None)
    assert not (tmp_path / "run").exists()


def test_a_failed_start_does_not_block_a_retry(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "campaign.sqlite").write_bytes(b"")  # what a kill in the first instant leaves
    code, err = _cli(capsys, "status", str(run_dir))
    assert code == 2 and "empty or not a robust-al campaign store" in err and len(err.splitlines()) == 1
    assert (run_dir / "campaign.sqlite").stat().st_size == 0  # no schema written into it
    camp = Campaign.create(load_config(data=tiny_config()), run_dir, echo=None)  # the retry just works
    assert camp.store.get_meta("config")["name"] == "tiny"


def test_a_run_holding_answers_is_never_replaced(tmp_path):
    run_dir = tmp_path / "run"
    store = RunStore(run_dir)
    store.add_annotation(1, "w", 0, 0, "query")  # paid for, though no config was stored
    store.close()
    with pytest.raises(FileExistsError, match="already holds a campaign"):
        Campaign.create(load_config(data=tiny_config()), run_dir, echo=None)
    assert len(RunStore(run_dir).annotations()) == 1


@pytest.mark.parametrize("command", [["status"], ["trust"], ["run", "--resume"]])
def test_a_corrupt_store_is_a_one_line_error(tmp_path, capsys, command):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "campaign.sqlite").write_bytes(b"this is not a database, it is garbage" * 100)
    code, err = _cli(capsys, *command, str(run_dir))
    assert code == 2 and str(run_dir / "campaign.sqlite") in err and "corrupt" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_store_from_a_newer_version_is_detected(tmp_path):
    RunStore(tmp_path).close()
    con = sqlite3.connect(tmp_path / "campaign.sqlite")
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(StoreError, match="written by a newer robust-al"):
        RunStore(tmp_path, create=False)


def _generic(tmp_path, X, rows, truth=None) -> dict:
    np.save(tmp_path / "f.npy", X)
    (tmp_path / "a.csv").write_text("item,worker,label\n" + "".join(f"{i},{w},{lab}\n" for i, w, lab in rows))
    opts = {"features": str(tmp_path / "f.npy"), "annotations": str(tmp_path / "a.csv")}
    if truth is not None:
        (tmp_path / "t.csv").write_text("item,label\n" + "".join(f"{i},{lab}\n" for i, lab in truth))
        opts["truth"] = str(tmp_path / "t.csv")
    return opts


@pytest.mark.parametrize("case, message", [
    ("inf", "f.npy"), ("conflict", "worker 'w1' answers item 3 with 1, but line 2 says 0"),
    ("truth27", "truth label 27 is not a class of the answers"),
])
def test_silent_misreads_of_a_generic_crowd_are_refused_before_anything_is_written(tmp_path, capsys, case, message):
    X = np.random.default_rng(0).random((40, 3))
    rows = [(i, f"w{j}", i % 2) for i in range(40) for j in range(3)]
    truth = [(i, i % 2) for i in range(40)]
    if case == "inf":
        X[7, 1] = np.inf
    if case == "conflict":
        rows = [(3, "w1", 0), (3, "w1", 1), *rows[12:]]
    if case == "truth27":
        truth[5] = (5, 27)
    opts = _generic(tmp_path, X, rows, truth)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(**{"data": {"name": "generic", "options": opts},
                                                 "annotators.kind": "replay", "holdout.size": 4})))
    code, err = _cli(capsys, "run", str(cfg), "--run-dir", str(tmp_path / "run"), "--no-progress")
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_verbatim_repeated_row_is_one_answer(tmp_path):
    from robust_al.data.loaders import load_generic_crowd

    X = np.random.default_rng(0).random((20, 3))
    rows = [(i, f"w{j}", i % 2) for i in range(20) for j in range(2)]
    ds = load_generic_crowd(**_generic(tmp_path, X, rows + rows[:5]), test_size=0.2)
    rec = ds.recorded
    assert len(rec) == len(rec.drop_duplicates(["task", "worker"])) and len(rec) <= 40


def test_a_batch_of_answers_is_stored_whole_or_not_at_all(tmp_path):
    """A write that fails part-way (here a repeated (item, worker) pair at the end; a full disk or a kill
    alike) leaves none of its rows: the store's transactions are real ones in SQLite's autocommit mode."""
    store = RunStore(tmp_path)
    store.add_annotations([(1, "a", 0)], 0, "query")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_annotations([(2, "a", 1), (3, "a", 1), (1, "a", 1)], 0, "query")
    assert store.annotations()[["task", "worker", "label"]].values.tolist() == [[1, "a", 0]]
    assert store.count_annotations() == 1  # the trigger's count rolled back with the rows
    # Ctrl-C / SIGTERM between two statements of one transaction
    with pytest.raises(KeyboardInterrupt), store.transaction():
        store.set_status([2], "labeled", 0)
        raise KeyboardInterrupt
    assert store.statuses() == {}
    store.set_status([2, 3], "labeled", 0)
    assert store.statuses() == {2: "labeled", 3: "labeled"} and not store.db.in_transaction
    store.close()
