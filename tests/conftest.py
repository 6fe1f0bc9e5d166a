"""Shared fixtures: tiny campaigns on the embedded digits data (CPU, seconds each)."""
from __future__ import annotations

import pytest

from robust_al.config import load_config


def tiny_config(**over) -> dict:
    """A campaign small enough for a unit test: digits, 11 labelers, one malicious (1 -> 7)."""
    cfg = {
        "name": "tiny", "seed": 0,
        "data": {"name": "digits"},
        "holdout": {"size": 60},
        "annotators": {"kind": "simulated", "k": 3, "labelers": [
            {"kind": "benign", "count": 10, "pr": 0.05},
            {"kind": "malicious", "count": 1, "pr": 0.05, "target": 1, "to": 7}]},
        "query": {"strategy": "maxmin", "initial": 30, "batch": 30, "n_clusters": 5},
        "augment": {"attacks": ["deepfool"], "noise_copies": 1},
        "model": {"epochs": 10, "hidden": [64]},
        "stop": {"budget": 360, "max_iterations": 6},
    }
    for key, value in over.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


@pytest.fixture
def tiny():
    return lambda **over: load_config(data=tiny_config(**over))
