"""Robustness evaluation harness: attack sanity on a tiny separable crowd problem, confusion-recovery metric."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from robust_al.crowd.learners import make_learner
from robust_al.evaluate import (
    adversarial_examples,
    black_box_accuracy,
    confusion_recovery_error,
    robustness_table,
    train_substitute,
    true_confusions,
    white_box_accuracy,
)

D = 10
ATTACKS = ("fgsm", "pgd", "mim", "cw", "cw-margin")


def tiny_crowd(n=240, seed=0):
    """2 classes, separable in [0, 1]^D (class means 0.35 / 0.65 in every feature), 5 workers of known quality."""
    rng = np.random.default_rng(seed)
    y = rng.integers(2, size=n)
    X = np.clip(0.35 + 0.3 * y[:, None] + rng.normal(0, 0.06, size=(n, D)), 0, 1).astype(np.float32)
    acc = [0.95, 0.9, 0.85, 0.7, 0.6]
    rows = []
    for i in range(n):
        for w in rng.choice(5, size=3, replace=False):
            rows.append((i, f"w{w}", int(y[i] if rng.random() < acc[w] else 1 - y[i])))
    return X, y, pd.DataFrame(rows, columns=["task", "worker", "label"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """ART's C&W makes many tiny torch calls: on a shared 2-core box, 2 intra-op threads made it ~6x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def fitted():
    X, y, ann = tiny_crowd()
    target = make_learner("mv", 2, (D,), epochs=30, seed=0).fit(X, ann)
    substitute = train_substitute(X, ann, None, 2, seed=1, epochs=30)
    Xt, yt, _ = tiny_crowd(n=160, seed=1)
    return target, substitute, Xt, yt, ann, y


def test_learners_are_accurate_on_clean_inputs(fitted):
    target, substitute, X, y, *_ = fitted
    assert (target.predict(X) == y).mean() > 0.95
    assert (substitute.predict(X) == y).mean() > 0.95
    assert substitute.model.head.in_features == 32  # A-LFC's substitute: one hidden layer of 32 units


@pytest.mark.parametrize("attack", ATTACKS)
def test_eps_zero_gives_the_clean_accuracy(fitted, attack):
    target, _, X, y, *_ = fitted
    clean = (target.predict(X) == y).mean()
    assert white_box_accuracy(target, X, y, attack, 0.0) == pytest.approx(clean)


def test_pgd_accuracy_does_not_increase_with_eps(fitted):
    target, _, X, y, *_ = fitted
    accs = [white_box_accuracy(target, X, y, "pgd", e) for e in (0.0, 0.05, 0.1, 0.13, 0.16, 0.2)]
    assert all(b <= a + 0.01 for a, b in itertools.pairwise(accs)), accs
    assert accs[-1] < accs[0] - 0.5, accs  # the grid actually bites


@pytest.mark.parametrize("eps", [0.1, 0.15, 0.2])
def test_pgd_is_at_least_as_strong_as_fgsm(fitted, eps):
    target, _, X, y, *_ = fitted
    assert white_box_accuracy(target, X, y, "pgd", eps) <= white_box_accuracy(target, X, y, "fgsm", eps) + 0.01


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_stays_in_the_eps_ball_and_the_unit_box(fitted, attack):
    target, _, X, y, *_ = fitted
    for eps in (0.01, 0.1):
        x_adv = adversarial_examples(target, X, y, attack, eps)
        assert x_adv.dtype == np.float32 and x_adv.shape == X.shape
        assert np.abs(x_adv - X).max() <= eps + 1e-6
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_projected_cw_moves_inputs_and_lowers_accuracy(fitted):
    target, _, X, y, *_ = fitted
    x_adv = adversarial_examples(target, X, y, "cw", 0.2)
    assert np.abs(x_adv - X).max() > 0.1  # C&W ran (it is not the identity)
    assert white_box_accuracy(target, X, y, "cw", 0.2) < (target.predict(X) == y).mean()


def test_black_box_is_weaker_than_white_box_for_pgd(fitted):
    target, substitute, X, y, *_ = fitted
    for eps in (0.15, 0.2):  # white-box PGD: 0.49 / 0.01 here, black-box: 0.74 / 0.12
        white = white_box_accuracy(target, X, y, "pgd", eps)
        black = black_box_accuracy(target, substitute, X, y, "pgd", eps)
        assert black >= white, (eps, white, black)


def test_attacks_are_reproducible(fitted):
    target, _, X, y, *_ = fitted
    a = adversarial_examples(target, X, y, "pgd", 0.1, seed=3)
    b = adversarial_examples(target, X, y, "pgd", 0.1, seed=3)
    assert np.array_equal(a, b)


def test_robustness_table_is_tidy_and_matches_single_calls(fitted):
    target, substitute, X, y, *_ = fitted
    df = robustness_table({"mv": target}, X, y, attacks=("fgsm", "pgd"), eps_grid=(0.05, 0.1),
                          substitute=substitute, seed=7)
    assert list(df.columns) == ["learner", "seed", "setting", "attack", "eps", "accuracy"]
    assert set(df.setting) == {"clean", "white", "black"} and (df.seed == 7).all()
    assert len(df) == 2 + 2 * 2 * 2  # clean (learner + substitute) + settings x attacks x eps
    cell = df.query("setting == 'white' and attack == 'pgd' and eps == 0.1").accuracy.item()
    assert cell == white_box_accuracy(target, X, y, "pgd", 0.1, seed=7)
    cell = df.query("setting == 'black' and attack == 'fgsm' and eps == 0.05").accuracy.item()
    assert cell == black_box_accuracy(target, substitute, X, y, "fgsm", 0.05, seed=7)


class _Stub:
    def __init__(self, workers, conf):
        self.workers_, self.confusion_matrices_ = workers, conf


def test_true_confusions_count_labels_against_the_truth():
    ann = pd.DataFrame({"task": [0, 1, 2, 3, 0, 9], "worker": ["a", "a", "a", "a", "b", "b"],
                        "label": [0, 1, 1, 1, 0, 1]})
    truth = {0: 0, 1: 0, 2: 1, 3: 1, 9: -1}  # item 9: unknown truth, ignored
    pi, counts = true_confusions(ann, truth, ["a", "b"], 2)
    assert np.allclose(pi[0], [[0.5, 0.5], [0.0, 1.0]])
    assert np.allclose(pi[1, 0], [1.0, 0.0]) and np.isnan(pi[1, 1]).all()  # b never saw class 1
    assert counts.sum() == 5


def test_confusion_recovery_error_is_zero_for_the_empirical_matrices(fitted):
    *_, ann, y = fitted
    truth = dict(enumerate(y.tolist()))
    workers = sorted(ann.worker.unique())
    pi, _ = true_confusions(ann, truth, workers, 2)
    per_worker, mean = confusion_recovery_error(_Stub(workers, np.nan_to_num(pi, nan=0.5)), ann, truth)
    assert set(per_worker) == set(workers)
    assert max(per_worker.values()) < 1e-9 and mean < 1e-9


def test_confusion_recovery_error_is_the_label_weighted_frobenius_norm():
    ann = pd.DataFrame({"task": [0, 1, 0], "worker": ["a", "a", "b"], "label": [0, 1, 0]})
    truth = {0: 0, 1: 1}
    learned = np.stack([np.eye(2), np.eye(2)])
    learned[1] = [[0.6, 0.4], [0.5, 0.5]]  # b: row 1 unseen (left out), row 0 off by (0.4, 0.4)
    per_worker, mean = confusion_recovery_error(_Stub(["a", "b"], learned), ann, truth)
    assert per_worker["a"] == pytest.approx(0.0)
    assert per_worker["b"] == pytest.approx(np.sqrt(0.32))
    assert mean == pytest.approx((2 * 0.0 + 1 * np.sqrt(0.32)) / 3)


def test_the_paired_table_counts_never_and_tests_by_seed():
    """Labels to target paired by seed: a method faster on every one of 8 seeds is significant, a run that
    never reached the target counts as budget + 1, and the curve gap is read at common budgets."""
    from robust_al.evaluate.experiment import paired_table

    res = []
    for s in range(8):
        res.append({"method": "random", "seed": s, "curve": [[10, 0.5], [20, 0.6], [30, 0.7], [40, 0.8]]})
        res.append({"method": "fast", "seed": s, "curve": [[10, 0.5], [20, 0.8], [30, 0.8], [40, 0.85]]})
        res.append({"method": "never", "seed": s, "curve": [[10, 0.5], [20, 0.55], [30, 0.6], [40, 0.7]]})
    text = paired_table(res, ["random", "fast", "never"], 0.8)
    fast = next(line for line in text.splitlines() if line.startswith("| fast"))
    never = next(line for line in text.splitlines() if line.startswith("| never"))
    cells = [c.strip() for c in fast.split("|")[1:-1]]
    assert cells[2] == "20 / 40" and cells[3] == "0.50" and cells[4] == "8 / 0 / 0" and float(cells[5]) < 0.01
    assert cells[6].startswith("+5.00") and cells[7] == "3/3"  # 80 - 75 mean gap worst at 40: +5
    ncells = [c.strip() for c in never.split("|")[1:-1]]
    assert ncells[2] == "41 / 40" and ncells[4] == "0 / 0 / 8" and float(ncells[5]) > 0.5
    assert "never reached counts as 41 labels" in text


def test_a_profile_fills_in_options_the_command_line_did_not_give():
    import argparse

    from robust_al.evaluate.bench import apply_profile

    args = argparse.Namespace(seeds=[0, 1, 2], eps=[0.1], epochs=50)
    apply_profile(args, {"seeds": [0], "eps": [0.03], "epochs": 2}, ["--quick", "--eps=0.2", "--epochs", "7"])
    assert (args.seeds, args.eps, args.epochs) == ([0], [0.1], 50)  # --eps and --epochs were given: kept


def test_attack_success_table_gives_wilson_intervals_and_the_paired_test():
    from robust_al.evaluate.experiment import poison_tables

    def run(method, seed, success):
        return {"method": method, "seed": seed, "poison": {"success": success, "labeled": 10, "quarantined": 2}}

    # 10 seeds: random falls on all 10, proposed on 2 (seeds 0, 1); one proposed run crafted nothing
    results = [run("random", i, True) for i in range(10)] + [run("proposed", i, i < 2) for i in range(9)]
    for r in results[:3]:  # the control: random's model would have missed 1 of its first 3 targets anyway
        r["poison"]["success_without_poisons"] = r["seed"] == 0
    results.append({"method": "proposed", "seed": 9, "poison": {"crafted": False, "success": None}})
    table = poison_tables(results, ["proposed", "random"])["Attack success"]
    prop = next(line for line in table.splitlines() if line.startswith("| proposed"))
    rand = next(line for line in table.splitlines() if line.startswith("| random"))
    assert "| 9 | 2/9 = 0.22 (0.06-0.55) |" in prop  # Wilson 95 % interval of 2 in 9
    assert "9 seeds: 0 fell only here, 7 only under random, p = 0.0156" in prop  # exact McNemar, 2 x 0.5^7
    assert "| 10 | 10/10 = 1.00 (0.72-1.00) | - | 1/3 |" in rand
    # with the poison filter: paired against the same method without it, not against random
    results += [run("proposed-filter", i, False) for i in range(9)]
    table = poison_tables(results, ["proposed", "proposed-filter", "random"])["Attack success"]
    filt = next(line for line in table.splitlines() if line.startswith("| proposed-filter"))
    assert "| 9 | 0/9 = 0.00 (0.00-0.30) | 9 seeds: 0 fell only here, 2 only under proposed, p = 0.5 |" in filt


def test_the_filter_cost_table_pairs_each_filter_run_with_the_run_without_it():
    """Honest items removed (mean, share, worst run) and the paired clean-accuracy difference of a -filter method
    against its method on the same seeds; a seed run by only one of the two is left out."""
    from robust_al.evaluate.experiment import filter_cost_table

    def run(method, seed, acc, honest_filtered=0):
        return {"method": method, "seed": seed, "final_acc": acc,
                "poison": {"success": False, "honest_filtered": honest_filtered, "honest_labeled": 100}}

    results = [run("proposed", s, 0.90) for s in range(4)] + [run("proposed-filter", s, 0.89, s) for s in range(4)]
    results.append(run("proposed-filter", 9, 0.5, 50))  # no partner: not in the table
    table = filter_cost_table(results, ["proposed", "proposed-filter"])
    row = next(line for line in table.splitlines() if line.startswith("| proposed-filter vs proposed"))
    assert "| 4 | 1.5 (1.5 %), 3.0 % | 0.8900 / 0.9000 | -1.00 ± 0.00 |" in row
    assert filter_cost_table(results, ["proposed"]) == ""  # no filter method: no table
