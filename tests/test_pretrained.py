"""A transferred feature space: a frozen pretrained trunk from a local weights file and a trained head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robust_al.config import load_config
from robust_al.crowd.network import IMAGENET_MEAN, NetworkTrainer


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from robust_al.data.backbone import import_torchvision

    torch.manual_seed(0)
    model = import_torchvision().models.get_model("resnet18", weights=None, num_classes=8)
    path = tmp_path_factory.mktemp("w") / "cifar8-resnet18.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_only_the_head_trains_and_checkpoints_leave_the_trunk_out(weights):
    path, state = weights
    rng = np.random.default_rng(0)
    X = rng.random((48, 3, 32, 32), dtype=np.float32)
    y = rng.integers(2, size=48)
    net = NetworkTrainer((3, 32, 32), 2, "pretrained", epochs=2, batch_size=16, seed=0,
                         backbone={"arch": "resnet18", "weights": str(path)})
    net.set_input_statistics(X)  # a pretrained trunk keeps the statistics it was trained with
    assert torch.allclose(net.model.standardize.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    before = net.embed(X)
    net.fit(X, y, seed=0)
    trunk = net.model.features[0].state_dict()
    for k, v in state.items():  # BatchNorm statistics included: the trunk never left eval mode
        if not k.startswith("fc."):
            assert torch.equal(trunk[k], v), k
    np.testing.assert_allclose(net.embed(X), before, rtol=1e-5, atol=1e-6)
    assert before.shape == (48, 512)
    ck = net.state_dict()
    assert set(ck) == {"standardize.mean", "standardize.std", "head.1.weight", "head.1.bias"}
    other = NetworkTrainer((3, 32, 32), 2, "pretrained", seed=5, backbone={"arch": "resnet18", "weights": str(path)})
    other.load_state_dict(ck)
    np.testing.assert_allclose(other.predict_proba(X), net.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_config_names_what_a_pretrained_network_needs(tmp_path):
    with pytest.raises(ValueError, match="model.backbone"):
        load_config("configs/eval-cifar2-transfer.yaml", ["model.backbone=null"])
    with pytest.raises(ValueError, match="expected keys arch"):
        load_config("configs/eval-cifar2-transfer.yaml", ['model.backbone={"path": "x.pt"}'])
    net_missing = {"arch": "resnet18", "weights": str(tmp_path / "nope.pt")}
    with pytest.raises(FileNotFoundError, match="model.backbone.weights: .*nope.pt not found"):
        NetworkTrainer((3, 32, 32), 2, "pretrained", backbone=net_missing)


def test_pretraining_crops_and_flips_keep_the_pixels():
    from robust_al.data.pretrain import crop_flip, source_classes

    assert source_classes() == ["automobile", "bird", "cat", "deer", "dog", "horse", "ship", "truck"]
    x = torch.rand(6, 3, 32, 32)
    a = crop_flip(x, torch.Generator().manual_seed(0))
    b = crop_flip(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    # every output pixel is a pixel of the (reflect-padded) input image
    for i in range(6):
        assert torch.isin(a[i, 0].flatten(), x[i, 0].flatten()).all()
