"""The final accepted model of a run: rebuilt from the stored config, loaded from stored or exported weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robust_al.config import load_config
from robust_al.crowd.learners import campaign_learner
from robust_al.data.loaders import is_number
from robust_al.store import RunStore


def _learner(config: dict, input_shape, n_classes: int, state: dict, device: str | None = None):
    """The campaign's learner (same builder as the campaign) with ``state`` loaded; ``device`` overrides the
    config's (an export loads on the CPU wherever the run trained)."""
    cfg = load_config(data=config)
    if device is not None:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"device": device})})
    learner = campaign_learner(cfg, tuple(input_shape), n_classes)
    learner.trainer.load_state_dict(state)
    learner.trainer.model.eval()
    return learner


def run_model_info(store: RunStore) -> dict:
    """What rebuilding the run's network needs: input shape, classes, the config (model section and seed)."""
    cfg = store.get_meta("config")
    if cfg is None:
        raise ValueError(f"{store.path} has no stored config")
    shape = store.get_meta("input_shape")
    names = store.get_meta("class_names")
    if shape is None or names is None:  # a run created before these were stored: read them off the data
        from robust_al.data.loaders import load_dataset

        c = load_config(data=cfg)
        pool = load_dataset(c.data.name, **c.data.options).train
        shape, names = list(pool.input_shape), list(pool.class_names)
    return {"input_shape": list(shape), "n_classes": len(names), "class_names": list(names), "config": cfg}


def final_state(store: RunStore) -> tuple[int, dict]:
    """(iteration, state_dict) of the last completed iteration: the final accepted model."""
    last = store.last_iteration()
    if last is None:
        raise ValueError(f"{store.run_dir}: no iteration has completed yet, so there is no model")
    return last, store.iteration_state(last)[2]


def run_learner(run_dir: str | Path, device: str | None = None):
    """The run's final accepted learner (``predict_proba``, ``embed``), rebuilt from its store."""
    store = RunStore.existing(run_dir)
    info = run_model_info(store)
    _, state = final_state(store)
    return _learner(info["config"], info["input_shape"], info["n_classes"], state, device)


def load_model(export_dir: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The network of an export (``model.json`` + ``model.pt``), in eval mode: ``model(x)`` gives logits."""
    export_dir = Path(export_dir)
    info = json.loads((export_dir / "model.json").read_text())
    state = torch.load(export_dir / "model.pt", map_location="cpu", weights_only=True)
    return _learner(info["config"], info["input_shape"], info["n_classes"], state, device).trainer.model


def read_inputs(path: Path, input_shape: tuple[int, ...], data_name: str, options: dict
                ) -> tuple[np.ndarray, np.ndarray]:
    """(keys, X) of an input file: a ``.npy`` array or a ``.csv`` table of features (an optional first
    column holds item keys), else the data's own loader (images, texts) when there is one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    width = int(np.prod(input_shape))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        X = np.load(path, allow_pickle=False)
        keys = np.array([str(i) for i in range(len(X))], dtype=object)
    elif suffix == ".csv":
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
        first = [str(c) for c in raw.iloc[0, -width:]] if len(raw) else []
        # the first line is a header unless its feature cells are numbers; pandas' default header 0..n-1
        # (DataFrame(X).to_csv()) is numeric, yet a header
        if not all(is_number(c) for c in first) or first == [str(i) for i in range(len(first))]:
            raw = raw.iloc[1:]
        if raw.shape[1] == width + 1:
            keys, raw = raw.iloc[:, 0].to_numpy(dtype=object), raw.iloc[:, 1:]
        else:
            keys = np.array([str(i) for i in range(len(raw))], dtype=object)
        try:
            X = raw.to_numpy(dtype=np.float32)
        except ValueError:
            raise ValueError(f"{path}: expected numeric feature columns (an optional first column of item keys)") \
                from None
    else:
        from robust_al.data.inputs import load_inputs  # images / texts, featurized as the pool's were

        keys, X = load_inputs(data_name, options, path)
        keys = np.asarray(keys, dtype=object)
    X = np.asarray(X, dtype=np.float32)
    if X.ndim < 2 or int(np.prod(X.shape[1:])) != width:
        got = "a single row" if X.ndim < 2 else f"width {int(np.prod(X.shape[1:]))}"
        raise ValueError(f"{path}: features of {got}; the run's model expects width {width}"
                         f" (input shape {tuple(input_shape)})")
    return keys, X.reshape(len(X), *input_shape)



def predict_file(run_dir: str | Path, input_path: str | Path, out: str | Path | None = None) -> Path:
    """Predict the inputs of ``input_path`` with the run's final model; writes item, label, confidence and
    one ``p_<class>`` column per class (default ``RUN_DIR/predictions.csv``); returns the path written."""
    from robust_al.files import atomic_write

    store = RunStore.existing(run_dir)
    info = run_model_info(store)
    cfg = info["config"]
    keys, X = read_inputs(Path(input_path), tuple(info["input_shape"]), cfg["data"]["name"],
                          cfg["data"].get("options", {}))
    _, state = final_state(store)
    proba = _learner(cfg, info["input_shape"], info["n_classes"], state).predict_proba(X)
    names = info["class_names"]
    df = pd.DataFrame({"item": keys, "label": [names[k] for k in proba.argmax(axis=1)],
                       "confidence": proba.max(axis=1)})
    for c, name in enumerate(names):
        df[f"p_{name}"] = proba[:, c]
    out = Path(out) if out else Path(run_dir) / "predictions.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: df.to_csv(f, index=False))
    return out
