"""Pools of items, the secured holdout, and loaders for embedded and real crowd datasets."""
from robust_al.data.holdout import draw_holdout
from robust_al.data.pool import UNKNOWN, Dataset, Pool

__all__ = ["UNKNOWN", "Dataset", "Pool", "draw_holdout"]
