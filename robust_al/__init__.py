"""robust-al: active-learning labeling campaigns that stay correct when labelers or data cannot be trusted.

``robust_al.aggregate_labels`` (labels only: a crowd's answers in, labels and a trust per labeler out) is
imported on first use, so ``import robust_al`` stays light (no pandas, no torch)."""
__version__ = "0.1.0"

_LAZY = {"aggregate_labels": "robust_al.crowd.labels_only", "AggregateResult": "robust_al.crowd.labels_only",
         "AnnotationError": "robust_al.crowd.longtable"}

__all__ = ["AggregateResult", "AnnotationError", "__version__", "aggregate_labels"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robust_al' has no attribute {name!r}")
