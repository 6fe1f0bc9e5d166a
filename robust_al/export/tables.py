"""``robust-al export``: a run's inferred labels, annotations, labelers and final model as files."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from robust_al.files import atomic_write
from robust_al.report.text import trust_table
from robust_al.store import RunStore

FORMATS = ("csv", "jsonl", "crowdkit", "labelstudio")


def _keys(store: RunStore):
    keys = store.item_keys()
    return lambda ids: [keys.get(int(i), str(int(i))) for i in ids]  # no stored key: the id itself


def _names(store: RunStore) -> list[str]:
    from robust_al.export.model import run_model_info

    return run_model_info(store)["class_names"]


def labels_frame(store: RunStore) -> pd.DataFrame:
    """Inferred labels of the last completed iteration: item (the user's key), label (class name),
    confidence, n_answers, status (labeled = passed the secured check; discarded; quarantined; holdout /
    retired = the secured set's trusted labels)."""
    inf = store.inferred()
    names = _names(store)
    return pd.DataFrame({
        "item": _keys(store)(inf["item_id"]),
        "label": [None if pd.isna(v) else names[int(v)] for v in inf["label"]],
        "confidence": inf["confidence"], "n_answers": inf["n_answers"].astype(int), "status": inf["status"]})


def annotations_frame(store: RunStore) -> pd.DataFrame:
    """Every stored human answer in crowd-kit's long form (task = item key, worker, label = class name) plus
    time (ISO 8601, UTC), iteration and purpose (query, reexam, audit:<worker>)."""
    ann = store.annotations()
    names = _names(store)
    return pd.DataFrame({
        "task": _keys(store)(ann["task"]), "worker": ann["worker"].astype(str).to_numpy(),
        "label": [names[int(v)] for v in ann["label"]],
        "time": [datetime.fromtimestamp(t, timezone.utc).isoformat() for t in ann["created_at"]],
        "iteration": ann["iteration"].astype(int).to_numpy(), "purpose": ann["purpose"].to_numpy()})


def labelstudio_tasks(labels: pd.DataFrame, model_version: str) -> list[dict]:
    """Label Studio's JSON import: one task per item with a label, its inferred label as a prediction on a
    ``<Choices name="label" toName="item">`` control."""
    tasks = []
    for r in labels.itertuples():
        if r.label is None or pd.isna(r.label):
            continue
        tasks.append({
            "data": {"item": r.item, "status": r.status, "n_answers": int(r.n_answers)},
            "predictions": [{"model_version": model_version, "score": float(r.confidence),
                             "result": [{"from_name": "label", "to_name": "item", "type": "choices",
                                         "value": {"choices": [r.label]}}]}]})
    return tasks


def _write_table(df: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".jsonl":
        atomic_write(path, lambda f: df.to_json(f, orient="records", lines=True, force_ascii=False,
                                                double_precision=15))
    else:
        atomic_write(path, lambda f: df.to_csv(f, index=False))


def export_run(run_dir: str | Path, fmt: str = "csv", out: str | Path | None = None) -> list[Path]:
    """Write a run's results into ``out`` (default ``RUN_DIR/export``); returns the paths written.

    csv / jsonl: labels, annotations, workers tables and the final model (``model.pt`` state_dict +
    ``model.json``); crowdkit: annotations.csv with exactly task,worker,label; labelstudio: tasks.json."""
    from robust_al.export.model import final_state, run_model_info

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    store = RunStore.existing(run_dir)
    out = Path(out) if out else Path(run_dir) / "export"
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "crowdkit":
        path = out / "annotations.csv"
        _write_table(annotations_frame(store)[["task", "worker", "label"]], path)
        return [path]
    labels = labels_frame(store)
    iteration, state = final_state(store)
    if fmt == "labelstudio":
        path = out / "tasks.json"
        tasks = labelstudio_tasks(labels, f"robust-al iteration {iteration}")
        atomic_write(path, lambda f: json.dump(tasks, f, indent=1, ensure_ascii=False))
        return [path]
    ext = "csv" if fmt == "csv" else "jsonl"
    written = []
    for name, df in (("labels", labels), ("annotations", annotations_frame(store)),
                     ("workers", trust_table(store))):
        written.append(out / f"{name}.{ext}")
        _write_table(df, written[-1])
    info = run_model_info(store)
    info = {"input_shape": info["input_shape"], "n_classes": info["n_classes"],
            "class_names": info["class_names"], "iteration": iteration,
            "labels_used": store.metrics()[-1]["labels_used"], "model": info["config"]["model"],
            "config": info["config"]}
    written.append(out / "model.pt")
    atomic_write(written[-1], lambda f: torch.save(state, f), binary=True)
    written.append(out / "model.json")
    atomic_write(written[-1], lambda f: json.dump(info, f, indent=1))
    return written


def load_hint(export_dir: Path) -> str:
    """A Python one-liner that loads an export's model."""
    return (f"python -c \"from robust_al.export import load_model; "
            f"m = load_model('{export_dir}'); print(m)\"")
