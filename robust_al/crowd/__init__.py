"""Learning from crowd labels: truth inference and the classifier trained on it.

Truth inference needs no torch; the networks are imported on first use, so label-only work
(``robust-al aggregate``) does not pay torch's import time."""
from robust_al.crowd.aggregate import MODEL_WORKER, TrustWeightedDS, confidence_band, model_worker

_LAZY = {"CrowdClassifier": "robust_al.crowd.classifier", "NetworkTrainer": "robust_al.crowd.network",
         "build_network": "robust_al.crowd.network", "pick_device": "robust_al.crowd.network"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robust_al.crowd' has no attribute {name!r}")


__all__ = [
    "MODEL_WORKER",
    "CrowdClassifier",
    "NetworkTrainer",
    "TrustWeightedDS",
    "build_network",
    "confidence_band",
    "model_worker",
    "pick_device",
]
