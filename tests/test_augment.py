"""Artificial data (section III-D): ART attacks on the live model, perturbation norms as vulnerability."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robust_al.augment import Augmenter
from robust_al.crowd import NetworkTrainer


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    X = rng.random((400, 8)).astype(np.float32)
    y = (X[:, 0] > X[:, 1]).astype(int)
    tr = NetworkTrainer((8,), 2, hidden=(32,), epochs=60, seed=0)
    tr.set_input_statistics(X)
    tr.fit(X, y)
    return tr, X[:40], y[:40]


@pytest.mark.parametrize("attack", ["deepfool", "cw", "pgd", "bim"])
def test_each_attack_returns_examples_and_norms(trained, attack):
    tr, X, y = trained
    aug = Augmenter(tr.model, (8,), 2, [attack], eps=1.0)
    [out] = aug.adversarial(np.arange(40), X, y)
    assert out.X.shape == X.shape and out.X.dtype == np.float32
    assert (out.X >= 0).all() and (out.X <= 1).all()
    flipped = tr.predict_proba(out.X).argmax(1) != y
    norms = np.linalg.norm((out.X - X).reshape(40, -1), axis=1)
    # a finite norm is the real distance to a flipped example; a failed attack is marked inf
    np.testing.assert_allclose(out.norms[np.isfinite(out.norms)], norms[np.isfinite(out.norms)], rtol=1e-5)
    assert (np.isfinite(out.norms) == flipped).all()


def test_deepfool_flips_and_measures_distance_to_the_boundary(trained):
    tr, X, y = trained
    aug = Augmenter(tr.model, (8,), 2, ["deepfool"])
    [out] = aug.adversarial(np.arange(40), X, y)
    assert np.isfinite(out.norms).mean() > 0.9
    # points close to the boundary x0 = x1 need smaller perturbations
    margin = np.abs(X[:, 0] - X[:, 1])
    ok = np.isfinite(out.norms)
    assert np.corrcoef(margin[ok], out.norms[ok])[0, 1] > 0.5


def test_attacks_run_on_the_live_model(trained):
    tr, X, y = trained
    aug = Augmenter(tr.model, (8,), 2, ["deepfool"])
    assert aug.clf.model is tr.model
    before = aug.adversarial(np.arange(40), X, y)[0].norms
    with torch.no_grad():  # change the weights in place: the same attack object must see the new model
        for p in tr.model.parameters():
            p.mul_(0.5)
    after = aug.adversarial(np.arange(40), X, y)[0].norms
    assert not np.allclose(before[np.isfinite(before)][:5], after[np.isfinite(after)][:5])
    assert not tr.model.training


def test_noise_copies_are_clipped_and_scaled():
    X = np.full((100, 4), 0.5, np.float32)
    aug = Augmenter(torch.nn.Sequential(torch.nn.Linear(4, 2)), (4,), 2, ["deepfool"], noise_scale=0.1,
                    noise_copies=2)
    outs = aug.noise(np.arange(100), X, np.random.default_rng(0))
    assert len(outs) == 2
    assert abs(np.std(outs[0].X - X) - 0.1) < 0.01 and np.isnan(outs[0].norms).all()
