"""Query strategies: one class each, one ``query`` method (the small-text convention)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from robust_al.query.cluster import cluster_pool, nearest_center
from robust_al.query.distance import MinDistance


@dataclass
class QueryContext:
    """What a strategy may look at when choosing among the candidates (all arrays row-aligned).

    ``positions`` index the pool rows of the candidates; ``mind`` holds min distances of every pool row to
    the labeled set in the current feature space; ``proba`` the current model's class probabilities for the
    candidates; ``cluster_error`` / ``cluster_perturbation`` map a point of the feature space to the
    model's error and vulnerability near it (from the secured set and the previous iteration's attacks).
    """

    positions: np.ndarray
    embed: np.ndarray | None  # the candidates' embedding; None: their rows of ``mind.E`` (not copied)
    rng: np.random.Generator
    proba: np.ndarray | None = None
    mind: MinDistance | None = None
    secured_embed: np.ndarray | None = None
    secured_correct: np.ndarray | None = None
    vuln_embed: np.ndarray | None = None
    vuln_norm: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def need_proba(self) -> np.ndarray:
        """``proba``, which a strategy with ``needs_proba`` reads (the caller computes it only then)."""
        if self.proba is None:
            raise ValueError("this query strategy needs the model's class probabilities (QueryContext.proba)")
        return self.proba

    def need_mind(self) -> MinDistance:
        """``mind``, the distances to the labeled set that the farthest-first strategies read."""
        if self.mind is None:
            raise ValueError("this query strategy needs the distances to the labeled set (QueryContext.mind)")
        return self.mind


class QueryStrategy(ABC):
    @property
    def needs_proba(self) -> bool:
        """Does ``query`` read ``ctx.proba``? (the caller computes the model's probabilities only then)"""
        return False

    @property
    def without_model(self) -> bool:
        """Can ``query`` choose before any model is trained, from distances in an untrained network's feature
        space with no ``proba`` (the batch a lookahead campaign queues behind its random first one)? Otherwise
        that batch is drawn at random."""
        return False

    @abstractmethod
    def query(self, ctx: QueryContext, n: int) -> np.ndarray:
        """Indices into ``ctx.positions`` of the ``n`` candidates to label next."""


def margin(proba: np.ndarray) -> np.ndarray:
    """p_(1) - p_(2), the gap between the two most probable classes per row (0: on the decision boundary)."""
    top2 = np.sort(proba, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


class RandomSampling(QueryStrategy):
    """The paper's baseline."""

    def query(self, ctx: QueryContext, n: int) -> np.ndarray:
        return ctx.rng.choice(len(ctx.positions), size=min(n, len(ctx.positions)), replace=False)


class EntropySampling(QueryStrategy):
    needs_proba = True

    def query(self, ctx: QueryContext, n: int) -> np.ndarray:
        p = np.clip(ctx.need_proba(), 1e-12, 1.0)
        score = -(p * np.log(p)).sum(axis=1)
        return np.argsort(-score, kind="stable")[:n]


class MarginSampling(QueryStrategy):
    needs_proba = True

    def query(self, ctx: QueryContext, n: int) -> np.ndarray:
        return np.argsort(margin(ctx.need_proba()), kind="stable")[:n]


def typicality(E: np.ndarray, k: int = 20, reference: int = 2000, rng: np.random.Generator | None = None
               ) -> np.ndarray:
    """TypiClust's typicality (Hacohen et al. 2022, eq. 1): 1 / mean distance to the ``k`` nearest neighbours,
    per row of E. The neighbours are looked for among at most ``reference`` rows (a seeded sample beyond
    that), so a large cluster costs rows x reference distances, not rows^2."""
    n = len(E)
    if n <= 2:
        return np.ones(n)
    E = np.ascontiguousarray(E, dtype=np.float32)
    ref = np.arange(n) if n <= reference else np.sort((rng or np.random.default_rng(0)).choice(n, reference,
                                                                                               replace=False))
    R = E[ref]
    k = min(k, len(ref) - 1)
    in_ref = np.zeros(n, dtype=bool)
    in_ref[ref] = True
    ee, rr = np.einsum("ij,ij->i", E, E), np.einsum("ij,ij->i", R, R)
    out = np.empty(n)
    for s in range(0, n, 4096):
        d = np.sqrt(np.maximum(ee[s:s + 4096, None] + rr[None, :] - 2.0 * E[s:s + 4096] @ R.T, 0.0))
        # k + 1 smallest: a row in the reference sample finds itself at distance 0 and skips it; a row outside
        # it keeps its k nearest
        near = np.sort(np.partition(d, k, axis=1)[:, :k + 1], axis=1)
        own = in_ref[s:s + 4096, None]
        out[s:s + 4096] = 1.0 / (np.where(own, near[:, 1:], near[:, :-1]).mean(axis=1) + 1e-12)
    return out


def _greedy_farthest(ctx: QueryContext, members: np.ndarray, n: int, weight: np.ndarray | None = None
                     ) -> list[int]:
    """Greedy max-min within ``members`` (indices into the candidates): pick argmax_x min_y d(x, y), then
    treat the pick as labeled so the next pick is far from it too. Only the members' distances move.
    ``weight`` (one per member, in (0, 1]): pick argmax_x weight(x) * min_y ||x - y|| instead.

    Each step needs the members' distances to the pick: ||x||^2 + ||p||^2 - 2 x.p, one matrix-vector product,
    so the working memory is a few vectors of the members' length. (Forming x - p for every member held two
    more copies of the members' embeddings: 5.1x the pool's memory at 1M x 512, 10 GB.) A cluster (a small
    share of the pool) is gathered once; a pool-wide query multiplies the whole embedding in place.
    """
    mind = ctx.need_mind()
    E, pos = mind.E, ctx.positions[members]
    d = mind.d[pos].copy()
    small = len(pos) * 4 < len(E)
    Em = E[pos] if small else None  # a gathered copy only when it is small
    sq = np.einsum("ij,ij->i", Em, Em) if Em is not None else np.einsum("ij,ij->i", E, E)[pos]
    picks: list[int] = []
    w2 = None if weight is None else np.asarray(weight, dtype=float) ** 2  # on squared distances
    for _ in range(min(n, len(members))):
        if w2 is None:
            j = int(np.argmax(d))
        else:
            far = np.isposinf(d)  # nothing labeled yet: the most typical first
            j = int(np.argmax(np.where(far, w2, -np.inf))) if far.any() else int(np.argmax(d * w2))
        picks.append(int(members[j]))
        p = E[pos[j]]
        dot = Em @ p if Em is not None else (E @ p)[pos]
        np.minimum(d, np.maximum(sq + sq[j] - 2.0 * dot, 0.0), out=d)
        d[j] = -np.inf
    return picks


class CoreSet(QueryStrategy):
    """Greedy k-center core-set (Sener & Savarese 2018): max-min over the whole pool, no clusters."""

    without_model = True

    def query(self, ctx: QueryContext, n: int) -> np.ndarray:
        return np.array(_greedy_farthest(ctx, np.arange(len(ctx.positions)), n), dtype=np.int64)


def allocate(budget: int, sizes: np.ndarray, error: np.ndarray, perturbation: np.ndarray) -> np.ndarray:
    """N_c per cluster: the iteration budget shared in proportion to
    n_c * (error_c + 0.05) * (mean perturbation / perturbation_c),
    so larger, less accurate and more vulnerable (smaller perturbation) clusters get more queries
    (section III-C). Largest-remainder rounding; no cluster gets more than it holds."""
    sizes = np.asarray(sizes, dtype=float)
    pert = np.asarray(perturbation, dtype=float)
    ref = np.nanmean(pert) if np.isfinite(pert).any() else 1.0
    pert = np.where(np.isfinite(pert) & (pert > 0), pert, ref)
    err = np.asarray(error, dtype=float)
    err = np.where(np.isfinite(err), err, np.nanmean(err) if np.isfinite(err).any() else 0.0)
    w = sizes * (err + 0.05) * (ref / pert)
    budget = int(min(budget, sizes.sum()))
    out = np.zeros(len(sizes), dtype=np.int64)
    while out.sum() < budget:
        room = sizes - out
        active = room > 0
        share = np.where(active, w, 0.0)
        if not share.sum() > 0:
            share = active.astype(float)
        want = (budget - out.sum()) * share / share.sum()
        add = np.minimum(np.floor(want).astype(np.int64), room.astype(np.int64))
        if add.sum() == 0:  # hand the remainder out by largest fractional part, one each
            for c in np.argsort(-(want - np.floor(want)), kind="stable"):
                if active[c] and out.sum() < budget:
                    out[c] += 1
            continue
        out += add
    return out


class ClusterMaxMin(QueryStrategy):
    """The project's strategy (eq. 4): cluster the candidates in the model's feature space, then per cluster
    c pick N_c items maximizing the min distance to the labeled set D.

    ``typicality`` = beta >= 0 weighs that distance by (t(x) / max_c t)^beta, t the TypiClust typicality of x
    within its cluster (:func:`typicality`): farthest-first alone picks outliers first, the known cold-start
    weakness of core-set selection at small budgets. While D is far from everything, typical points win; as
    D covers the dense parts, distance takes over. beta = 0 is the paper's pure max-min; beta = 1 (the
    default) was the only weight never behind random sampling on LabelMe's features (pipelines/bench_query.py;
    beta = 2 and 4 over-weigh typicality and fall 3-5 points behind from ~150 labels on).

    ``uncertainty`` = gamma >= 0 multiplies that weight by u(x)^gamma, u = 1 - (p_(1) - p_(2)) the current
    model's margin uncertainty (in [0, 1]; 1 on the decision boundary): within each cluster, far *and*
    uncertain items first, the diversified-margin idea of Cluster-Margin (Citovsky et al. 2021). Without
    class probabilities (the first query) it is ignored. Measured in the campaign (README): gamma = 1 (the
    default) needed 0.34x random's labels on CIFAR-2 transfer features (gamma = 0: 0.75x) and is ahead of
    random at every budget on LabelMe. (It trailed random on LabelMe by 3.6 points only while the model voted
    on labels, ``aggregation.model_as_worker``: the margin picks exactly the items where that vote is wrong.)"""

    def __init__(self, method: str = "kmeans", n_clusters: int | None = None, max_clusters: int = 10,
                 seed: int = 0, typicality: float = 1.0, uncertainty: float = 1.0):
        self.method, self.n_clusters, self.max_clusters, self.seed = method, n_clusters, max_clusters, seed
        self.typicality, self.uncertainty = float(typicality), float(uncertainty)

    @property
    def needs_proba(self) -> bool:
        return self.uncertainty > 0

    without_model = True

    def query(self, ctx: QueryContext, n: int) -> np.ndarray:
        if n <= 0 or len(ctx.positions) == 0:
            return np.zeros(0, dtype=np.int64)
        seed = int(ctx.rng.integers(2**31))
        if ctx.embed is not None:
            labels, centers = cluster_pool(ctx.embed, self.method, self.n_clusters, self.max_clusters, seed=seed)
        else:  # the candidates' rows of the pool's embedding, without copying them
            labels, centers = cluster_pool(ctx.need_mind().E, self.method, self.n_clusters, self.max_clusters,
                                           seed=seed, positions=ctx.positions)
        k = len(centers)
        sizes = np.bincount(labels, minlength=k)
        error = self._per_cluster(ctx.secured_embed, None if ctx.secured_correct is None
                                  else 1.0 - ctx.secured_correct.astype(float), centers)
        pert = self._per_cluster(ctx.vuln_embed, ctx.vuln_norm, centers)
        n_c = allocate(n, sizes, error, pert)
        ctx.info.update(n_clusters=int(k), n_per_cluster=n_c.tolist())
        u = None
        if self.uncertainty > 0 and ctx.proba is not None and ctx.proba.shape[1] > 1:
            u = np.clip(1.0 - margin(ctx.proba), 1e-6, 1.0) ** self.uncertainty
        picks: list[int] = []
        for c in range(k):
            if n_c[c]:
                members = np.flatnonzero(labels == c)
                weight = None
                if self.typicality > 0:
                    E = (ctx.embed[members] if ctx.embed is not None
                         else ctx.need_mind().E[ctx.positions[members]])
                    t = typicality(E, rng=np.random.default_rng(seed + c))
                    weight = (t / t.max()) ** self.typicality
                if u is not None:
                    weight = u[members] if weight is None else weight * u[members]
                picks += _greedy_farthest(ctx, members, int(n_c[c]), weight)
        return np.array(picks, dtype=np.int64)

    @staticmethod
    def _per_cluster(E: np.ndarray | None, values: np.ndarray | None, centers: np.ndarray) -> np.ndarray:
        """Mean of ``values`` over the points of E nearest each center (NaN-free: global mean fallback)."""
        k = len(centers)
        if E is None or values is None or len(E) == 0:
            return np.full(k, np.nan)
        v = np.asarray(values, dtype=float)
        ok = np.isfinite(v)
        if not ok.any():
            return np.full(k, np.nan)
        near = nearest_center(np.ascontiguousarray(E[ok], dtype=np.float32), centers)
        sums = np.bincount(near, weights=v[ok], minlength=k)
        cnt = np.bincount(near, minlength=k)
        return np.where(cnt > 0, sums / np.maximum(cnt, 1), v[ok].mean())


STRATEGIES = {"maxmin": ClusterMaxMin, "random": RandomSampling, "entropy": EntropySampling,
              "margin": MarginSampling, "coreset": CoreSet}


def make_strategy(name: str, **kwargs) -> QueryStrategy:
    if name not in STRATEGIES:
        raise ValueError(f"query.strategy must be one of {sorted(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name](**kwargs) if name == "maxmin" else STRATEGIES[name]()
