"""A labeler's accuracy as a posterior with a credible interval, from leave-one-out evidence.

The model (one-coin Dawid-Skene, scored against the *other* evidence on each item):

  Worker w answers item i correctly with probability p_w, else uniformly among the C - 1 other classes.
  The true class of i is unknown; q_i, the leave-one-out posterior of i (from the other labelers and the
  model, never from w itself), is our belief about it. Integrating the truth out,

      P(l_wi | q_i, p_w) = sum_y q_i(y) P(l_wi | y, p_w)
                         = p_w q_i(l) + (1 - p_w) (1 - q_i(l)) / (C - 1)          (eq. 1)
                         = b_i + a_i p_w,   a_i = q_i(l) - (1 - q_i(l))/(C - 1),  b_i = (1 - q_i(l))/(C - 1)

  and with a Beta(m0 n0, (1 - m0) n0) prior the posterior is

      log P(p_w | labels) = log Beta(p_w; m0 n0, (1 - m0) n0) + sum_i log(b_i + a_i p_w) + const.   (eq. 2)

  It is evaluated exactly on a grid of p (no conjugacy is needed, and none would hold: eq. 1 is a mixture).
  An item whose other evidence is flat (q_i = 1/C: nobody else saw it) has a_i = 0 and leaves the posterior
  unchanged, so a labeler is never judged by items nobody can check, and the interval narrows only with
  evidence. Trust is the posterior mean; the interval is the central ``level`` credible interval.

  Per class (a targeted attacker turns one class c_t into another: little overall accuracy lost, but
  pi_w[c_t, c_t] = 0): with p_{w,y} = P(l = y | truth y) and the other classes at the overall mean pbar,

      P(l | q, p_{w,y}) = q(y) [p_{w,y} 1(l=y) + (1 - p_{w,y}) 1(l!=y)/(C - 1)]
                          + sum_{c != y} q(c) [pbar 1(l=c) + (1 - pbar) 1(l!=c)/(C - 1)]        (eq. 3)

  again linear in p_{w,y}, with the same prior and grid.

  Trust, the point estimate, is the expected share of w's labels that are right,

      r_w = (1 / n_w) sum_i P(y_i = l_wi | all labels)                                           (eq. 4a)

  with the fitted model's posterior of each given label (its own confusion matrix counted; without one,
  eq. 1 inverted by Bayes with p_w = E[p_w]: q_i(l) p / (q_i(l) p + (1 - q_i(l)) (1 - p) / (C - 1))). It
  estimates exactly what "this labeler's accuracy" means on the labels it gave; E[p_w] (the posterior
  mean, shrunk to the crowd) and its interval speak of the labeler's next answers and drive routing.
  Measured on the clean real crowds, Spearman(trust, true accuracy) over workers with >= 10 labels: WSD
  0.435 -> 0.737 and LabelMe 0.547 -> 0.620 with r_w in place of E[p_w]; the others within +-0.02.
  A class counts against w only when it is confidently bad: trust_w = min(r_w, min_y upper_y(p_{w,y}))
  (eq. 4), so an honest labeler whose one class is noisy but plausible keeps its accuracy, while a
  labeler who always turns c_t into c'_t drops to the upper bound of pi_w[c_t, c_t].

  The prior mean m0 is the crowd's own (empirical Bayes, eq. 5): the median posterior mean, under a flat
  prior, of the labelers with at least ``min_labels`` labels (else ``initial``), so a quiet labeler is
  presumed typical of *this* crowd rather than 90 % right; busy and quiet labelers of equal accuracy then
  get equal trust (the old score shrank quiet labelers to 0.9 and ranked them above busy ones).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import betaln

GRID = np.linspace(0.001, 0.999, 250)  # p; interval ends are exact to 0.004
_CHUNK = 20_000  # rows of (label x grid) evaluated at once: 40 MB


def chance(n_classes: int) -> float:
    """Accuracy of a labeler who ignores the item (uniform guess)."""
    return 1.0 / max(n_classes, 1)


def _loglik_grid(a: np.ndarray, b: np.ndarray, rows: np.ndarray, n_rows: int, weight: np.ndarray | None = None
                 ) -> np.ndarray:
    """sum_i log(b_i + a_i g) per row group, for every grid point g: (n_rows, len(GRID))."""
    out = np.zeros((n_rows, len(GRID)))
    for s in range(0, len(rows), _CHUNK):
        sl = slice(s, s + _CHUNK)
        vals = np.log(np.clip(b[sl, None] + a[sl, None] * GRID[None, :], 1e-12, None))
        if weight is not None:
            vals *= weight[sl, None]
        r = rows[sl]
        M = sparse.csr_matrix((np.ones(len(r)), (r, np.arange(len(r)))), shape=(n_rows, len(r)))
        out += M @ vals
    return out


def _posterior_stats(loglik: np.ndarray, m0: float | np.ndarray, n0: float, level: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and central ``level`` interval of eq. 2's posterior on the grid, per row."""
    m0 = np.broadcast_to(np.asarray(m0, dtype=float), (loglik.shape[0],))
    a0, b0 = (m0 * n0)[:, None], ((1 - m0) * n0)[:, None]
    logp = loglik + (a0 - 1) * np.log(GRID) + (b0 - 1) * np.log1p(-GRID) - betaln(a0, b0)
    logp -= logp.max(axis=1, keepdims=True)
    w = np.exp(logp)
    w /= w.sum(axis=1, keepdims=True)
    mean = w @ GRID
    cdf = np.cumsum(w, axis=1)
    tail = (1 - level) / 2
    lo = GRID[np.minimum((cdf < tail).sum(axis=1), len(GRID) - 1)]
    hi = GRID[np.minimum((cdf < 1 - tail).sum(axis=1), len(GRID) - 1)]
    return mean, lo, hi


def worker_accuracy(loo: pd.DataFrame, n_classes: int, initial: float = 0.8, prior_strength: float = 4.0,
                    level: float = 0.9, min_labels: int = 10, extra_failures: pd.Series | None = None
                    ) -> pd.DataFrame:
    """Posterior accuracy of every labeler in ``loo`` (columns worker, label, q0..q{C-1}; see
    ``TrustWeightedDS.leave_one_out``), by eqs. 1-5 of this module.

    ``extra_failures``: per worker, evidence from outside the agreement (the secured check's cuts, Fig. 3 of
    the robust-active-learning paper), in labels' worth of wrong answers: it multiplies the likelihood by
    (1 - p)^f. ``loo`` may carry ``correct`` (P(y_i = l_wi | all labels), eq. 4a). Returns, indexed by
    worker: ``trust`` (eq. 4), ``accuracy`` (posterior mean of p_w),
    ``lower``/``upper`` (its interval), ``worst_class`` and ``class_upper`` (the class with the lowest upper
    bound of p_{w,y}, and that bound), ``n`` (labels), ``prior`` (m0 of eq. 5).
    """
    C = n_classes
    cols = ["trust", "accuracy", "lower", "upper", "worst_class", "class_upper", "n", "prior"]
    if len(loo) == 0:
        return pd.DataFrame(columns=cols).rename_axis("worker")
    Q = np.clip(loo[[f"q{c}" for c in range(C)]].to_numpy(dtype=float), 0.0, 1.0)
    lab = loo["label"].to_numpy().astype(np.int64)
    codes, workers = pd.factorize(loo["worker"], sort=True)
    M, n = len(workers), len(lab)
    counts = np.bincount(codes, minlength=M)
    ql = Q[np.arange(n), lab]
    other = 1.0 / max(C - 1, 1)
    a, b = ql - (1 - ql) * other, (1 - ql) * other
    ll = _loglik_grid(a, b, codes, M)
    if extra_failures is not None:
        f = extra_failures.reindex(workers).fillna(0.0).to_numpy(dtype=float)
        ll = ll + f[:, None] * np.log1p(-GRID)[None, :]
    # eq. 5: the crowd's typical accuracy, from a flat prior
    flat, _, _ = _posterior_stats(ll, 0.5, 2.0, level)
    busy = counts >= min_labels
    m0 = float(np.median(flat[busy])) if busy.sum() >= 3 else initial
    m0 = float(np.clip(m0, chance(C) + 0.02, 0.98))
    acc, lo, hi = _posterior_stats(ll, m0, prior_strength, level)

    # eq. 3, every class at once: rows (worker, class)
    onehot = np.zeros((n, C))
    onehot[np.arange(n), lab] = 1.0
    pbar = acc[codes][:, None]
    rest = pbar * ql[:, None] * (1 - onehot) + (1 - pbar) * other * (1 - Q - (ql[:, None] * (1 - onehot)))
    ay = Q * (onehot - (1 - onehot) * other)
    by = Q * (1 - onehot) * other + rest
    keep = Q > 1e-3  # items that say nothing about class y leave p_{w,y} at its prior
    r, c = np.nonzero(keep)
    ll_c = _loglik_grid(ay[r, c], by[r, c], codes[r] * C + c, M * C)
    _, _, hi_c = _posterior_stats(ll_c, m0, prior_strength, level)
    hi_c = hi_c.reshape(M, C)
    worst = hi_c.argmin(axis=1)
    cls_hi = hi_c[np.arange(M), worst]
    if "correct" in loo:  # eq. 4a
        right = loo["correct"].to_numpy(dtype=float)
    else:
        p_hat = acc[codes]
        right = ql * p_hat / np.clip(ql * p_hat + (1 - ql) * (1 - p_hat) * other, 1e-12, None)
    # no pseudo-counts here: shrinking r_w toward the crowd (4 labels' worth, as eq. 2) ordered equally perfect
    # labelers by how much they said and took WSD's Spearman(trust, true accuracy) from 0.737 back to 0.446;
    # a newcomer's uncertainty is what its interval says, and routing reads the interval
    failures = 0.0 if extra_failures is None else f  # the cuts count as labels' worth of wrong answers here too
    realized = np.bincount(codes, weights=right, minlength=M) / np.maximum(counts + failures, 1)
    trust = np.minimum(realized, cls_hi)
    out = pd.DataFrame({"trust": trust, "accuracy": acc, "lower": lo, "upper": hi, "worst_class": worst,
                        "class_upper": cls_hi, "n": counts, "prior": m0},
                       index=pd.Index(workers, name="worker"))
    return out


def routing_threshold(n_classes: int, typical: float, relative: float = 0.5) -> float:
    """The accuracy under which a labeler helps less than it costs, relative to the crowd (eq. 6):

        tau = 1/C + relative * (m - 1/C),   m = the crowd's typical accuracy (eq. 5's m0)

    halfway between a labeler who guesses and a typical one by default. An absolute number means nothing
    across tasks: 0.5 is a coin on a binary task and five times chance on a 10-class one."""
    c = chance(n_classes)
    return float(c + relative * max(typical - c, 0.0))


def class_suspect(table: pd.DataFrame, threshold: float) -> pd.Series:
    """A labeler confidently worse on one class than on the whole and under tau there (eq. 8):
    ``class_upper`` < min(tau, ``lower``). A targeted attacker (one class always turned into another) is
    right elsewhere, so its overall interval sits high while that class's sits low; an honest but weak
    labeler's classes scatter around its overall accuracy, so tau alone would catch them on a class by
    chance (measured: an honest 44 %-accurate labeler had a class upper bound of 0.40 under tau = 0.44)."""
    return (table["class_upper"] < threshold) & (table["class_upper"] < table["lower"])


def safe_route(table: pd.DataFrame, threshold: float, flagged: set | None = None, min_kept: int = 1,
               max_share: float = 0.5) -> pd.Series:
    """Which labelers to route out (eq. 7): those whose interval lies wholly under ``threshold``
    (``upper`` < tau), those a class is suspect for (eq. 8), and those a detector flagged whose accuracy is
    not confidently above tau (``lower`` < tau).

    Safety: never more than ``max_share`` of the labelers, nor so many that fewer than ``min_kept`` remain
    (the queue must stay coverable); when the rule asks for more, the lowest-trust ones go first. A labeler
    whose interval reaches above tau is never routed out on agreement alone, however many labels it gave.
    """
    flagged = set(flagged or ())
    if table.empty:
        return pd.Series(dtype=bool)
    by_interval = (table["upper"] < threshold) | class_suspect(table, threshold)
    by_flag = table.index.isin(list(flagged)) & (table["lower"] < threshold).to_numpy()
    want = by_interval.to_numpy() | by_flag
    limit = max(0, min(int(np.floor(max_share * len(table))), len(table) - min_kept))
    routed = np.zeros(len(table), dtype=bool)
    order = np.argsort(table["trust"].to_numpy(), kind="stable")
    chosen = [k for k in order if want[k]][:limit]
    routed[chosen] = True
    return pd.Series(routed, index=table.index, name="routed")
