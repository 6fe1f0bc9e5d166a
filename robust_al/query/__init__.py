"""Choosing what to label next (section III-C)."""
from robust_al.query.cluster import cluster_pool
from robust_al.query.distance import MinDistance, min_sq_distances
from robust_al.query.strategies import (STRATEGIES, ClusterMaxMin, CoreSet, EntropySampling, MarginSampling,
                                        QueryContext, QueryStrategy, RandomSampling, allocate, make_strategy)

__all__ = [
                                        "STRATEGIES",
                                        "ClusterMaxMin",
                                        "CoreSet",
                                        "EntropySampling",
                                        "MarginSampling",
                                        "MinDistance",
                                        "QueryContext",
                                        "QueryStrategy",
                                        "RandomSampling",
                                        "allocate",
                                        "cluster_pool",
                                        "make_strategy",
                                        "min_sq_distances",
]
