"""Crowd learners (A-LFC, MALC, Crowd Layer, AggNet, two-stage): shared template plus per-paper checks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_al.crowd.learners import LEARNERS, make_learner
from robust_al.crowd.neural_em import cl_pm, misclassification_weight

C, D = 3, 6


def synthetic(n=240, seed=0):
    """Separable features and a crowd of 5 workers with known confusion matrices (rows = true class)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(C, size=n)
    centers = rng.normal(size=(C, D)) * 2.0
    X = centers[y] + rng.normal(0, 0.6, size=(n, D))
    X = ((X - X.min()) / (X.max() - X.min())).astype(np.float32)
    conf = [np.full((C, C), 0.05) + np.eye(C) * 0.85,                   # good
            np.full((C, C), 0.05) + np.eye(C) * 0.85,
            np.full((C, C), 0.15) + np.eye(C) * 0.55,                   # mediocre
            np.full((C, C), 1 / C),                                     # spammer
            np.roll(np.eye(C), 1, axis=1) * 0.9 + 0.1 / C]              # adversary: shifts every class
    conf = [c / c.sum(1, keepdims=True) for c in conf]
    rows = []
    for i in range(n):
        for w in rng.choice(5, size=3, replace=False):
            rows.append((i, f"w{w}", int(rng.choice(C, p=conf[w][y[i]]))))
    return X, y, pd.DataFrame(rows, columns=["task", "worker", "label"]), np.stack(conf)


@pytest.fixture(scope="module")
def crowd():
    return synthetic()


def _learner(name, **kw):
    return make_learner(name, C, (D,), epochs=8, **kw, **({"pgd_steps": 3} if "alfc" in name or "malc" in name else {}))


def _near_bayes(X, y, predicted):
    """The bound a crowd learner must reach on ``synthetic``'s separable classes: within 0.05 of the Bayes rate
    (here the nearest true centroid's accuracy, 1.0 on the fixture: the classes do not overlap). Measured on the
    fixture, 8 epochs, learner seeds 0-5: every learner 0.983-1.0 (the same learners on clean labels: 1.0), while
    the crowd's majority vote labels only 0.742 of the items right (the adversary shifts every class, the
    spammer guesses): the learners learn the classes, not the vote. Labels shuffled across answers: 0.30-0.53."""
    centroids = np.stack([X[y == c].mean(axis=0) for c in range(C)])
    bayes = (((X[:, None] - centroids[None]) ** 2).sum(-1).argmin(1) == y).mean()
    return (predicted == y).mean() >= bayes - 0.05


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_every_learner_fits_predicts_and_exposes_fitted_attributes(crowd, name):
    X, y, ann, _ = crowd
    learner = _learner(name)
    learner.fit(X, ann)
    proba = learner.predict_proba(X)
    assert proba.shape == (len(X), C) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert learner.confusion_matrices_.shape == (5, C, C)
    assert np.allclose(learner.confusion_matrices_.sum(2), 1, atol=1e-4)
    assert learner.posteriors_.shape == (len(X), C)
    assert len(learner.loss_history_) == 8
    assert learner.embed(X).shape == (len(X), 128)
    assert _near_bayes(X, y, learner.predict(X)), (learner.predict(X) == y).mean()
    vote = ann.groupby("task")["label"].agg(lambda s: s.value_counts().sort_index().idxmax()).sort_index()
    assert (learner.predict(X) == y).mean() > (vote.to_numpy() == y).mean() + 0.15  # better than the crowd's vote


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_the_accuracy_bound_fails_a_learner_taught_shuffled_labels(crowd, name):
    # the check above must say no to a learner that learned nothing about the classes
    X, y, ann, _ = crowd
    shuffled = ann.assign(label=np.random.default_rng(0).permutation(ann["label"].to_numpy()))
    assert not _near_bayes(X, y, _learner(name, seed=0).fit(X, shuffled).predict(X))


def test_em_recovers_the_true_confusion_matrices(crowd):
    X, y, ann, true_conf = crowd
    learner = make_learner("aggnet", C, (D,), epochs=40).fit(X, ann)
    # the empirical confusion of each worker against the ground truth is what EM should find
    emp = np.zeros((5, C, C))
    for t, w, l in ann.itertuples(index=False):
        emp[int(w[1:]), y[t], l] += 1
    emp /= emp.sum(2, keepdims=True)
    err = np.linalg.norm(learner.confusion_matrices_ - emp, axis=(1, 2))
    assert err.max() < 0.25, err          # Frobenius error per worker, 3x3 matrices
    assert np.linalg.norm(emp - true_conf, axis=(1, 2)).max() < 0.3  # the sample is close to the truth too


def test_alfc_with_alpha_one_is_plain_neural_em(crowd):
    X, _, ann, _ = crowd
    a = make_learner("alfc", C, (D,), epochs=5, alpha=1.0, seed=3).fit(X, ann)
    b = make_learner("aggnet", C, (D,), epochs=5, seed=3).fit(X, ann)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.confusion_matrices_, b.confusion_matrices_)


def test_cl_pm_paper_figure_2():
    # true class 0; A has one confused label (class 1), B two (classes 1 and 2)
    probs = torch.tensor([[0.3, 0.5, 0.1, 0.1], [0.2, 0.4, 0.3, 0.1]])
    y = torch.tensor([0, 0])
    np.testing.assert_allclose(cl_pm(probs, y).numpy(), [-0.2, -0.3], atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=3, max_size=8), st.integers(0, 7))
def test_cl_pm_equals_pm_with_at_most_one_confused_label(raw, y):
    p = torch.tensor(raw, dtype=torch.float64)
    p = p / p.sum()
    y = y % len(raw)
    pm = float(p[y] - torch.cat([p[:y], p[y + 1:]]).max())
    n_confused = int((p > p[y]).sum())
    if n_confused <= 1:
        assert float(cl_pm(p[None], torch.tensor([y]))[0]) == pytest.approx(pm, abs=1e-12)
    else:
        assert float(cl_pm(p[None], torch.tensor([y]))[0]) < pm


def test_malc_mu_is_the_probability_of_misclassification():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    z = torch.tensor([0, 2])
    np.testing.assert_allclose(misclassification_weight(probs, z).numpy(), [0.3, 0.7], atol=1e-7)


@settings(max_examples=4, deadline=None)
@given(st.permutations([f"w{k}" for k in range(5)]), st.sampled_from(["aggnet", "alfc", "malc", "crowdlayer-mw", "ds"]))
def test_renaming_workers_changes_nothing(perm, name):
    X, _, ann, _ = synthetic(n=60, seed=1)
    # a relabeling that keeps the sorted order of names fixes the worker index; use a prefix that does
    mapping = {f"w{k}": f"annotator-{perm[k]}" for k in range(5)}
    kw = {"epochs": 3, "seed": 0} | ({"pgd_steps": 2} if name in ("alfc", "malc") else {})
    a = make_learner(name, C, (D,), **kw).fit(X, ann)
    b = make_learner(name, C, (D,), **kw).fit(X, ann.assign(worker=ann["worker"].map(mapping)))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-5)
    for w, new in mapping.items():
        np.testing.assert_allclose(a.confusion_of(w), b.confusion_of(new), atol=1e-5)


@pytest.mark.parametrize("name", ["malc", "ds"])
def test_standardization_can_be_switched_off_so_eps_means_the_same_on_every_feature(crowd, name):
    X, _y, ann, _ = crowd
    X = X * np.linspace(0.1, 1.0, D, dtype=np.float32)  # features with different spreads
    on = make_learner(name, C, (D,), epochs=2, seed=0).fit(X, ann, np.arange(len(X)))
    off = make_learner(name, C, (D,), epochs=2, seed=0, standardize=False).fit(X, ann, np.arange(len(X)))
    x = torch.as_tensor(X[:5])
    torch.testing.assert_close(off.model.standardize(x), x)  # the identity: eps acts on the raw inputs
    scale = 1 / on.model.standardize.std.cpu().numpy()
    assert scale.max() / scale.min() > 3  # with it, the same eps is several times larger on the narrow features


def test_a_campaign_config_switches_standardization_off_for_both_training_stacks(crowd):
    from robust_al.config import load_config
    from robust_al.crowd.learners import campaign_learner

    X = crowd[0] * 0.2
    for learner in ("two-stage", "alfc"):
        cfg = load_config(data={"model": {"learner": learner, "standardize": False}})
        net = campaign_learner(cfg, (D,), C, X).trainer
        np.testing.assert_array_equal(net.model.standardize.std.cpu().numpy(), 1.0)
        cfg = load_config(data={"model": {"learner": learner}})
        assert not np.allclose(campaign_learner(cfg, (D,), C, X).trainer.model.standardize.std.cpu().numpy(), 1.0)


def _crowdkit_crowd_layer():
    """crowd-kit's CrowdLayer module, loaded past ``crowdkit.learning``'s __init__ (which fails to import
    here; see robust_al.crowd.crowd_layer.AnnotatorLayer)."""
    import importlib
    import os
    import sys
    import types

    import crowdkit

    try:
        return importlib.import_module("crowdkit.learning.crowd_layer").CrowdLayer
    except Exception:
        for name in [m for m in sys.modules if m.startswith("crowdkit.learning")]:
            del sys.modules[name]
        stub = types.ModuleType("crowdkit.learning")
        stub.__path__ = [os.path.join(os.path.dirname(crowdkit.__file__), "learning")]
        sys.modules["crowdkit.learning"] = stub
        try:
            return importlib.import_module("crowdkit.learning.crowd_layer").CrowdLayer
        finally:
            del sys.modules["crowdkit.learning"]


@pytest.mark.parametrize("ours, theirs", [("MW", "mw"), ("VW", "vw"), ("VW-B", "vw+b")])
def test_our_crowd_layer_computes_what_crowd_kits_does(ours, theirs):
    from robust_al.crowd.crowd_layer import AnnotatorLayer

    CK = _crowdkit_crowd_layer()
    g = torch.Generator().manual_seed(0)
    B, K, W, C = 32, 3, 7, 4
    sigma = torch.softmax(torch.randn(B, C, generator=g), 1)
    workers = torch.randint(0, W, (B, K), generator=g)
    a, b = AnnotatorLayer(W, C, ours), CK(C, W, conn_type=theirs)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        if theirs == "vw+b":
            b.scale.copy_(a.weight)
            b.bias.copy_(a.bias)
        else:
            b.weight.copy_(a.weight)
        mine = a(sigma, workers)
        kit = b(sigma.repeat_interleave(K, 0), workers.reshape(-1)).reshape(B, K, C)
    assert torch.equal(mine, kit)


# --- the Learner contract (tests/template_learner.py) for every kind of learner the campaign can train ---

from template_learner import LearnerContract  # noqa: E402


class _CrowdLearnerContract(LearnerContract):
    name = "mv"
    X = synthetic(n=90, seed=1)[0]

    def make(self):
        opts = {"pgd_steps": 2} if "alfc" in self.name or "malc" in self.name else {}
        return make_learner(self.name, C, (D,), epochs=3, seed=0, **opts)

    def train(self, learner, seed):
        X, _, ann, _ = synthetic(n=90, seed=1)
        learner.seed = seed
        learner.fit(X, ann)


class TestTwoStageContract(_CrowdLearnerContract):
    name = "ds"


class TestCrowdLayerContract(_CrowdLearnerContract):
    name = "crowdlayer-mw"


class TestALFCContract(_CrowdLearnerContract):
    name = "alfc"


class TestMALCContract(_CrowdLearnerContract):
    name = "malc"


class TestNetworkTrainerContract(LearnerContract):
    X = synthetic(n=90, seed=1)[0]

    def make(self):
        from robust_al.crowd.network import NetworkTrainer

        return NetworkTrainer((D,), C, "mlp", epochs=3, seed=0, device="cpu")

    def train(self, learner, seed):
        X, y, _, _ = synthetic(n=90, seed=1)
        learner.fit(X, y, seed=seed)


class TestCampaignClassifierContract(LearnerContract):
    X = synthetic(n=90, seed=1)[0]

    def make(self):
        from robust_al.crowd import CrowdClassifier, NetworkTrainer, TrustWeightedDS

        return CrowdClassifier(NetworkTrainer((D,), C, "mlp", epochs=3, seed=0, device="cpu"),
                               TrustWeightedDS(C), targets="trust")

    def train(self, learner, seed):
        X, _, ann, _ = synthetic(n=90, seed=1)
        learner.fit(X, np.arange(len(X)), ann, seed=seed)


# --- learners are scikit-learn estimators ---

@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_every_learner_is_a_scikit_learn_estimator(name):
    from sklearn.base import clone

    learner = make_learner(name, C, (D,), epochs=7, lr=0.01, seed=5)
    params = learner.get_params()
    assert {"n_classes", "input_shape", "epochs", "lr", "seed", "classes"} <= set(params)
    twin = clone(learner)  # scikit-learn checks that the constructor stores every parameter as given
    assert type(twin) is type(learner) and twin.get_params() == params
    assert clone(learner.set_params(epochs=2)).epochs == 2


def test_string_labels_are_encoded_and_predicted_as_names(crowd):
    X, _y, ann, _ = crowd
    names = np.array(["cat", "dog", "emu"])
    by_name = ann.assign(label=names[ann["label"]])
    a = make_learner("ds", C, (D,), epochs=5, seed=2).fit(X, by_name)
    b = make_learner("ds", C, (D,), epochs=5, seed=2).fit(X, ann)
    assert list(a.classes_) == ["cat", "dog", "emu"] and list(b.classes_) == [0, 1, 2]
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))  # the same model
    np.testing.assert_array_equal(a.predict(X), names[b.predict(X)])
    # an explicit order is kept, and a label outside it is refused before any training
    c = make_learner("ds", C, (D,), epochs=5, seed=2, classes=["emu", "dog", "cat"]).fit(X, by_name)
    assert list(c.classes_) == ["emu", "dog", "cat"]
    with pytest.raises(ValueError, match="'gnu' is not one of classes"):
        make_learner("ds", C, (D,), epochs=5, classes=["cat", "dog", "emu"]).fit(
            X, by_name.assign(label=by_name["label"].replace({"emu": "gnu"})))
    with pytest.raises(ValueError, match="2 classes .* for n_classes=3"):
        make_learner("ds", C, (D,), epochs=5).fit(X, by_name[by_name["label"] != "emu"])
