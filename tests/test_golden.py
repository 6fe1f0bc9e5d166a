"""Golden runs: the digits and LabelMe configs must store what they stored when the golden file was recorded.

What a campaign decides is compared exactly: every annotation (who was asked what, and answered what), every
trust event and every item's status, and the discrete metrics (labels used, routing, the secured check's verdict,
trust). What it computes through the network (final weights, minimal adversarial perturbations, accuracies) is
compared within a tolerance, because float results of the same kernels differ in the last bits between CPU
vendors (MKL takes its AVX2 code path on AMD, measured: MKL_CBWR=AVX2 changes nothing there). The digests
recorded on an Intel AVX512 CPU at 73a6caa and this suite's run on an AMD EPYC (AVX512) had identical
annotations, trust events and statuses for both runs, and different final weights and metrics.

Tolerances (``TOL``): the largest difference measured between two kernel sets, times a margin of about 20. On an
AMD EPYC (AVX512), forcing torch's AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``) left every decision of both runs
identical and moved one tensor of the final weights by at most 4.6e-5 (digits) and 9.2e-4 (LabelMe) relative (L2
norm of the change over the tensor's), a perturbation metric by at most 3.2e-5 (digits) and 1.4e-3 (LabelMe: the
smallest of an iteration's DeepFool norms) relative, and no accuracy. A real change of behaviour moves the
decisions, compared exactly; the tolerances are a second net for a change that moves only the numbers.

Exactness where it holds by design (a resumed campaign equals the uninterrupted one on the same machine, bit for
bit) is tested in ``tests/test_faults.py``.

Re-record after an intended change of behaviour (and say why in the commit):

    python tests/test_golden.py --record
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]
RUNS = {"digits": ("configs/digits.yaml", []),
        # the replayed AMT crowd with its injected attacker, shortened
        "labelme": ("configs/labelme.yaml", ["stop.budget=300", "model.epochs=10"])}
# relative: |a - b| / |a| for a metric, ||P(a - b)|| / ||P a|| for a tensor seen through N_PROJECTIONS projections
TOL = {"weights": 3e-2, "perturbation": 3e-2}
# a near-boundary item may flip: one item of the test splits (digits 540, LabelMe 500); S (60-150 items) exactly
ACCURACY_ABS = 2.5e-3
MODEL_METRICS = {"mean_min_perturbation": "perturbation", "min_perturbation": "perturbation",
                 "secured_acc": "accuracy", "test_acc": "accuracy"}
N_PROJECTIONS = 64


def _cpu() -> dict:
    import torch

    vendor = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        vendor = platform.processor() or "unknown"
    return {"vendor": vendor, "capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__.split("+")[0]}


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()


def _projections(name: str, values: np.ndarray) -> list[float]:
    """N_PROJECTIONS fixed Gaussian projections of a tensor: a change of relative size r in the tensor moves them
    by about r relative (Johnson-Lindenstrauss), so a few numbers stand for the whole tensor."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    basis = np.random.default_rng(seed).standard_normal((N_PROJECTIONS, flat.size)) / math.sqrt(flat.size)
    return (basis @ flat).tolist()


def run_record(run_dir: Path) -> dict:
    """What a finished run stored: digests of the exact parts, and the computed parts as numbers."""
    from robust_al.campaign import VOLATILE_METRICS
    from robust_al.store import RunStore

    store = RunStore(run_dir, create=False)
    try:
        ann = store.annotations().drop(columns=["id", "created_at", "external_id"])
        ann = ann.sort_values(["task", "worker"]).to_numpy().tolist()
        trust = store.trust_events().drop(columns=["id", "created_at"]).to_numpy().tolist()
        metrics = [{k: v for k, v in m.items() if k not in VOLATILE_METRICS} for m in store.metrics()]
        weights = store.iteration_state(store.last_iteration())[2]
        statuses = sorted(store.statuses().items())
    finally:
        store.close()
    decisions = [{k: v for k, v in m.items() if k not in MODEL_METRICS} for m in metrics]
    return {"exact": {"annotations": _sha(ann), "trust_events": _sha(trust), "item_status": _sha(statuses),
                      "metrics": _sha(decisions)},
            "model_metrics": [{k: m.get(k) for k in MODEL_METRICS} for m in metrics],
            "weights": {k: {"shape": list(v.shape), "projections": _projections(k, v.cpu().numpy())}
                        for k, v in sorted(weights.items())}}


def differences(recorded: dict, got: dict) -> list[str]:
    """Each way ``got`` departs from ``recorded`` beyond the tolerances, as a line naming the part."""
    out = [f"{part} differ" for part, h in recorded["exact"].items() if got["exact"].get(part) != h]
    if len(got["model_metrics"]) != len(recorded["model_metrics"]):
        return [*out, "a different number of iterations"]
    for i, (want, have) in enumerate(zip(recorded["model_metrics"], got["model_metrics"])):
        for key, kind in MODEL_METRICS.items():
            a, b = want.get(key), have.get(key)
            if a is None or b is None:
                if a != b:
                    out.append(f"iteration {i} {key}: {a} recorded, {b} now")
                continue
            bad = abs(a - b) > ACCURACY_ABS if kind == "accuracy" else abs(a - b) > TOL[kind] * max(abs(a), 1e-12)
            if bad:
                out.append(f"iteration {i} {key}: {a!r} recorded, {b!r} now")
    if set(recorded["weights"]) != set(got["weights"]):
        return [*out, f"weights: tensors {sorted(recorded['weights'])} recorded, {sorted(got['weights'])} now"]
    for name, want in recorded["weights"].items():
        have = got["weights"][name]
        if want["shape"] != have["shape"]:
            out.append(f"weights {name}: shape {want['shape']} recorded, {have['shape']} now")
            continue
        p, q = np.asarray(want["projections"]), np.asarray(have["projections"])
        rel = float(np.linalg.norm(p - q) / max(np.linalg.norm(p), 1e-12))
        if rel > TOL["weights"]:
            out.append(f"weights {name}: moved {rel:.2e} relative (tolerance {TOL['weights']:.0e})")
    return out


def _run(name: str, run_dir: Path) -> dict:
    from robust_al.campaign import Campaign
    from robust_al.config import load_config

    config, overrides = RUNS[name]
    Campaign.create(load_config(ROOT / config, overrides), run_dir, echo=None).run(progress=False)
    return run_record(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_golden_run_stores_what_it_stored_when_recorded(name, tmp_path):
    recorded = json.loads((GOLDEN / f"{name}.json").read_text())
    if recorded["platform"]["torch"] != _cpu()["torch"]:
        pytest.skip(f"recorded with torch {recorded['platform']['torch']} (the pinned one); this is "
                    f"{_cpu()['torch']}: other kernels")
    if name == "labelme":
        from robust_al.data.loaders import default_datasets_dir

        if not (default_datasets_dir() / "labelme" / "answers.txt").exists():
            pytest.skip("LabelMe data set absent")
    moved = differences(recorded, _run(name, tmp_path / "run"))
    assert not moved, (f"{name} (recorded on {recorded['platform']}, this is {_cpu()}): " + "; ".join(moved))


def _record() -> dict:
    return {"exact": {"annotations": "a", "trust_events": "t", "item_status": "s", "metrics": "m"},
            "model_metrics": [{"mean_min_perturbation": 0.25, "min_perturbation": 0.1, "secured_acc": 0.9,
                               "test_acc": 0.95}],
            "weights": {"w": {"shape": [3, 4], "projections": _projections("w", np.arange(12.0).reshape(3, 4))}}}


def test_the_comparison_passes_kernel_noise_and_names_each_real_change():
    recorded = _record()
    noisy = json.loads(json.dumps(recorded))
    noisy["model_metrics"][0]["min_perturbation"] *= 1 + 1.4e-3  # the largest kernel noise measured
    noisy["model_metrics"][0]["test_acc"] += 1 / 540  # one near-boundary test item flipped
    noisy["weights"]["w"]["projections"] = _projections("w", np.arange(12.0).reshape(3, 4) * (1 + 1e-3))
    assert differences(recorded, noisy) == []

    changed = json.loads(json.dumps(recorded))
    changed["exact"]["annotations"] = "other"
    changed["model_metrics"][0]["test_acc"] = 0.95 + 2 / 500  # two test items more right
    changed["model_metrics"][0]["mean_min_perturbation"] = 0.26  # 4 % more
    w = np.arange(12.0).reshape(3, 4)
    w[1, 2] += 1.5  # one weight of twelve moved by 1.5 (the tensor's norm is 22.5)
    changed["weights"]["w"]["projections"] = _projections("w", w)
    moved = differences(recorded, changed)
    assert moved[0] == "annotations differ"
    assert any(m.startswith("iteration 0 test_acc") for m in moved)
    assert any(m.startswith("iteration 0 mean_min_perturbation") for m in moved)
    assert any(m.startswith("weights w: moved") for m in moved)
    assert len(moved) == 4


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    for name in RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            record = _run(name, Path(tmp) / "run")
        (GOLDEN / f"{name}.json").write_text(json.dumps({"platform": _cpu(), "config": RUNS[name], **record},
                                                        indent=1) + "\n")
        print(name, record["exact"])
