"""Persistence: every annotation, trust change, metric and checkpoint, written when it happens."""
from robust_al.store.sqlite import RunStore, StoreError, progress

__all__ = ["RunStore", "StoreError", "progress"]
