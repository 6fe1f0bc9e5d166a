"""The campaign loop end to end on tiny digits campaigns: trust, the secured holdout, kill -9 and resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import yaml

from conftest import tiny_config
from robust_al.campaign import Campaign
from robust_al.store import RunStore, progress
from robust_al.trust import TrustLedger


def final_state(run_dir):
    store = RunStore(run_dir)
    labeled = sorted(i for i, s in store.statuses().items() if s == "labeled")
    ann = store.annotations()
    trust = TrustLedger(sorted(ann["worker"].unique()), store).table()
    return labeled, trust, ann


def test_malicious_labeler_ends_with_the_lowest_trust(tmp_path, tiny):
    result = Campaign.create(tiny(), tmp_path / "run", echo=None).run(progress=False)
    trust = result.metrics["trust"]
    honest = [t for w, t in trust.items() if w.startswith("benign")]
    assert trust["malicious0"] < min(honest)
    assert result.metrics["test_acc"] > 0.8
    assert result.stop.startswith("label budget spent")


def test_holdout_items_never_reach_any_annotator(tmp_path, tiny):
    # refresh S every iteration so that many different items are held out over the campaign
    camp = Campaign.create(tiny(**{"holdout.refresh_every": 1, "stop.budget": 240}), tmp_path / "run", echo=None)
    camp.run(progress=False)
    store = RunStore(tmp_path / "run")
    held = store.items_with_status(["holdout", "retired"])
    assert len(held) >= 3 * 60  # S was drawn anew at least three times
    assert held.isdisjoint(set(store.annotations()["task"]))


def test_a_batch_queued_ahead_is_never_held_out(tmp_path, tiny):
    """annotators.lookahead: S is drawn anew each iteration while a batch is queued ahead, and never from it (its
    items are in people's hands)."""
    camp = Campaign.create(tiny(**{"holdout.refresh_every": 1, "stop.budget": 240, "annotators.lookahead": 1}),
                           tmp_path / "run", echo=None)
    camp.run(progress=False)
    store = RunStore(tmp_path / "run")
    held_at = store.status_history("holdout")
    queued = 0
    for it in range(1, store.last_iteration() + 1):
        ahead = store.batch(it, "ahead")
        if ahead is not None:  # queued during it - 1; S of iteration it was drawn after
            queued += 1
            assert {i for i, j in held_at if j == it}.isdisjoint(ahead.tolist())
    assert queued >= 2


def test_with_nothing_answered_ahead_the_batches_are_the_synchronous_loops(tmp_path, tiny):
    """A crowd that answers only when asked answers nothing of a batch queued ahead: each is settled as the
    synchronous loop chooses its batch, so the two campaigns ask the same items and end alike."""
    runs = {}
    for ahead in (0, 1):
        camp = Campaign.create(tiny(**{"annotators.lookahead": ahead, "stop.budget": 240}), tmp_path / f"la{ahead}",
                               echo=None)
        runs[ahead] = camp.run(progress=False)
        runs[ahead].batches = [camp.store.batch(it, "query").tolist() for it in range(runs[ahead].iteration + 1)]
    assert runs[0].batches == runs[1].batches and runs[0].metrics["trust"] == runs[1].metrics["trust"]
    assert runs[1].metrics["ahead_items"] == 0 and "ahead_items" not in runs[0].metrics


def _spread(X: np.ndarray, chosen: np.ndarray, covered: np.ndarray) -> float:
    """Mean over the pool of the distance to the nearest of ``covered`` + ``chosen``: lower covers better."""
    C = X[np.concatenate([covered, chosen])]
    return float(np.sqrt(((X[:, None, :] - C[None]) ** 2).sum(-1)).min(1).mean())


@pytest.mark.parametrize("strategy,spread_out", [("maxmin", True), ("entropy", False)])
def test_the_batch_queued_behind_the_first_covers_the_pool_when_the_strategy_can_choose_without_a_model(
        tmp_path, tiny, strategy, spread_out):
    """There is no model when the batch behind the random first one is queued. Max-min chooses it in the
    untrained network's feature space (a random projection of the input for an MLP): it covers the pool better
    than every one of 50 random draws of its size, by two of their standard deviations. Entropy needs a model's
    probabilities: that batch is random."""
    camp = Campaign.create(tiny(**{"annotators.lookahead": 1, "query.strategy": strategy}), tmp_path / "run",
                           echo=None)
    camp.load_state()
    camp.timings = {}
    camp.secure_holdout(0)
    first = camp.choose_batch(0, {})
    ahead = camp.post_ahead(0, first)
    assert ahead is not None and len(ahead) == 30 and not np.isin(ahead, first).any()
    X = camp.pool.X
    pos_first, pos_ahead = camp.pool.positions(first), camp.pool.positions(ahead)
    free = np.setdiff1d(np.arange(len(camp.pool)), np.concatenate([pos_first, pos_ahead]))
    rng = np.random.default_rng(0)
    randoms = [_spread(X, rng.choice(free, len(ahead), replace=False), pos_first) for _ in range(50)]
    # measured: max-min 1.44, random draws 1.51-1.58 (sd 0.015), the entropy campaign's 1.51
    assert bool(_spread(X, pos_ahead, pos_first) < min(randoms) - 2 * np.std(randoms)) is spread_out


def test_a_routed_out_labeler_gets_no_queries_while_routed_out(tmp_path, tiny):
    # spammers are routed out early (interval under the threshold, or flagged); while routed out they receive
    # nothing. A routed-out labeler whose interval reaches above tau again is let back (measured here: a spammer
    # at trust 0.11 whose upper bound moved from 0.55 to 0.602 over tau = 0.6 as the model's testimony changed,
    # with no new label of its own): routing on agreement alone never excludes a labeler the evidence cannot
    cfg = tiny(**{"annotators.labelers": [{"kind": "benign", "count": 6, "pr": 0.05},
                                          {"kind": "spammer", "count": 2}],
                  "trust.threshold": 0.6, "stop.budget": 450})
    Campaign.create(cfg, tmp_path / "run", echo=None).run(progress=False)
    store = RunStore(tmp_path / "run")
    ann, metrics = store.annotations(), store.metrics()
    for spammer in ("spammer0", "spammer1"):
        routed = [m["iteration"] for m in metrics if spammer in m["routed_out"]]
        assert routed and routed[0] <= 1, f"{spammer} was not routed out early"
        for i in routed:
            assert ann[(ann["worker"] == spammer) & (ann["iteration"] == i + 1)].empty
        assert spammer in metrics[-1]["routed_out"]
        assert len(ann[ann["worker"] == spammer]) < len(ann) / 8 / 2  # under half an even share
    assert not any(w.startswith("benign") for m in metrics for w in m["routed_out"])


def _run_cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "robust_al.cli", "run", *args, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_kill_9_mid_iteration_then_resume_loses_nothing_and_asks_nothing_twice(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(**{"holdout.refresh_every": 2})))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _run_cli([str(cfg_path), "--run-dir", str(whole)]).wait(timeout=600) == 0

    proc = _run_cli([str(cfg_path), "--run-dir", str(killed)])
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until iteration 2 has stored answers but is not complete
        seen = progress(killed)
        if seen["answers"].get(2) and 2 not in seen["completed"]:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the campaign never reached iteration 2")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = RunStore(killed).annotations()
    assert (before["iteration"] == 2).any()

    out = _run_cli(["--resume", str(killed)])
    log = out.communicate(timeout=600)[0]
    assert out.returncode == 0, log
    assert "resuming at iteration 2" in log

    labeled_w, trust_w, ann_w = final_state(whole)
    labeled_k, trust_k, ann_k = final_state(killed)
    # every answer stored before the kill is still there, unchanged (same row, same timestamp)
    kept = before.merge(ann_k, on=["id", "task", "worker", "label", "iteration", "purpose", "created_at"])
    assert len(kept) == len(before)
    # nothing was asked twice (the store's (item, worker) key would have refused it) and nothing extra
    cols = ["task", "worker", "label", "iteration", "purpose"]
    pd.testing.assert_frame_equal(ann_k[cols].sort_values(cols).reset_index(drop=True),
                                  ann_w[cols].sort_values(cols).reset_index(drop=True))
    # and the campaign ends exactly where the uninterrupted one did
    assert labeled_k == labeled_w
    assert trust_k == trust_w


def test_resuming_a_finished_campaign_changes_nothing(tmp_path, tiny):
    Campaign.create(tiny(**{"stop.budget": 120}), tmp_path / "run", echo=None).run(progress=False)
    n = len(RunStore(tmp_path / "run").annotations())
    msgs = []
    Campaign.resume(tmp_path / "run", echo=msgs.append).run(progress=False)
    assert msgs and msgs[0].startswith("campaign already finished")
    assert len(RunStore(tmp_path / "run").annotations()) == n


def test_secured_check_reexamines_and_cuts_only_the_liar(tmp_path, tiny):
    # one labeler lies on 90% of its items; with epsilon = 0 and no significance test any drop on S triggers
    # re-examination by h
    # independent labelers, whose consistent relabels may contradict only the liar
    cfg = tiny(**{"annotators.k": 1, "annotators.labelers": [
        {"kind": "benign", "count": 5, "pr": 0.0},
        {"kind": "colluding", "count": 1, "rate": 0.9, "pr": 0.0, "name": "liar"}],
        "trust.epsilon": 0.0, "trust.significance": None, "stop.budget": 600, "stop.max_iterations": 12,
        "query.initial": 60})
    result = Campaign.create(cfg, tmp_path / "run", echo=None).run(progress=False)
    store = RunStore(tmp_path / "run")
    assert any(m["secured_check"] == "re-examined" for m in store.metrics())
    assert (store.annotations()["purpose"] == "reexam").any()
    cuts = store.trust_events()
    cuts = cuts[cuts["reason"].str.startswith("contradicted")]
    assert not cuts.empty and (cuts["worker"] == "liar0").all()
    trust = result.metrics["trust"]
    assert trust["liar0"] < min(t for w, t in trust.items() if w != "liar0")
    # trust.reexamine = 'suspicious': only labels F_{i-1} disagreed with out of sample were relabeled
    ann = store.annotations()
    oos = store.predictions().set_index("item_id")["label"]
    relabeled = ann.loc[ann["purpose"] == "reexam", "task"].unique()
    first = ann[(ann["purpose"] == "query") & ann["task"].isin(relabeled)]
    disagreed = pd.Series(first["label"].to_numpy() != oos.loc[first["task"]].to_numpy(), index=first["task"])
    assert disagreed.groupby(level=0).any().all()


@pytest.mark.parametrize("learner", ["malc", "crowdlayer-mw"])
def test_the_loop_trains_any_crowd_learner(tmp_path, tiny, learner):
    cfg = tiny(**{"model.learner": learner, "model.epochs": 6, "model.trust_prior": 5.0, "model.min_steps": 120,
                  "model.learner_options": {"pgd_steps": 3} if learner in ("alfc", "malc") else {},
                  "stop.budget": 180})
    camp = Campaign.create(cfg, tmp_path / "run", echo=None)
    result = camp.run(progress=False)
    assert camp.augmenter.clf.model is camp.net.model  # ART attacks the learner's live network
    assert result.metrics["test_acc"] > 0.6
    # every labeler was scored on all its labels through this learner's inference (with ~16 labels, 1-2 of them
    # of the targeted class, the malicious one is not yet confidently bad: its interval is what says so)
    store = RunStore(tmp_path / "run")
    last = store.trust_events().groupby("worker").tail(1).set_index("worker")
    given = store.labels_per_worker()
    assert (last["n"].reindex(given.index) == given).all()
    assert (last["lower"] <= last["score"] + 1e-9).all() and (last["upper"] - last["lower"]).min() > 0.02


def test_a_drop_on_S_within_chance_does_not_trigger_reexamination():
    from robust_al.campaign.secured import drop_p_value

    right = np.ones(200, dtype=bool)
    lost_12 = right.copy()
    lost_12[:12] = False  # 12 items lost, none gained: p = 0.5 ** 12
    assert drop_p_value(right, lost_12) == pytest.approx(0.5 ** 12)
    before = right.copy()
    before[:2] = False
    after = right.copy()
    after[2:5] = False  # lost 3, gained 2: a 0.5-point drop both ways by chance
    assert drop_p_value(before, after) >= 0.5
    assert drop_p_value(right, right) == 1.0


def test_a_campaign_does_not_depend_on_the_process_random_state(tmp_path, tiny):
    # ART's PGD draws its random start from numpy's global generator
    cfg = tiny(**{"augment.attacks": ["pgd"], "stop.max_iterations": 3, "stop.budget": 270})
    curves = []
    for k, state in enumerate((1, 12345)):
        np.random.seed(state)
        Campaign.create(cfg, tmp_path / f"run{k}", echo=None).run(progress=False)
        curves.append([(m["labels_used"], m["test_acc"], m["mean_min_perturbation"])
                       for m in RunStore(tmp_path / f"run{k}").metrics()])
    assert curves[0] == curves[1]


def test_overlap_puts_a_second_distinct_labeler_on_a_share_of_each_batch_within_the_budget(tmp_path, tiny):
    cfg = tiny(**{"annotators.k": 1, "annotators.overlap": 0.4, "stop.budget": 150, "stop.max_iterations": 4})
    Campaign.create(cfg, tmp_path / "run", echo=None).run(progress=False)
    ann = RunStore(tmp_path / "run").annotations()
    assert len(ann) <= 150
    query, extra = ann[ann["purpose"] == "query"], ann[ann["purpose"] == "overlap"]
    assert query.groupby("task").size().max() == 1
    assert 0.25 < len(extra) / len(query) < 0.55  # about the share asked for
    assert set(extra["task"]) <= set(query["task"])  # only queried items, never a new one
    first = query.set_index("task")["worker"]
    assert (extra["worker"].to_numpy() != first.loc[extra["task"]].to_numpy()).all()  # a different labeler


def test_the_model_testifies_per_confidence_band_with_its_accuracy_on_S_in_that_band(tmp_path, tiny):
    """A model right on 90 % of S but at chance on the items it is unsure of must not be trusted on those."""
    from robust_al.crowd import confidence_band, model_worker

    camp = Campaign.create(tiny(**{"annotators.k": 1, "stop.max_iterations": 3}), tmp_path / "run", echo=None)
    camp.run(progress=False)
    counts = camp.model_counts()
    pred = camp.store.predictions()
    band = confidence_band(pred["score"].to_numpy(), camp.pool.n_classes)
    workers = {model_worker(i, b) for i, b in zip(pred["iteration"], band)}
    assert workers <= set(counts)  # every testimony has the confusion of its own band
    stored = camp.store.model_confusions()
    assert all(c.shape == (3, camp.pool.n_classes, camp.pool.n_classes) for c in stored.values())
    held = len(camp.store.items_with_status(["holdout"]))
    assert all(c.sum() == held for c in stored.values())  # every S item in exactly one band
    assert list(confidence_band(np.array([0.1, 0.45, 0.5, 0.85]), 10)) == [0, 0, 1, 2]  # u < 0.4, < 0.8, above
    assert list(confidence_band(np.array([0.5, 0.69, 0.71, 0.91]), 2)) == [0, 0, 1, 2]
