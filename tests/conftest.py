"""Shared fixtures: tiny campaigns on the embedded digits data (CPU, seconds each)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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


def pytest_collection_modifyitems(config, items):
    """Fast tests first, slow ones (``@pytest.mark.slow``) last, so a broken build fails in minutes; every test
    that needs the Label Studio server in one xdist group, so ``-n 2`` starts one server, not one per worker."""
    for item in items:
        if "ls" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("labelstudio"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)  # stable: file order kept within


@pytest.fixture
def tiny():
    return lambda **over: load_config(data=tiny_config(**over))


# -- a real Label Studio server, shared by every test module that needs one ---------------------------------
@pytest.fixture(scope="session")
def ls():
    """A running Label Studio server for the whole session (stopped and its data removed at the end).

    Installed into its own venv only when ROBUST_AL_LS_INSTALL=1 (~1 min, ~1 GB); otherwise skipped when absent.
    It serves local files from ``ls.files_root`` (a folder next to its data directory): tests put images in a
    subfolder of it to try ``media: local-files``.
    """
    pytest.importorskip("label_studio_sdk",
                        reason="label-studio-sdk is not installed (pip install -e '.[labelstudio]')")
    from robust_al.labelstudio import server as ls_server

    if not ls_server.installed():
        if os.environ.get("ROBUST_AL_LS_INSTALL") != "1":
            pytest.skip(f"label-studio is not installed at {ls_server.executable()}; set ROBUST_AL_LS_INSTALL=1 "
                        "to install it into its own venv (or run `robust-al labelstudio install`)")
        ls_server.install()
    base = Path(tempfile.mkdtemp(prefix="robust-al-ls-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    (base / "files").mkdir()
    srv = ls_server.LabelStudioServer()
    try:
        srv.start(base / "labelstudio", files_root=base / "files")
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def client(ls):
    from robust_al.labelstudio.client import LabelStudioClient

    with LabelStudioClient.for_server(ls) as c:  # per test: the server may have been restarted
        yield c


@pytest.fixture(scope="session")
def annotators(ls):
    """Three annotators signed up through the invite link: [(user_id, token), ...]."""
    from robust_al.labelstudio.users import create_annotator

    return [create_annotator(ls, f"annotator{i}@example.com", f"pw-annotator-{i}") for i in range(3)]
