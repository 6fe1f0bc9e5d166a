"""Adversary detection from the crowd's agreement structure (tutorial "Crowdsourcing under attack").

Pure functions on integer-coded long arrays: ``tasks`` in 0..T-1, ``workers`` in 0..M-1, ``labels`` in
0..C-1, one entry per answer (a repeated (task, worker) answer keeps its first label).

Notation.  e(y) is the one-hot vector of label y.  For an ordered worker pair (m, m') let S = S_mm' be the
n = n_mm' items both labelled, x_i = e(y_i^(m)), z_i = e(y_i^(m')) and xbar, zbar their means over S.

* Cross-covariance ("Flagging spammers with cross-covariances"): the trace of the one-hot
  cross-covariance over the common items, unbiased,

      c_mm' = 1/(n-1) sum_{i in S} (x_i - xbar) . (z_i - zbar) = (A_mm' - n xbar . zbar) / (n - 1)
            = n/(n-1) (P_S(agree) - xbar . zbar),

  A_mm' = sum_{i in S} 1[y_i^(m) = y_i^(m')].  It is the agreement rate minus the agreement the two label
  frequencies alone produce (chance-corrected agreement), and E[c_mm'] = 0 *exactly* when m's output ignores
  the item (a spammer, A_m = s 1^T), whatever the mix of items in S.  Under Dawid-Skene,
  E c_mm' = <A_m G_S, A_m' G_S>_F with G_S G_S^T = Cov_S(e(y_true)): C = V V^T + D, low rank plus diagonal,
  the rows of V are 0 for spammers, and under the one-coin model (or any Dawid-Skene model with two classes)
  V has rank one, v_m ∝ skill s_m = (C p_m - 1) / (C - 1).
* Item mix.  The scale of E c_mm' is the variance of the true labels over S, which differs between
  workers in a sparse or unbalanced crowd (a worker who only saw items of one class has c = 0 with
  everyone, whatever its skill: no evidence either way).  Per worker, it is estimated by the between-item
  variance, over the worker's items, of the others' consensus q_i (vote shares of the k_i - 1 *other*
  answers to item i, so that m's own labels do not inflate or deflate it), less its sampling noise
  (one-way random-effects ANOVA), so that items of one class whose answers differ only by errors count
  as no variation:

      tau_m = n/(n-1) (mean_i ||q_i||^2 - ||mean_i q_i||^2) - mean_i (1 - ||q_i||^2) / (k_i - 2)

  over the n items of m that others answered too (no noise term for an item with one other answer);
  a_mm' = sqrt(tau_m tau_m') / tau_bar (tau_bar: the answer-weighted mean of tau_m; a < 0.05 is set to 0)
  and the model is c_mm' ~ a_mm' v_m . v_m'.  Per worker rather than per pair: a pair shares ~10 items,
  too few to estimate a variance.  ``spammer_scores`` uses it; ``colluding_blocs`` does not (a = 1), since
  a bloc's unanimity on the attacked items would pass for item variation and explain its agreement away.
* V is recovered from the *observed* off-diagonal entries only (real crowds are sparse: most pairs share no
  item), by weighted low-rank least squares, weights n_mm' - 1 (~ inverse variance of c; a single shared
  item carries no covariance):

      V = argmin_V  sum_{m != m', n_mm' >= 2} (n_mm' - 1) (c_mm' - a_mm' v_m . v_m')^2 + lam ||V||_F^2.

Nothing here builds a dense workers x items matrix; the pair statistics come from an enumeration of the
co-labels (sum_i k_i (k_i - 1) rows for k_i answers on item i), so memory grows with that sum.

Timing (``pipelines/bench_detect.py``, 2 cores shared with other jobs): CIFAR-10N (150,000 labels, 747
workers, 50,000 items): spammer_scores 0.13-0.35 s, colluding_blocs 0.8-1.3 s with skills given (2.6 s
under a load of 4), mmsr_skills 0.2-0.3 s (the vectorised port; crowd-kit's own MMSR cannot run there).
The Zheng crowds (4,212 to 24,945 labels): 0.01-0.2 s per detector; crowd-kit's MMSR 0.2-1.4 s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from scipy import stats

__all__ = ["PairStats", "colluding_blocs", "mmsr_skills", "pair_statistics", "spammer_scores"]


# --------------------------------------------------------------------------------------------------------
# pair statistics
# --------------------------------------------------------------------------------------------------------
@dataclass
class PairStats:
    """Statistics of every ordered worker pair (m, m') that co-labelled at least one item.

    ``m``, ``mp``: worker codes (both orders present); ``n``: items in common; ``agree``: agreements;
    ``sx`` / ``sz`` (P x C): label counts of m / of m' over the common items; ``c``: unbiased trace
    cross-covariance (NaN where n < 2); ``w`` = max(n - 1, 0); ``a``: item-mix scale of the pair (0 where
    n < 2 or where the items show no variation); ``tau``: per *worker*, the true-label variance proxy of
    its items, ``tau_bar`` their mean (module docstring).  Co-label rows (one per ordered pair of answers
    to one item by two workers): ``rec`` (index of m's answer), ``other_label`` (the label m' gave),
    ``item``, ``pair`` (row of the pair table).  ``workers`` / ``labels``: the deduplicated answers.
    """

    n_workers: int
    n_classes: int
    m: np.ndarray
    mp: np.ndarray
    n: np.ndarray
    agree: np.ndarray
    sx: np.ndarray
    sz: np.ndarray
    c: np.ndarray
    w: np.ndarray
    a: np.ndarray
    tau: np.ndarray
    tau_bar: float
    rec: np.ndarray
    other_label: np.ndarray
    item: np.ndarray
    pair: np.ndarray
    workers: np.ndarray
    labels: np.ndarray

    @property
    def fit_w(self) -> np.ndarray:
        """Least-squares weight of c / a in the fit: (n - 1) a^2 (0 for unusable pairs)."""
        return np.where(self.a > 0, self.w * self.a ** 2, 0.0)

    @property
    def fit_x(self) -> np.ndarray:
        """c / a, the estimate of v_m . v_m' from one pair (0 where a = 0, then unweighted)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.a > 0, self.c / self.a, 0.0)


def _item_variance(t, w, y, M: int, C: int):
    """tau_m per worker (between-item variance of the others' consensus over m's items, less its sampling
    noise) and tau_bar (answer-weighted mean over the workers who have it)."""
    T = int(t.max()) + 1
    k = np.bincount(t, minlength=T)
    cnt = np.bincount(t * C + y, minlength=T * C).reshape(T, C).astype(float)
    use = k[t] >= 2                                    # someone else answered the item
    tw, ww, yw = t[use], w[use], y[use]
    ko = (k[tw] - 1).astype(float)                     # the others' answers
    q = cnt[tw].copy()
    q[np.arange(len(tw)), yw] -= 1                     # leave m's own answer out
    q /= ko[:, None]
    q2 = (q ** 2).sum(axis=1)
    noise = np.where(ko >= 2, (1 - q2) / np.maximum(ko - 1, 1), 0.0)   # unbiased tr Cov(q) given ko
    n = np.bincount(ww, minlength=M).astype(float)
    sq = np.stack([np.bincount(ww, weights=q[:, c], minlength=M) for c in range(C)], axis=1)
    sq2 = np.bincount(ww, weights=q2, minlength=M)
    sn = np.bincount(ww, weights=noise, minlength=M)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(n >= 2, (sq2 - (sq ** 2).sum(axis=1) / n) / (n - 1) - sn / n, 0.0)
    tau = np.clip(tau, 0.0, None)
    tau_bar = float(np.average(tau[n >= 2], weights=n[n >= 2])) if (n >= 2).any() else 0.0
    return tau, tau_bar


def _check(tasks, workers, labels, n_classes: int, n_workers: int | None = None
           ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    t: npt.NDArray[np.int64] = np.asarray(tasks).astype(np.int64, copy=False).ravel()
    w: npt.NDArray[np.int64] = np.asarray(workers).astype(np.int64, copy=False).ravel()
    y: npt.NDArray[np.int64] = np.asarray(labels).astype(np.int64, copy=False).ravel()
    if not (len(t) == len(w) == len(y)):
        raise ValueError(f"tasks, workers, labels must have one entry per answer (got {len(t)}, {len(w)}, {len(y)})")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if len(t) and (t.min() < 0 or w.min() < 0 or y.min() < 0 or y.max() >= n_classes):
        raise ValueError("tasks and workers must be non-negative codes and labels must lie in 0..n_classes-1")
    M = int(w.max()) + 1 if len(w) else 0
    if n_workers is not None:
        if n_workers < M:
            raise ValueError(f"n_workers={n_workers} but worker codes go up to {M - 1}")
        M = int(n_workers)
    if len(t):   # one answer per (task, worker): keep the first
        _, first = np.unique(t * max(M, 1) + w, return_index=True)
        if len(first) < len(t):
            first.sort()
            t, w, y = t[first], w[first], y[first]
    return t, w, y, M


def pair_statistics(tasks, workers, labels, n_classes: int, *, n_workers: int | None = None,
                    item_mix: bool = True) -> PairStats:
    """Enumerate the co-labels and reduce them to the per-pair statistics of :class:`PairStats`.

    ``item_mix=False`` sets a = 1 on every pair with n >= 2 (no scaling for the item mix).
    """
    t, w, y, M = _check(tasks, workers, labels, n_classes, n_workers)
    C = int(n_classes)
    T = int(t.max()) + 1 if len(t) else 0
    k = np.bincount(t, minlength=T)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    starts = np.cumsum(k) - k
    # every ordered pair (a, b) of answers to the same item, a != b (positions in the sorted order)
    reps = k[ts]
    a = np.repeat(np.arange(len(ts)), reps)
    b = starts[ts[a]] + (np.arange(len(a)) - np.repeat(np.cumsum(reps) - reps, reps))
    keep = a != b
    a, b = order[a[keep]], order[b[keep]]
    uniq, pair = np.unique(w[a] * M + w[b], return_inverse=True)
    P = len(uniq)
    ya, yb = y[a], y[b]
    n = np.bincount(pair, minlength=P).astype(float)
    agree = np.bincount(pair, weights=(ya == yb), minlength=P)
    sx = np.bincount(pair * C + ya, minlength=P * C).reshape(P, C).astype(float)
    sz = np.bincount(pair * C + yb, minlength=P * C).reshape(P, C).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(n >= 2, (agree - (sx * sz).sum(axis=1) / n) / (n - 1), np.nan)
    wt = np.maximum(n - 1, 0.0)
    m, mp = uniq // M, uniq % M
    if T:
        tau, tau_bar = _item_variance(t, w, y, M, C)
    else:
        tau, tau_bar = np.zeros(M), 0.0
    if item_mix and tau_bar > 0:
        scale = np.where(wt > 0, np.sqrt(tau[m] * tau[mp]) / tau_bar, 0.0)
        scale = np.where(scale >= 0.05, scale, 0.0)
    else:
        scale = (wt > 0).astype(float)
    return PairStats(M, C, m, mp, n, agree, sx, sz, c, wt, scale, tau, tau_bar, a, yb, t[a], pair, w, y)


# --------------------------------------------------------------------------------------------------------
# weighted low-rank fit of the observed off-diagonal entries, and its null distribution
# --------------------------------------------------------------------------------------------------------
def _lowrank(ps: PairStats, rank: int, random_state: int = 0, n_iter: int = 500, tol: float = 1e-7
             ) -> np.ndarray:
    """V (M x rank) minimising sum_{observed m != m'} (n-1) (c_mm' - a_mm' v_m . v_m')^2 + lam ||V||^2.

    Damped simultaneous (Jacobi) alternating least squares: every row solves its own normal equations
        G_m v_m = b_m,  G_m = sum_m' (n-1) a^2 v_m' v_m'^T + lam I,  b_m = sum_m' (n-1) a c_mm' v_m'
    given the previous V, and the new V is the mean of the old and the solved one (undamped simultaneous
    updates of a symmetric factorisation can oscillate).  lam = 1e-3 x the median weighted degree, so a
    worker with no usable pair gets v_m = 0.  Start: rank one at the weighted mean level, small seeded
    random other directions.
    """
    M = ps.n_workers
    wt, x = ps.fit_w, ps.fit_x
    ok = wt > 0
    W = sp.csr_matrix((wt[ok], (ps.m[ok], ps.mp[ok])), shape=(M, M))
    WX = sp.csr_matrix((wt[ok] * x[ok], (ps.m[ok], ps.mp[ok])), shape=(M, M))
    deg = np.asarray(W.sum(axis=1)).ravel()
    lam = 1e-3 * (np.median(deg[deg > 0]) if (deg > 0).any() else 1.0)
    rng = np.random.default_rng(random_state)
    level = np.sqrt(max(np.sum(wt[ok] * x[ok]) / max(np.sum(wt[ok]), 1e-12), 1e-3))
    V: npt.NDArray[np.float64] = np.zeros((M, rank))
    V[:, 0] = level
    if rank > 1:
        V[:, 1:] = 0.1 * level * rng.standard_normal((M, rank - 1))
    V[deg == 0] = 0.0
    eye = lam * np.eye(rank)
    for _ in range(n_iter):
        outer = (V[:, :, None] * V[:, None, :]).reshape(M, rank * rank)
        G = np.asarray(W @ outer).reshape(M, rank, rank) + eye
        Vn = 0.5 * (V + np.linalg.solve(G, np.asarray(WX @ V)[:, :, None])[:, :, 0])
        delta = np.abs(Vn - V).max()
        V = Vn
        if delta < tol * max(np.abs(V).max(), 1e-12):
            break
    return V


def _normal_eq(ps: PairStats, V: np.ndarray):
    """Per worker: G_m = sum_m' (n-1) a^2 v_m' v_m'^T and b_m = sum_m' (n-1) a c_mm' v_m'."""
    M, r = V.shape
    wt, x = ps.fit_w, ps.fit_x
    ok = wt > 0
    W = sp.csr_matrix((wt[ok], (ps.m[ok], ps.mp[ok])), shape=(M, M))
    WX = sp.csr_matrix((wt[ok] * x[ok], (ps.m[ok], ps.mp[ok])), shape=(M, M))
    outer = (V[:, :, None] * V[:, None, :]).reshape(M, r * r)
    return np.asarray(W @ outer).reshape(M, r, r), np.asarray(WX @ V)


def _null_covariance(ps: PairStats, V: np.ndarray) -> np.ndarray:
    """Cov(b_m) under H0 "m is a spammer": its labels iid from its own label frequencies s_m.

    (n-1) c_mm' = sum_{i in S} x_i . (z_i - zbar_S), so b_m = sum_{i in items(m)} B_i^T x_i with
    B_i = sum_{m' on i} a_mm' (e(y_i^(m')) - zbar_{S_mm'}) v_m'^T  (C x r).  With x_i iid ~ s_m (and the
    partners' labels held fixed), E[b_m] = 0 and Cov(b_m) = sum_i B_i^T (diag(s_m) - s_m s_m^T) B_i.
    s_m is smoothed by one pseudo-answer at the crowd's label frequencies, so that a worker who always
    gives the same label still has a non-degenerate null.
    """
    M, r = V.shape
    C = ps.n_classes
    R = len(ps.workers)
    use = ps.a[ps.pair] > 0
    rec, pair, yl = ps.rec[use], ps.pair[use], ps.other_label[use]
    vmp = V[ps.mp[pair]] * ps.a[pair][:, None]                 # (Q, r)
    zbar = ps.sz[pair] / ps.n[pair][:, None]                   # (Q, C)
    B = np.zeros((R, C, r))
    np.add.at(B, (rec, yl), vmp)                               # B[rec, c] += 1[c = y'] a v'
    B -= _segment_sum(rec, (zbar[:, :, None] * vmp[:, None, :]).reshape(len(rec), C * r), R).reshape(R, C, r)
    s = _label_freq(ps.workers, ps.labels, M, C)[ps.workers]   # (R, C)
    BtDB = np.einsum("qck,qc,qcl->qkl", B, s, B)
    Bts = np.einsum("qck,qc->qk", B, s)
    cov = BtDB - Bts[:, :, None] * Bts[:, None, :]
    return _segment_sum(ps.workers, cov.reshape(R, r * r), M).reshape(M, r, r)


def _segment_sum(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sum of the rows of ``values`` per ``index`` (n x d)."""
    if not len(index):
        return np.zeros((n, values.shape[1]))
    S = sp.csr_matrix((np.ones(len(index)), (index, np.arange(len(index)))), shape=(n, len(index)))
    return np.asarray(S @ values)


def _label_freq(workers: np.ndarray, labels: np.ndarray, M: int, C: int) -> np.ndarray:
    """Per worker label frequencies with one pseudo-answer spread as the crowd's frequencies."""
    cnt = np.bincount(workers * C + labels, minlength=M * C).reshape(M, C).astype(float)
    crowd = np.bincount(labels, minlength=C) / max(len(labels), 1)
    return (cnt + crowd) / (cnt.sum(axis=1, keepdims=True) + 1.0)


def _wald(ps: PairStats, V: np.ndarray):
    """Wald statistic b_m^T Sigma_m^+ b_m of H0 "v_m = 0" (chi2 with rank(V) dof), its p-value, and the
    standard error of v_m (sqrt of the largest eigenvalue of G_m^-1 Sigma_m G_m^-1)."""
    G, b = _normal_eq(ps, V)
    Sig = _null_covariance(ps, V)
    wald = np.einsum("mk,mkl,ml->m", b, np.linalg.pinv(Sig, hermitian=True), b)
    Ginv = np.linalg.pinv(G, hermitian=True)
    se = np.sqrt(np.clip(np.linalg.eigvalsh(Ginv @ Sig @ Ginv)[:, -1], 0, None))
    return wald, stats.chi2.sf(wald, V.shape[1]), se


def _overlap(ps: PairStats) -> np.ndarray:
    """Effective co-labels per worker: sum_m' (n_mm' - 1) a_mm' (items that carry covariance information)."""
    return np.bincount(ps.m, weights=ps.w * ps.a, minlength=ps.n_workers)


# --------------------------------------------------------------------------------------------------------
# spammers
# --------------------------------------------------------------------------------------------------------
def _two_means_at_zero(x: np.ndarray, n_iter: int = 100) -> tuple[float, np.ndarray]:
    """k-means (k = 2) of non-negative 1-D values with one head pinned at 0 (the spammer model: their rows
    of V are exactly 0) and the other free: Lloyd iterations from the mean.  Returns (free head, mask of
    the cluster at 0); a value joins the 0 cluster when it is closer to 0 than to the free head."""
    if not len(x):
        return 0.0, np.zeros(0, bool)
    head = float(x.mean())
    low = x < head / 2
    for _ in range(n_iter):
        head = float(x[~low].mean()) if (~low).any() else head
        new = x < head / 2
        if (new == low).all():
            break
        low = new
    return head, low


def spammer_scores(tasks, workers, labels, n_classes: int, *, min_overlap: float = 20.0, rank: int = 1,
                   upper_ratio: float = 0.4, alpha: float = 0.01,
                   n_workers: int | None = None, random_state: int = 0) -> pd.DataFrame:
    """Tutorial Alg. 1 (covariance-based spammer identification), with statistical guards.

    S1  c_mm' (trace one-hot cross-covariance, module docstring) on the observed pairs, and V (M x ``rank``)
        from the weighted low-rank fit  c_mm' ~ a_mm' v_m . v_m'  of the observed off-diagonal entries
        (``_lowrank``).  ``rank`` = 1 by default: it is exact for one-coin workers and for any Dawid-Skene
        worker with two classes, and extra directions mostly add noise to a spammer's row (and are poorly
        determined for workers with few partners; ``random_state`` only seeds their start).
    S2  k-means (k = 2) of the row norms ||v_m|| of the *eligible* workers, with one head pinned at 0 (the
        model says a spammer's row *is* 0) and the other free (``_two_means_at_zero``); rows of V are
        defined up to a rotation and an anti-correlated worker (who flips labels) has a large row
        pointing the other way, so it is the norm that is clustered.
    S3  the cluster at 0 holds the candidates: ||v_m|| < ||honest head|| / 2.

    k-means always returns two clusters (a clean crowd of varied skill has members nearer 0 than its
    head), so a candidate is flagged only when the evidence says so, per worker:

    * not shown informative: H0 "v_m = 0" is not rejected by the Wald test b_m^T Sigma_m^+ b_m ~ chi2(rank)
      at level ``alpha`` (b_m = sum_m' (n-1) a c_mm' v_m', Sigma_m its exact covariance under H0, see
      ``_null_covariance``);
    * shown near 0: ||v_m|| + 1.96 se_m <= ``upper_ratio`` x ||honest head|| (a one-sided 97.5% upper bound
      of the row norm; se_m^2 = largest eigenvalue of G_m^-1 Sigma_m G_m^-1).  So an honest but weak worker
      (true norm above ``upper_ratio`` of the typical one) is flagged with probability <= 2.5% however much
      it labelled, and a worker with too little evidence (se_m > ``upper_ratio`` / 1.96 of the honest head)
      has a wide bound and is not flagged;
    * eligible: effective overlap sum_m' (n_mm' - 1) a_mm' >= ``min_overlap`` co-labels (default 20; a
      spammer's row has sd ~ 0.5 / sqrt(overlap) of a typical honest one, so below ~20 co-labels 0 cannot
      be told from a typical worker at 3 sd).  Co-labels on items that show no variation (a = 0) do not
      count: two workers who only shared items of one class say nothing about each other.

    Returns a DataFrame indexed by worker code 0..M-1: ``norm`` (||v_m||), ``norm_rel`` (norm / honest
    head), ``se_rel`` (se / honest head), ``wald``, ``p_value``, ``overlap`` (effective co-labels), ``n_labels``,
    ``cluster`` (0 low, 1 high, -1 not eligible) and ``spammer`` (bool).
    """
    ps = pair_statistics(tasks, workers, labels, n_classes, n_workers=n_workers)
    M = ps.n_workers
    V = _lowrank(ps, rank, random_state)
    wald, p, se = _wald(ps, V)
    norm = np.linalg.norm(V, axis=1)
    overlap = _overlap(ps)
    elig = overlap >= min_overlap
    cluster = np.full(M, -1)
    spam = np.zeros(M, bool)
    high = np.nan
    if elig.sum() >= 2:
        high, low = _two_means_at_zero(norm[elig])
        cluster[elig] = np.where(low, 0, 1)
        if high > 0:
            spam = (cluster == 0) & (p > alpha) & (norm + 1.96 * se <= upper_ratio * high)
    scale = high if np.isfinite(high) and high > 0 else np.nan
    return pd.DataFrame({
        "norm": norm, "norm_rel": norm / scale, "se_rel": se / scale, "wald": wald, "p_value": p,
        "overlap": overlap, "n_labels": np.bincount(ps.workers, minlength=M), "cluster": cluster,
        "spammer": spam,
    }, index=pd.RangeIndex(M, name="worker"))


# --------------------------------------------------------------------------------------------------------
# colluding blocs
# --------------------------------------------------------------------------------------------------------
def _spectral_embedding(ps: PairStats, rank: int) -> np.ndarray:
    """Leading eigen-directions of the overlap-weighted agreement matrix, degree-regularised.

    K_mm' = (n-1) a c_mm' on the usable pairs (0 elsewhere), d_m = sum_m' (n-1) a^2, tau = mean degree,
    L = (D + tau)^-1/2 K (D + tau)^-1/2 (regularised spectral clustering, which keeps thinly connected
    workers of a sparse crowd from dominating the leading eigenvectors), and V = (D + tau)^-1/2 U
    Lambda^1/2 from its ``rank`` largest eigenpairs.  (A rank-2 least-squares fit of the observed entries
    is ill posed on sparse crowds: its second direction is unidentified for workers with few partners and
    diverges on CIFAR-10N.)  Only a starting point of ``_bloc_split``: on CIFAR-10N its leading directions
    follow who labelled with whom rather than agreement.
    """
    M = ps.n_workers
    wt = ps.fit_w
    ok = wt > 0
    K = sp.csr_matrix(((ps.w * ps.a * np.nan_to_num(ps.c))[ok], (ps.m[ok], ps.mp[ok])), shape=(M, M))
    d = np.bincount(ps.m[ok], weights=wt[ok], minlength=M)
    tau = d[d > 0].mean() if (d > 0).any() else 1.0
    Dm = 1.0 / np.sqrt(d + tau)
    L = sp.diags(Dm) @ K @ sp.diags(Dm)
    r = min(rank, M)
    if M <= 200 or r >= M - 1:
        vals, vecs = np.linalg.eigh(L.toarray())
        vals, vecs = vals[::-1][:r], vecs[:, ::-1][:, :r]
    else:
        from scipy.sparse.linalg import eigsh

        vals, vecs = eigsh(L, k=r, which="LA", v0=np.ones(M), tol=1e-8)
        vals, vecs = vals[::-1], vecs[:, ::-1]
    V = Dm[:, None] * vecs * np.sqrt(np.clip(vals, 0, None))[None, :]
    V[d == 0] = 0.0
    return V


def _two_means(X: np.ndarray, weight: np.ndarray, random_state: int, n_init: int = 8,
               n_iter: int = 100) -> np.ndarray:
    """Weighted k-means with k = 2 (Lloyd, k-means++ starts), best of ``n_init`` seeded starts: 0/1 labels."""
    rng = np.random.default_rng(random_state)
    best, best_sse = np.zeros(len(X), int), np.inf
    p = weight / weight.sum()
    for _ in range(n_init):
        c0 = X[rng.choice(len(X), p=p)]
        d = ((X - c0) ** 2).sum(axis=1) * weight
        c1 = X[rng.choice(len(X), p=d / d.sum())] if d.sum() > 0 else X[rng.integers(len(X))]
        cent = np.stack([c0, c1])
        lab: np.ndarray | None = None
        for _ in range(n_iter):
            d2 = ((X[:, None, :] - cent[None]) ** 2).sum(axis=2)
            new = d2.argmin(axis=1)
            if lab is not None and (new == lab).all():
                break
            lab = new
            for k in (0, 1):
                wk = weight[lab == k]
                if wk.sum() > 0:
                    cent[k] = (X[lab == k] * wk[:, None]).sum(axis=0) / wk.sum()
        if lab is None:  # d2 was never computed either
            raise ValueError(f"n_iter must be at least 1, got {n_iter}")
        sse = (d2[np.arange(len(X)), lab] * weight).sum()
        if sse < best_sse - 1e-12:
            best, best_sse = lab.copy(), sse
    return best


def _spectral_split(V: np.ndarray, informative: np.ndarray, random_state: int) -> np.ndarray:
    """Spectral clustering of the informative workers: two-means of the unit rows v_m / ||v_m|| of the
    leading eigen-directions V of the (chance-corrected) agreement matrix, rows weighted by ||v_m||^2.
    -1 = not assigned."""
    g = np.full(len(V), -1)
    nrm = np.linalg.norm(V, axis=1)
    idx = np.flatnonzero(informative & (nrm > 1e-12 * max(nrm.max(), 1e-300)))
    if len(idx) < 4:
        return g
    g[idx] = _two_means(V[idx] / nrm[idx, None], nrm[idx] ** 2, random_state)
    return g


def _block_fit(K: sp.csr_matrix, W: sp.csr_matrix, eligible: np.ndarray, g: np.ndarray, n_iter: int = 50):
    """Two-block model of the observed entries, fitted by alternating least squares (k-means on a graph):

        min_{g, B}  sum_{observed m != m'} (n-1) (c_mm' - B[g_m, g_m'])^2,

    B (2 x 2) = the weighted mean of c between and within the groups; each eligible worker moves to the
    group k minimising sum_m' (n-1) (c_mm' - B[k, g_m'])^2 = const - 2 sum_l B[k,l] S_ml + sum_l B[k,l]^2 W_ml
    (S_ml, W_ml: sums of (n-1) c and of (n-1) over m's partners in group l).  Returns (g, cost)."""
    cost = np.inf
    for it in range(n_iter + 1):
        ind = np.stack([(g == k) for k in (0, 1)], axis=1).astype(float)
        S, Wl = np.asarray(K @ ind), np.asarray(W @ ind)
        tot_S, tot_W = ind.T @ S, ind.T @ Wl
        if (tot_W <= 0).any():
            return g, np.inf
        B = tot_S / tot_W
        cost = float(-2 * (tot_S * B).sum() + (tot_W * B ** 2).sum())
        if it == n_iter:
            break
        per = np.stack([-2 * (S * B[k]).sum(axis=1) + (Wl * B[k] ** 2).sum(axis=1) for k in (0, 1)], axis=1)
        new = np.where(eligible, per.argmin(axis=1), -1)
        if (new == g).all():
            break
        g = new
    return g, cost


def _bloc_split(ps: PairStats, rank: int, alpha: float, min_overlap: float, random_state: int):
    """Split the informative workers in two by the block structure of the agreement matrix.

    Informative: H0 "m's covariances are 0" rejected (Wald, rank-one loadings, p < ``alpha``) with
    effective overlap >= ``min_overlap``; the others (spammers, thinly observed workers) get -1.  Starting
    points, each refined by ``_block_fit``; kept: the split with the lowest rho (the most bloc-like; the
    two-block cost itself prefers splitting honest workers by skill over isolating a small bloc):
      * the sign of the leading eigenvector of the residual K_R = (n-1) (c - v v^T) after the rank-one
        (one-coin) fit, degree-regularised: (D + tau)^-1/2 K_R (D + tau)^-1/2 (D: weighted degrees, tau
        their mean).  The residual is mean-zero for honest workers, so who-labelled-with-whom (batches of
        workers that shared items) does not pass for structure, as it does in the eigenvectors of the
        agreement matrix itself on CIFAR-10N;
      * the sign of v (a bloc that flips labels is an anti-correlated group that the rank-one fit absorbs);
      * spectral clustering: two-means of the unit rows of the ``rank`` leading eigen-directions of the
        degree-regularised agreement matrix (``_spectral_embedding``).
    Returns (g, rank-one p-values, effective overlap).
    """
    M = ps.n_workers
    v = _lowrank(ps, 1, random_state)
    _, p, _ = _wald(ps, v)
    overlap = _overlap(ps)
    inf = (p < alpha) & (overlap >= min_overlap)
    g = np.full(M, -1)
    if inf.sum() < 4:
        return g, p, overlap
    ok = (ps.fit_w > 0) & inf[ps.m] & inf[ps.mp]
    m, mp, wt, c = ps.m[ok], ps.mp[ok], ps.fit_w[ok], ps.fit_x[ok]
    K = sp.csr_matrix((wt * c, (m, mp)), shape=(M, M))
    W = sp.csr_matrix((wt, (m, mp)), shape=(M, M))
    KR = sp.csr_matrix((wt * (c - v[m, 0] * v[mp, 0]), (m, mp)), shape=(M, M))
    d = np.asarray(W.sum(axis=1)).ravel()
    Dm = sp.diags(1.0 / np.sqrt(d + d[d > 0].mean()))
    inits = [np.where(inf, (_leading(Dm @ KR @ Dm) > 0).astype(int), -1),
             np.where(inf, (v[:, 0] < 0).astype(int), -1),
             _spectral_split(_spectral_embedding(ps, rank), inf, random_state)]
    best, best_rho = g, np.inf
    for g0 in inits:
        if min((g0 == 0).sum(), (g0 == 1).sum()) < 2:
            continue
        g1, _ = _block_fit(K, W, inf, g0)
        r = _rho(_group_products(ps, g1))[0]
        if np.isfinite(r) and r < best_rho - 1e-12:
            best, best_rho = g1, r
    return best, p, overlap


def _leading(L: sp.spmatrix) -> np.ndarray:
    """Eigenvector of the largest eigenvalue of a symmetric matrix (dense below 200 rows)."""
    n = L.shape[0]
    if n <= 200:
        _vals, vecs = np.linalg.eigh(L.toarray())
        return vecs[:, -1]
    from scipy.sparse.linalg import eigsh

    return eigsh(L, k=1, which="LA", v0=np.ones(n), tol=1e-8)[1][:, 0]


def _group_products(ps: PairStats, g: np.ndarray) -> np.ndarray:
    """Least-squares estimate of v_m . v_m' pooled over the pairs between groups, [k_00, k_11, k_01]:
    k_gh = sum (n-1) a c / sum (n-1) a^2 over the usable pairs with m in g, m' in h (a = 1 here)."""
    ok = ps.fit_w > 0
    ga, gb = g[ps.m[ok]], g[ps.mp[ok]]
    num, den = (ps.w * ps.a * np.nan_to_num(ps.c))[ok], ps.fit_w[ok]
    out = []
    for a, b in ((0, 0), (1, 1), (0, 1)):
        sel = (ga == a) & (gb == b)
        out.append(num[sel].sum() / den[sel].sum() if den[sel].sum() > 0 else np.nan)
    return np.array(out)


def _item_bootstrap_rho(ps: PairStats, g: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """rho of ``_group_products`` on ``n_boot`` Poisson(1) item-bootstrap replicates, to first order.

    (n-1) c_mm' = sum_{i in S} x_i . (z_i - zbar_S) is linear in the item weights once zbar_S is held at
    its value (the delta method; the centering moves at second order), and so is n - 1, so each group
    sum is Q @ H with Q the B x T item multiplicities and H the per-item sums: no pair table is rebuilt.
    """
    ok = (ps.fit_w[ps.pair] > 0) & (g[ps.m[ps.pair]] >= 0) & (g[ps.mp[ps.pair]] >= 0)
    pair, item = ps.pair[ok], ps.item[ok]
    ga, gb = g[ps.m[pair]], g[ps.mp[pair]]
    code = np.select([(ga == 0) & (gb == 0), (ga == 1) & (gb == 1), (ga == 0) & (gb == 1)], [0, 1, 2], -1)
    keep = code >= 0
    pair, item, code = pair[keep], item[keep], code[keep]
    ya = ps.labels[ps.rec[ok][keep]]
    h = (ya == ps.other_label[ok][keep]) - ps.sz[pair, ya] / ps.n[pair]
    T = int(ps.item.max()) + 1 if len(ps.item) else 0
    H = np.bincount(item * 3 + code, weights=h, minlength=3 * T).reshape(T, 3)
    N = np.bincount(item * 3 + code, minlength=3 * T).reshape(T, 3).astype(float)
    upair = np.unique(pair)
    ucode = np.select([(g[ps.m[upair]] == 0) & (g[ps.mp[upair]] == 0),
                       (g[ps.m[upair]] == 1) & (g[ps.mp[upair]] == 1)], [0, 1], 2)
    npairs = np.bincount(ucode, minlength=3).astype(float)
    Q = rng.poisson(1.0, (n_boot, T)).astype(float)
    num, den = Q @ H, Q @ N - npairs
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(den > 0, num / den, np.nan)
    return _rho(k)


def _rho(k: np.ndarray) -> np.ndarray:
    """rho = k_01 / sqrt(k_00 k_11) per row of k (1-D k: one row); NaN when a group does not agree within
    itself at all."""
    k = np.atleast_2d(k)
    k00, k11, k01 = k[:, 0], k[:, 1], k[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(np.isfinite(k).all(axis=1) & (k00 > 0) & (k11 > 0), k01 / np.sqrt(k00 * k11), np.nan)
    return r


def _unanimity_jump(t, w, y, C: int, g: np.ndarray) -> np.ndarray:
    """Per group: within-group agreement on disputed items minus on undisputed items.

    An item is disputed when both groups answered it and their majority labels differ.  Within a group,
    the pairwise agreement rate on a set of items is sum_i sum_c n_ic (n_ic - 1) / sum_i k_i (k_i - 1)
    (n_ic: members who said c, k_i: members who answered).  Honest workers are independent given the true
    label, so their agreement does not rise on the disputed items; a bloc that gives one wrong label on
    the attacked items is unanimous exactly there.  A third-order check that does not rest on skills.
    """
    T = int(t.max()) + 1
    sel = g[w] >= 0
    cnt = np.bincount((g[w[sel]] * T + t[sel]) * C + y[sel], minlength=2 * T * C).reshape(2, T, C)
    k = cnt.sum(axis=2)
    maj = cnt.argmax(axis=2)
    both = (k[0] > 0) & (k[1] > 0)
    out = np.full(2, np.nan)
    for h in (0, 1):
        num = (cnt[h] * (cnt[h] - 1)).sum(axis=1)
        den = k[h] * (k[h] - 1)
        rates = []
        for mask in (both & (maj[0] != maj[1]), both & (maj[0] == maj[1])):
            m = mask & (den > 0)
            rates.append(num[m].sum() / den[m].sum() if den[m].sum() > 0 else np.nan)
        out[h] = rates[0] - rates[1]
    return out


def colluding_blocs(tasks, workers, labels, n_classes: int, *, skills=None, rank: int = 2,
                    rho_max: float = 0.75, alpha: float = 0.01, min_overlap: float = 20.0,
                    n_boot: int = 100, min_size: int = 2, side: str = "both",
                    n_workers: int | None = None, random_state: int = 0) -> pd.DataFrame:
    """A group of workers who agree with each other far more than with the rest, and which side is adversarial.

    Agreement matrix (tutorial, "Annotator agreement matrix"): sigma_mm' = Pr(y^(m) = y^(m')) =
    tr(A_m D A_m'^T), Sigma = C + I, low rank plus diagonal for honest (Dawid-Skene) workers; colluding
    adversaries deviate from that model.  It is used chance-corrected: c_mm' = n/(n-1) (P_S(agree) -
    xbar . zbar) (module docstring; no item-mix scaling here, a = 1).  Under the one-coin model
    E c_mm' = v_m v_m' (rank one, v_m ∝ s_m), so for *any* split of honest workers into groups 0 and 1

        rho = k_01 / sqrt(k_00 k_11) ~ 1    (k_gh: pooled estimate of v_m . v_m' between groups g and h),

    lowered only by the spread of skill within each group (Cauchy-Schwarz).  A colluding bloc breaks this:
    its members agree on the attacked items, so k_bloc,bloc is high and k_bloc,rest low (or negative).

    1. Discovery (``_bloc_split``): the workers whose covariances are significantly non-zero (Wald test,
       p < ``alpha``) with effective overlap >= ``min_overlap`` are split in two by a two-block model of
       the observed agreement matrix (``_block_fit``: least squares, weights n - 1, missing pairs left
       out), started from the leading eigenvectors (residual after the one-coin fit, the one-coin signs,
       and spectral clustering of the agreement matrix on ``rank`` eigen-directions).  Spammers and thinly
       observed workers stay out.
    2. Evidence.  A split found on noise always looks like structure on the data that found it (honest
       sparse crowds measure rho ~ 0.3-0.8 in-sample), so the test is cross-fitted: the items are split at
       random into two halves, the split found on one half is scored by rho on the other and vice versa,
       and rho_hat (the mean of the two) gets a standard error from an item bootstrap of the scoring halves
       (``n_boot`` Poisson(1) replicates, ``_item_bootstrap_rho``): given the split, which the scoring
       half did not choose, the items of that half are the only randomness.  A bloc exists only if the
       97.5% bootstrap quantile of rho_hat is <= ``rho_max`` (default 0.75; a replicate in which a group
       does not agree within itself counts as +inf).  Honest synthetic crowds and CIFAR-10N / dog / face
       measure ~0.9-1.05 cross-fitted; a bloc of 30% of the workers giving the same wrong label on half of
       the items ~0.2-0.4, on a fifth ~0.7; the real Zheng product crowd (unbalanced, 3 answers per item)
       0.66-0.96 on its own, the one crowd near the threshold.
    3. Which side: the split of the whole data, keeping only the workers whom the half-data splits that
       assigned them put on the same side (a bloc is found again on either half; a split of noise is
       not).  The second opinion is MMSR: the group with the lower mean MMSR skill (``skills``, an array
       of length M, NaN ignored; :func:`mmsr_skills` when None) is the bloc, if it has at least
       ``min_size`` members.  MMSR is only as good as its breakdown point: it picks the wrong side as the
       bloc nears half of the crowd (synthetic crowds of 40 workers, 8 seeds: right in 31/31 detections
       for blocs of 20-30% of the workers, 11/16 at 40%; real crowds with a 40% bloc: honest workers
       flagged at rates 0.17-0.27 on CIFAR-10N, dog, duck, face_sentiment).  So by default (``side="both"``) MMSR's
       choice is flagged only when a third-order check agrees, ``_unanimity_jump``: the bloc is the group
       whose members agree with each other more on the items the two groups dispute than elsewhere
       (honest workers are independent given the truth; a bloc is unanimous on what it attacks).  That
       check is right where MMSR fails (47/47 synthetic detections, 40% included) but can fail on small
       blocs of sparse crowds, where MMSR is right; requiring both kept the false-positive rate at
       0-0.012 on every real crowd and bloc size measured but one (Zheng product with a 10% bloc: 0.051,
       from that crowd's own structure).  ``side="mmsr"`` is MMSR alone (the lower-skill group
       is flagged whenever a bloc is detected), ``side="unanimity"`` the check alone.  ``df.attrs``
       reports both choices.

    Returns a DataFrame indexed by worker code with ``group`` (side of the split 0/1, -1 unassigned),
    ``consistent`` (same side in the half-data splits), ``skill``, ``p_value`` (informativeness),
    ``overlap`` (effective co-labels), ``bloc`` (0 for the flagged bloc, -1 none) and ``colluder`` (bool).
    ``df.attrs``: ``rho`` (cross-fitted), ``rho_se`` (bootstrap IQR / 1.349), ``rho_upper`` (its 97.5%
    quantile), ``rho_full`` (in-sample, biased low), ``detected``, ``side_mmsr`` / ``side_unanimity`` (the
    group each rule would flag), ``group_mean_skill``, ``unanimity_jump``.
    """
    if side not in ("mmsr", "unanimity", "both"):
        raise ValueError(f"side must be mmsr, unanimity or both, got {side!r}")
    t, w, y, M = _check(tasks, workers, labels, n_classes, n_workers)
    rng = np.random.default_rng(random_state)
    T = int(t.max()) + 1 if len(t) else 0
    half = np.zeros(T, bool)
    half[rng.permutation(T)[: T // 2]] = True
    rhos, boots, splits = [], [], []
    for disc in (half, ~half):                       # discover on one half, score on the other
        d = disc[t]
        ps_d = pair_statistics(t[d], w[d], y[d], n_classes, n_workers=M, item_mix=False)
        g, _, _ = _bloc_split(ps_d, rank, alpha, min_overlap, random_state)
        ps_e = pair_statistics(t[~d], w[~d], y[~d], n_classes, n_workers=M, item_mix=False)
        rhos.append(_rho(_group_products(ps_e, g))[0])
        boots.append(_item_bootstrap_rho(ps_e, g, n_boot, rng))
        splits.append(g)
    rho_hat = float(np.mean(rhos))
    bs = (boots[0] + boots[1]) / 2
    bs = np.where(np.isfinite(bs), bs, np.inf)        # a replicate without a within-group agreement: no bloc
    # order statistics, no interpolation (replicates may be +inf)
    rho_upper = float(np.quantile(bs, 0.975, method="higher")) if len(bs) else np.inf
    q25, q75 = np.quantile(bs, [0.25, 0.75], method="higher") if len(bs) else (np.inf, np.inf)
    rho_se = float((q75 - q25) / 1.349) if np.isfinite(q75) else np.nan
    detected = bool(np.isfinite(rho_hat) and rho_upper <= rho_max)
    # the split of the whole data; a worker counts only if the halves that assigned it put it on the same
    # side (sides of a half matched to the whole by majority)
    ps = pair_statistics(t, w, y, n_classes, n_workers=M, item_mix=False)
    g, p, overlap = _bloc_split(ps, rank, alpha, min_overlap, random_state)
    consistent = g >= 0
    seen = np.zeros(M, bool)
    for gh in splits:
        both = (gh >= 0) & (g >= 0)
        if (gh[both] == g[both]).sum() < (gh[both] != g[both]).sum():
            gh = np.where(gh >= 0, 1 - gh, -1)
        consistent &= (gh < 0) | (gh == g)
        seen |= gh >= 0
    consistent &= seen
    if skills is None:
        skills = mmsr_skills(t, w, y, n_classes, random_state=random_state, n_workers=M)
    skills = np.asarray(skills, dtype=float)
    if len(skills) != M:
        raise ValueError(f"skills must have one entry per worker code ({M}), got {len(skills)}")
    mean_skill = [np.nanmean(skills[g == k]) if np.isfinite(skills[g == k]).any() else np.inf for k in (0, 1)]
    by_mmsr = int(np.argmin(mean_skill)) if (g >= 0).any() else -1
    jump = _unanimity_jump(t, w, y, n_classes, g) if (g >= 0).any() else np.full(2, np.nan)
    by_unanimity = int(np.nanargmax(jump)) if np.isfinite(jump).any() else -1
    choice = {"mmsr": by_mmsr, "unanimity": by_unanimity,
              "both": by_mmsr if by_mmsr == by_unanimity else -1}[side]
    bloc = np.full(M, -1)
    members = (g == choice) & consistent
    if detected and choice >= 0 and members.sum() >= min_size:
        bloc[members] = 0
    df = pd.DataFrame({"group": g, "consistent": consistent, "skill": skills, "p_value": p, "overlap": overlap,
                       "bloc": bloc, "colluder": bloc >= 0}, index=pd.RangeIndex(M, name="worker"))
    df.attrs.update(rho=rho_hat, rho_se=rho_se, rho_upper=rho_upper, rho_full=float(_rho(_group_products(ps, g))[0]),
                    detected=detected, side_mmsr=by_mmsr, side_unanimity=by_unanimity,
                    group_mean_skill=[float(x) for x in mean_skill], unanimity_jump=jump.tolist())
    return df


# --------------------------------------------------------------------------------------------------------
# MMSR skills (crowd-kit), the second opinion
# --------------------------------------------------------------------------------------------------------
def mmsr_skills(tasks, workers, labels, n_classes: int, random_state: int = 0, *,
                n_workers: int | None = None, method: str = "auto", n_iter: int = 10000) -> np.ndarray:
    """Per-worker skill from M-MSR (Ma & Olshevsky, NeurIPS 2020; crowd-kit ``MMSR``), an array of length M.

    One-coin model: with K classes and agreement rate a_mm', E[K/(K-1) a_mm' - 1/(K-1)] = s_m s_m'
    (s_m = (K p_m - 1) / (K - 1), p_m the accuracy).  M-MSR fits |.| ~ u v^T on the observed pairs by
    alternating trimmed means (dropping the F largest and smallest ratios, F = floor(min #partners / 2) - 1),
    which makes it robust to fewer than half adversarial workers, fixes the signs, clips, and returns the
    weight log((K-1) p_m / (1 - p_m)).  Workers without answers get NaN.

    ``method="crowdkit"`` runs ``crowdkit.aggregation.MMSR`` itself.  ``"port"`` runs the same iteration
    vectorised over workers: crowd-kit loops over workers in Python at every iteration and over all
    worker pairs x tasks to build its covariance (540 s and all-NaN skills on the 176-worker Zheng product
    crowd; out of reach on CIFAR-10N).  The port gives crowd-kit's numbers on crowds where both run, except
    that (i) a ratio whose divisor reached 0 is left out of the trimmed mean instead of turning it into
    inf/NaN, and (ii) signs come from the leading eigenvector of the overlap-weighted sign matrix (majority
    positive) instead of crowd-kit's graph construction, whose dense matrix has one row per agreeing pair.
    ``"auto"``: crowd-kit for crowds of at most 120 workers and 20,000 answers (0.4-4 s there), the port
    otherwise or when crowd-kit returns NaN.
    """
    t, w, y, M = _check(tasks, workers, labels, n_classes, n_workers)
    if method not in ("auto", "crowdkit", "port"):
        raise ValueError(f"method must be auto, crowdkit or port, got {method!r}")
    present = np.unique(w)
    if method == "crowdkit" or (method == "auto" and len(present) <= 120 and len(t) <= 20000):
        from crowdkit.aggregation import MMSR

        out = np.full(M, np.nan)
        data = pd.DataFrame({"task": t, "worker": w, "label": y})
        with np.errstate(all="ignore"):
            sk = MMSR(n_iter=n_iter, random_state=random_state).fit(data).skills_
        if sk is None:  # crowd-kit types it Optional; fit always sets it
            raise RuntimeError("crowd-kit's MMSR.fit left skills_ unset")
        out[sk.index.to_numpy(dtype=np.int64)] = sk.to_numpy(dtype=float)
        if method == "crowdkit" or np.isfinite(out[present]).all():
            return out
    return _mmsr_port(t, w, y, n_classes, M, random_state, n_iter)


def _mmsr_port(t, w, y, n_classes, M, random_state, n_iter, tol=1e-10) -> np.ndarray:
    """M-MSR as in crowd-kit 1.4.2 (``MMSR._m_msr``), vectorised over workers; see :func:`mmsr_skills`."""
    ps = pair_statistics(t, w, y, n_classes, n_workers=M)
    K = len(np.unique(y))                    # crowd-kit counts the labels present
    K = max(K, 2)
    T = len(np.unique(t))
    present = np.bincount(w, minlength=M) > 0
    obs = ps.n >= 1
    i, j = ps.m[obs], ps.mp[obs]
    cov = K / (K - 1) * ps.agree[obs] / ps.n[obs] - 1.0 / (K - 1)
    X = np.abs(cov)
    partners = np.bincount(i, minlength=M)
    F = int(np.floor(partners[present].min() / 2)) - 1 if present.any() else 0
    rng_u = np.random.RandomState(random_state)
    u = rng_u.uniform(size=M)
    v = np.random.RandomState(random_state).uniform(size=M)

    def trimmed(group, vals, cur):
        # crowd-kit's _remove_largest_and_smallest_F_value for every worker at once; a ratio with a zero
        # divisor (a partner whose estimate reached 0) is left out instead of turning the mean into inf/NaN
        ok = np.isfinite(vals)
        g, x = group[ok], vals[ok]
        o = np.lexsort((x, g))
        g, x = g[o], x[o]
        size = np.bincount(g, minlength=M)
        start = np.cumsum(size) - size
        rank = np.arange(len(g)) - start[g]
        below = np.bincount(g, weights=(x < cur[g]), minlength=M)
        if F > 0:
            keep = np.where(below[g] < F, x >= cur[g], rank >= F)
        else:
            keep = np.ones(len(g), bool)
        # among kept (a suffix of the sorted group), drop the top F unless fewer than F lie above cur
        above = np.bincount(g, weights=keep & (x > cur[g]), minlength=M)
        if F > 0:
            top = rank >= size[g] - F
            keep = keep & np.where(above[g] < F, x <= cur[g], ~top)
        cnt = np.bincount(g, weights=keep, minlength=M)
        tot = np.bincount(g, weights=np.where(keep, x, 0.0), minlength=M)
        new = cur.copy()
        has = cnt > 0
        new[has] = tot[has] / cnt[has]
        single_zero = (cnt == 1) & (tot == 0)
        new[single_zero] = 1 / np.sqrt(T)
        return new

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(n_iter):
            u_prev, v_prev = u.copy(), v.copy()
            v = trimmed(j, X / u[i], v)
            u = trimmed(i, X / v[j], u)
            if not (np.isfinite(u).all() and np.isfinite(v).all()):
                u, v = u_prev, v_prev           # diverged (untrimmed ratios of near-0 estimates): stop
                break
            loss2 = (u @ u) * (v @ v) - 2 * (u @ u_prev) * (v @ v_prev) + (u_prev @ u_prev) * (v_prev @ v_prev)
            if not np.isfinite(loss2) or np.sqrt(max(loss2, 0.0)) < tol:
                break
    k = np.sqrt(np.linalg.norm(u) / np.linalg.norm(v))
    x = u / k
    # signs: leading eigenvector of the overlap-weighted sign matrix, majority positive
    S = sp.csr_matrix((np.sign(cov) * ps.n[obs], (i, j)), shape=(M, M))
    sign = np.ones(M)
    if S.nnz and M > 2:
        from scipy.sparse.linalg import eigsh

        _, vec = eigsh(S.astype(float), k=1, which="LA", v0=np.ones(M) / np.sqrt(M))
        sign = np.sign(vec[:, 0])
        sign[sign == 0] = 1
        if np.sum(sign[present]) < 0:
            sign = -sign
    x = np.minimum(x * sign, 1 - 1.0 / np.sqrt(T))
    x = np.maximum(x, -1.0 / (K - 1) + 1.0 / np.sqrt(T))
    p = x * (K - 1) / K + 1.0 / K
    skill = np.log(p * (K - 1) / (1 - p))
    skill[~present] = np.nan
    return skill
