"""Golden runs: the digits and LabelMe configs must store exactly what they stored when the digest was recorded
(annotations, trust events, metrics and final weights). A refactoring that changes any of it, by one bit, fails
here and names the part that moved.

Re-record after an intended change of behaviour (and say why in the commit):

    python tests/test_golden.py --record

The digest is tied to the CPU's vector capability and torch's version (float results of the same code differ
across them); elsewhere the test skips and says so.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]
RUNS = {"digits": ("configs/digits.yaml", []),
        # the replayed AMT crowd with its injected attacker, shortened
        "labelme": ("configs/labelme.yaml", ["stop.budget=300", "model.epochs=10"])}


def _platform() -> dict:
    import torch

    return {"cpu": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__.split("+")[0]}


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()


def run_digest(run_dir: Path) -> dict[str, str]:
    """One hash per stored part of a finished run (floats compared by their exact repr)."""
    import numpy as np

    from robust_al.campaign import VOLATILE_METRICS
    from robust_al.store import RunStore

    store = RunStore(run_dir, create=False)
    try:
        ann = store.annotations().drop(columns=["id", "created_at", "external_id"])
        ann = ann.sort_values(["task", "worker"]).to_numpy().tolist()
        trust = store.trust_events().drop(columns=["id", "created_at"]).to_numpy().tolist()
        metrics = [{k: v for k, v in m.items() if k not in VOLATILE_METRICS} for m in store.metrics()]
        weights = store.iteration_state(store.last_iteration())[2]
        w = {k: hashlib.sha256(np.ascontiguousarray(v.cpu().numpy()).tobytes()).hexdigest()
             for k, v in sorted(weights.items())}
        statuses = sorted(store.statuses().items())
    finally:
        store.close()
    return {"annotations": _sha(ann), "trust_events": _sha(trust), "metrics": _sha(metrics),
            "final_weights": _sha(w), "item_status": _sha(statuses)}


def _run(name: str, run_dir: Path) -> dict[str, str]:
    from robust_al.campaign import Campaign
    from robust_al.config import load_config

    config, overrides = RUNS[name]
    Campaign.create(load_config(ROOT / config, overrides), run_dir, echo=None).run(progress=False)
    return run_digest(run_dir)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_golden_run_stores_exactly_what_it_stored_when_recorded(name, tmp_path):
    recorded = json.loads((GOLDEN / f"{name}.json").read_text())
    if recorded["platform"] != _platform():
        pytest.skip(f"digest recorded on {recorded['platform']}, this is {_platform()}")
    if name == "labelme":
        from robust_al.data.loaders import default_datasets_dir

        if not (default_datasets_dir() / "labelme" / "answers.txt").exists():
            pytest.skip("LabelMe data set absent")
    got = _run(name, tmp_path / "run")
    moved = [part for part, h in recorded["digest"].items() if got.get(part) != h]
    assert not moved, f"{name}: {', '.join(moved)} differ from the recorded golden run"


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    for name in RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            digest = _run(name, Path(tmp) / "run")
        (GOLDEN / f"{name}.json").write_text(json.dumps({"platform": _platform(), "config": RUNS[name],
                                                        "digest": digest}, indent=1) + "\n")
        print(name, digest)
