"""A cross-fitted witness: a classifier that never saw an item's label, testifying on that item.

With one label per item (k = 1) nobody else answers the item a labeler answered, so the only other evidence
is a model. F_{i-1}'s prediction at query time is a weak witness there: a margin-weighted query picks the items
it is least sure of (median top-class probability 0.55 on CIFAR-2), so on a 3-of-11 colluding bloc (half of
each colluder's labels wrong) the bloc ended below every honest labeler in 1 of 30 runs. The labeled set as a
whole, though, says a lot about each of its items. Cross-fitting (out-of-sample predicted probabilities, as
Confident Learning and CROWDLAB compute them, Northcutt et al. 2021, Goh et al. 2022):

    folds F_1..F_K of the labeled items (random, from the seed);  for each k:
        h_k = argmin_h  sum_{i not in F_k} CE(y_i, h(z_i)) + ||h||^2 / (2 c)       (L2 logistic regression)
        p_i = h_k(z_i)  for i in F_k                                                  (eq. W1)
    p_S  = (1/K) sum_k h_k(z_s)  on the secured set S                                 (eq. W2)

where y_i is the inferred label of item i and z_i its features. No item's label reaches the witness that
testifies on it. The witness's reliability is measured on S (whose labels no annotator gave) by confidence
band, counts[b, y, l] = #{s in S: band(max p_s) = b, y_s = y, argmax p_s = l}, exactly as F_{i-1}'s
testimony is (``robust_al.crowd.aggregate.confidence_band``), and enters Dawid-Skene as a worker with that
fixed confusion. Measured offline on 10 stored colluding runs (CIFAR-2 features, k = 1), each labeler's mean
agreement with this witness ranked the bloc under the honest labelers with AUC 0.80 / 0.89 / 0.95 / 0.99 after
100 / 200 / 300 / 500 labels (F_{i-1}'s testimony: the bloc under every honest labeler in 1 of 30 runs).

Features: the inputs themselves when they are vectors (precomputed features), else the model's embedding. A
trained embedding has seen every label, so its witness leans towards agreeing with everyone: weaker, never
biased against a labeler. A frozen trunk's embedding has seen none.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from robust_al.crowd.aggregate import band_confusion

C_REGULARIZATION = 0.1  # c of eq. W1 on standardized features (512-8192 dims, 20-2000 items)


def cross_fitted_testimony(Z: np.ndarray, y: np.ndarray, weight: np.ndarray, Z_S: np.ndarray, y_S: np.ndarray,
                           n_classes: int, rng: np.random.Generator, n_folds: int = 5
                           ) -> tuple[np.ndarray, np.ndarray] | None:
    """Eqs. W1-W2: out-of-fold class probabilities of the labeled items ``Z`` (labels ``y``, each training
    item weighted by ``weight``: 0 for an item nobody trusted vouches for), and the witness's confusion counts
    on S by confidence band, shape (bands, C, C). None when there is too little to fit (fewer than 2 items per
    fold, or a training fold with one class)."""
    from sklearn.linear_model import LogisticRegression

    n, C = len(Z), n_classes
    weight = np.asarray(weight, np.float64)
    K = min(n_folds, n // 2)
    if K < 2:
        return None
    Z = np.asarray(Z, np.float64).reshape(n, -1)
    Z_S = np.asarray(Z_S, np.float64).reshape(len(Z_S), -1)
    mu, sd = Z.mean(axis=0), Z.std(axis=0) + 1e-8
    Z, Z_S = (Z - mu) / sd, (Z_S - mu) / sd
    fold = rng.permutation(n) % K
    P, P_S = np.zeros((n, C)), np.zeros((len(Z_S), C))
    for k in range(K):
        train, fit = fold != k, (fold != k) & (weight > 0)
        classes = np.unique(y[fit])
        if len(classes) < 2:
            return None
        with warnings.catch_warnings():  # a fold that does not converge still testifies (and is measured on S)
            warnings.simplefilter("ignore")
            h = LogisticRegression(C=C_REGULARIZATION, max_iter=300).fit(Z[fit], y[fit], sample_weight=weight[fit])
        P[np.ix_(~train, classes)] = h.predict_proba(Z[~train])
        P_S[:, classes] += h.predict_proba(Z_S) / K
    return P, band_confusion(P_S, y_S, C)


def witness_outliers(labels: pd.DataFrame, testimony: pd.Series, alpha: float = 0.05, min_labels: int = 10
                     ) -> dict[str, str]:
    """Labelers who contradict the witness significantly more often than the crowd's typical labeler does.

    With d_w contradictions (label != the witness's argmax) in n_w labels, and r the median of d_v / n_v over
    the labelers with at least ``min_labels`` labels (the crowd's typical rate; a median, so a bloc of under
    half the crowd cannot move it; all labels pooled when fewer than 3 have that many):

        p_w = P(Binomial(n_w, r) >= d_w),   flagged when p_w < alpha / M   (Bonferroni over the M labelers)  (W3)

    The test is relative, so the witness's own error rate, which every labeler meets alike on randomly
    assigned items, cancels. A flag alone routes nobody: the ledger routes a flagged labeler only while its
    accuracy interval reaches under tau (:func:`robust_al.trust.model.safe_route`). Why a flag is needed:
    on CIFAR-2 under a 3-of-11 colluding bloc (k = 1, half of each colluder's labels flipped), after 500
    labels the bloc's trust was 0.25-0.51 against the honest labelers' 0.79-0.94, but their upper accuracy
    bounds (0.62-0.68) hovered at tau (0.66), so eq. 7 alone routed one or two of them. (Against the pooled
    rate of everyone else, a test loses power to the bloc itself: a colluder 45 % wrong went unflagged.)

    ``labels``: task, worker, label of the human answers; ``testimony``: the witness's label per task.
    """
    from scipy.stats import binom

    said = labels["task"].map(testimony)
    ok = said.notna().to_numpy()
    if ok.sum() == 0:
        return {}
    wrong = pd.Series((labels["label"].to_numpy()[ok] != said.to_numpy()[ok]).astype(int),
                      index=labels["worker"].to_numpy()[ok])
    d, n = wrong.groupby(level=0).sum(), wrong.groupby(level=0).size()
    busy = n >= min_labels
    r = float((d[busy] / n[busy]).median()) if busy.sum() >= 3 else float(d.sum() / n.sum())
    p = binom.sf(d.to_numpy() - 1, n.to_numpy(), min(max(r, 1e-3), 1 - 1e-3))
    return {str(w): "contradicts-witness" for w, pw in zip(n.index, p) if pw < alpha / len(n)}
