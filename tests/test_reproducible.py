"""Global generators seeded and restored; torch's CPU threads pinned while a campaign computes."""
from __future__ import annotations

import numpy as np
import torch

from robust_al.campaign import Campaign
from robust_al.reproducible import cpu_threads, seeded


def test_seeded_draws_repeat_and_the_outer_streams_continue_untouched():
    np.random.seed(1)
    torch.manual_seed(1)
    expected = np.random.random(3), torch.rand(3)
    np.random.seed(1)
    torch.manual_seed(1)
    with seeded(7):
        inner = np.random.random(2), torch.rand(2)
    with seeded(7):
        again = np.random.random(2), torch.rand(2)
    after = np.random.random(3), torch.rand(3)
    np.testing.assert_array_equal(inner[0], again[0])
    assert torch.equal(inner[1], again[1])
    # the caller's generators continue as if nothing had drawn from them
    np.testing.assert_array_equal(after[0], expected[0])
    assert torch.equal(after[1], expected[1])


def test_cpu_threads_sets_and_restores():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(0):  # 0 leaves torch's own setting
        assert torch.get_num_threads() == before


def test_a_campaign_trains_on_one_cpu_thread_by_default_and_gives_the_setting_back(tmp_path, tiny, monkeypatch):
    seen = []
    camp = Campaign.create(tiny(**{"stop.budget": 60, "stop.max_iterations": 1}), tmp_path / "run", echo=None)
    fit = camp.learner.fit
    monkeypatch.setattr(camp.learner, "fit", lambda *a, **k: (seen.append(torch.get_num_threads()), fit(*a, **k))[1])
    before = torch.get_num_threads()
    camp.run(progress=False)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
