"""Reproducibility controls shared by the campaign and the evaluations: global generators seeded and restored
(for libraries that insist on global state, e.g. ART's random starts), and torch's CPU thread count.

Why the thread count: with two intra-op threads on a loaded 2-core machine, the same ``NetworkTrainer.fit``
on the same inputs, seed and initial weights gave different weights in 1 fit of 142 (measured: the
kill/resume test's processes beside two busy loops, each fit's inputs and outputs hashed), which made a resumed
campaign query other items than the uninterrupted one. With one thread, 343 repeated fits under the same load
were identical, and ran about 10x faster than with two threads competing for the cores (four processes beside
two busy loops: 343 one-thread fits in 200 s, 22 two-thread fits in 150 s).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed numpy's and torch's global generators; restore what they held on exit."""
    import torch

    np_state, torch_state = np.random.get_state(), torch.random.get_rng_state()
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run torch's CPU operations on ``n`` intra-op threads (0: leave torch's setting); restore on exit."""
    import torch

    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
