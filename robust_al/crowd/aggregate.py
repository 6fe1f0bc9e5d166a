"""Truth inference from crowd labels: Dawid-Skene with Dirichlet-smoothed confusions and labeler weights."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import sparse

MODEL_WORKER = "__model__"  # the model's out-of-sample prediction, entered as one more (fallible) worker
# The model testifies as one worker per confidence band, each with the confusion it has on S in that band: its
# accuracy on the uncertain items a margin-weighted query picks is far below its accuracy on S as a whole.
# With one S-wide confusion, CIFAR-2 under a 3-of-11 colluding bloc (k = 1, 30 reps) left the lowest honest
# labeler at trust 0.44 on average, below the bloc's 0.54 (the model was "right" where it guessed), and the bloc
# above the lowest honest one in 29/30 runs.
CONFIDENCE_BANDS = (0.4, 0.8)  # band edges on u = (p_max - 1/C) / (1 - 1/C): guessing, unsure, sure
N_CONFIDENCE_BANDS = len(CONFIDENCE_BANDS) + 1


def confidence_band(confidence: np.ndarray | float, n_classes: int) -> np.ndarray:
    """Band (0 .. len(CONFIDENCE_BANDS)) of a model's top-class probability, relative to chance."""
    c = 1.0 / max(n_classes, 2)
    u = (np.asarray(confidence, dtype=float) - c) / (1.0 - c)
    return np.searchsorted(np.asarray(CONFIDENCE_BANDS), u, side="right")


def band_confusion(proba: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """A witness's confusion counts on items of known class ``y`` by its confidence band:
    counts[b, y, l] = #{items in band b of true class y it called l}, shape (bands, C, C)."""
    counts = np.zeros((N_CONFIDENCE_BANDS, n_classes, n_classes))
    np.add.at(counts, (confidence_band(proba.max(axis=1), n_classes), np.asarray(y), proba.argmax(axis=1)), 1.0)
    return counts


def human_answers(annotations: pd.DataFrame) -> pd.DataFrame:
    """The rows of people: the model's testimony (worker ids starting with ``MODEL_WORKER``) left out."""
    return annotations[~annotations["worker"].astype(str).str.startswith(MODEL_WORKER)]


def model_worker(iteration: int, band: int) -> str:
    """Worker id of F_{iteration-1}'s testimony on items where its confidence fell in ``band``."""
    return f"{MODEL_WORKER}{int(iteration)}@{int(band)}"


def cross_fit_worker(band: int) -> str:
    """Worker id of the cross-fitted witness's testimony (:mod:`robust_al.trust.witness`) in ``band``."""
    return f"{MODEL_WORKER}xfit@{int(band)}"


def certainty(posteriors: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """How far each row's top class (or its ``labels``) stands above chance, (q(y) - 1/C) / (1 - 1/C), clipped
    to [0, 1]."""
    C = posteriors.shape[1]
    q = posteriors.max(axis=1) if labels is None else posteriors[np.arange(len(posteriors)), labels]
    return np.clip((q - 1.0 / C) / (1.0 - 1.0 / C), 0.0, 1.0)


def weight_function(weights: Callable[[str], float] | Mapping[str, float] | None) -> Callable[[str], float]:
    """A labeler's weight (or trust) as a function of its id: ``weights`` itself, a mapping's value (1 for a
    labeler it does not name), or 1 for everyone."""
    if weights is None:
        return lambda w: 1.0
    return weights if callable(weights) else (lambda w: float(weights.get(w, 1.0)))


def trusted_certainty(annotations: pd.DataFrame, labels: pd.Series, trust: Callable[[str], float],
                      n_classes: int) -> pd.Series:
    """How sure the labelers' trust makes each item's inferred label: the certainty (see :func:`certainty`) of
    ``labels`` under a one-coin model whose labeler w is right with probability a_w = trust(w) (eq. T1):

        log p_i(y) = sum_{w labels i} [l_wi = y] log a_w + [l_wi != y] log((1 - a_w) / (C - 1)) + const,
        weight_i = max(0, (p_i(labels_i) - 1/C) / (1 - 1/C)),

    a_w clipped to [1/C, 0.999] (a labeler under chance is no evidence, not evidence for the other classes).
    With one label per item, Dawid-Skene cannot learn a labeler's confusion (its posterior is as sure for a
    colluder's item as for an honest one's); the trust estimate, measured against other evidence, can. Only
    people's answers count (the model's testimony is left out); an item nobody answered has weight 0."""
    C = n_classes
    human = human_answers(annotations)
    of = {w: float(trust(w)) for w in human["worker"].unique()}
    a = np.clip(human["worker"].map(of).to_numpy(dtype=float), 1.0 / C, 0.999)
    tasks, rows = np.unique(human["task"].to_numpy(), return_inverse=True)
    # sum_w log((1 - a_w)/(C - 1)) is the same for every y and cancels: only the answered class gets a term
    logp = np.zeros((len(tasks), C))
    np.add.at(logp, (rows, human["label"].to_numpy(dtype=int)), np.log(a) - np.log((1 - a) / max(C - 1, 1)))
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    out = pd.Series(0.0, index=labels.index, dtype=float)
    known = labels.index.isin(tasks)
    pos = np.searchsorted(tasks, labels.index[known].to_numpy())
    out[known] = certainty(p[pos], labels[known].to_numpy(dtype=int))
    return out


class TrustWeightedDS:
    """Dawid & Skene (1979) EM where each labeler's likelihood is raised to a weight t_w in [0, 1].

    E-step:  log q_i(y) = log rho(y) + sum_{w labels i} t_w * log pi_w[y, l_wi] + const
    M-step:  pi_w[y, l] = (sum_{i: l_wi = l} q_i(y) + alpha * P0[y, l]) / (sum_i q_i(y) + alpha),
             rho(y) = (sum_i q_i(y) + beta * n / C) / ((1 + beta) * n)
    with P0 = ``prior_diag`` on the diagonal and the rest spread evenly: a Dirichlet prior worth ``alpha``
    labels per row. Without it (crowd-kit's DawidSkene), a row of a true class the worker never saw is
    filled with the worker's label marginals, which on sparse crowds (one label per item, as in replayed
    LabelMe) flips confident single labels to the majority class: measured 0.72 -> 0.56 label accuracy on
    50 LabelMe items. With alpha = 2 the EM still drifts there (0.12); alpha = 5, P0 diagonal 0.7 keeps
    0.72 on those 50 items and gives 0.79 on all of LabelMe (MV 0.769). The class prior rho is shrunk halfway
    to uniform (beta = ``rho_strength`` = 1 times the share of items with one human label, a symmetric
    Dirichlet worth beta n items): with one label per item
    rho and the confusions feed each other, and on 100 CIFAR-2 items labeled once (60% "frog") the plain
    M-step drifted to "frog" for every item within 30 EM steps (label accuracy 0.96 raw -> 0.5); with the
    prior it stays at the raw labels, and one-label-per-item LabelMe goes 0.757 -> 0.77 (= raw). Initialization: a
    majority vote, each vote weighted by t_w (the numbers of crowd-kit's MajorityVote with skills = t_w).
    The campaign sets t_w = 1 for labelers at or above the trust threshold and ``untrusted_weight`` (default
    0: ignored) under it. (Tempering every label by the trust value itself was measured to hurt: on a replayed
    LabelMe campaign with mostly one label per item it let the class prior override single labels, 0.72 -> 0.48.)
    ``method='mv'`` stops after the weighted majority vote.
    Speed: ids are factorized once and the EM runs on integer codes (a sparse item x (worker, answer) matrix
    makes each step one product). ``pipelines/bench_aggregate.py``, string ids, 5 answers per item, 4 classes,
    fit time vs crowd-kit's DawidSkene(n_iter=100) in the same run (2 shared cores): 10k answers 0.04 s vs
    0.92 s (ratio 0.05), 100k 0.36 s vs 4.2 s (0.09), 1M 5.2 s vs 48 s (0.11), the Zheng product crowd (24,945
    answers) 0.065 s vs 6.5 s (0.01). Before (dict maps and ``isin`` on the string ids, ``np.add.at``,
    crowd-kit's MajorityVote for the start): 10k 0.27, 100k 0.65, product 0.12 of crowd-kit's time; the
    bincount vote is ~100x faster than MajorityVote at 100k answers (0.0025 s vs 0.26 s).
    Fitted: ``posteriors_`` (DataFrame task x class), ``labels_``, ``confusions_`` (worker -> C x C, rows =
    true class), ``priors_``.
    """

    # what leave_one_out needs from the last fit: (annotations, row codes, labels, t_w per answer, log posteriors,
    # each answer's pi_w[:, l] or None after a majority vote); None after a fit on no answers
    _fit_rows: tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None

    def __init__(self, n_classes: int, method: str = "ds", n_iter: int = 30, alpha: float = 5.0,
                 prior_diag: float = 0.7, tol: float = 1e-5, rho_strength: float = 1.0):
        if method not in ("ds", "mv"):
            raise ValueError(f"aggregation.method must be 'ds' or 'mv', got {method!r}")
        self.n_classes, self.method, self.n_iter = n_classes, method, n_iter
        self.alpha, self.prior_diag, self.tol, self.rho_strength = alpha, prior_diag, tol, rho_strength

    def fit(self, annotations: pd.DataFrame, weights: Callable[[str], float] | Mapping[str, float] | None = None,
            known_counts: Mapping[str, np.ndarray] | None = None) -> TrustWeightedDS:
        """``known_counts``: for workers whose confusion was measured on trusted data (the model's on the
        secured set S), counts true x answered; their pi is that (Dirichlet-smoothed) and never re-estimated,
        so a confident but poor model cannot talk the EM into believing it (Laplace-smoothed, no
        diagonal prior: the model is as good as it measured)."""
        C = self.n_classes
        df = annotations[["task", "worker", "label"]].reset_index(drop=True)
        df["label"] = df["label"].astype(int)
        t_of = weight_function(weights)
        known = dict(known_counts or {})
        # ids are encoded once to dense codes (sorted, as before); everything after works on the codes. Mapping
        # string ids through dicts and ``isin`` cost 3 of 7 s on a 92,721-label crowd with string ids
        rows, tasks = _codes(df["task"], "task")
        wpos, workers = _codes(df["worker"], "worker")
        labels = df["label"].to_numpy()
        T, M = len(tasks), len(workers)
        is_model = np.array([str(w).startswith(MODEL_WORKER) for w in workers], dtype=bool)
        t_w = np.array([1.0 if w in known or m else t_of(w) for w, m in zip(workers, is_model)], dtype=float)
        t = t_w[wpos]
        self._fit_rows = None
        if len(df) == 0:
            self.posteriors_ = pd.DataFrame(np.zeros((0, C)), columns=range(C))
            self.labels_ = pd.Series(dtype=int)
            self.confusions_, self.priors_ = {}, np.full(C, 1.0 / C)
            return self

        # start from the human vote: seeded with the model's vote as a tie-breaker, the EM (humans' confusions
        # free, the model's fixed) slid to the fixed point where humans are as bad as the model: CIFAR-2, k = 1,
        # 500 labels 95.4% right -> 83.8% after inference; from the human vote it stays at the human labels
        human = ~is_model[wpos]
        has_human = np.bincount(rows[human], minlength=T)[rows] > 0
        init = human | ~has_human
        q = self._weighted_vote(rows[init], labels[init], np.maximum(t[init], 1e-6), T)
        P0 = np.full((C, C), (1 - self.prior_diag) / max(C - 1, 1))
        np.fill_diagonal(P0, self.prior_diag)
        pi = np.tile(P0, (M, 1, 1))
        fixed = np.array([w in known for w in workers], dtype=bool)
        for k, w in enumerate(workers):
            if w in known:
                pi[k] = (known[w] + 1.0) / (known[w].sum(axis=1, keepdims=True) + C)
        pi_fixed = pi[fixed].copy()
        rho = np.full(C, 1.0 / C)
        # the class prior's shrinkage guards the one-label-per-item case only: beta = rho_strength x the share of
        # items with at most one human label. Shrinking always cost a skewed, redundant crowd dearly (Zheng
        # product, 88 % one class, 3 labels per item: 0.873 label accuracy vs 0.937 unshrunk, crowd-kit DS 0.940)
        n_human = np.bincount(rows[human], minlength=T)
        beta = self.rho_strength * float(np.mean(n_human <= 1))
        logq = np.log(np.clip(q, 1e-12, None))
        # A[i, w*C + l] = number of times worker w answered l on item i: both EM steps are one sparse product
        # (np.add.at over the rows was half of the fit's time)
        A = sparse.csr_matrix((np.ones(len(rows)), (rows, wpos * C + labels)), shape=(T, M * C))
        At = A.T.tocsr()
        for _ in range(self.n_iter if self.method == "ds" else 0):
            # M-step: counts[w, y, l] = sum_{i: l_wi = l} q_i(y)
            counts = np.asarray(At @ q).reshape(M, C, C).transpose(0, 2, 1)
            pi = (counts + self.alpha * P0) / (counts.sum(axis=2, keepdims=True) + self.alpha)
            pi[fixed] = pi_fixed
            rho = (q.sum(axis=0) + beta * T / C) / (T * (1 + beta))
            # E-step: log q_i(y) = log rho(y) + sum_{w labels i} t_w log pi_w[y, l_wi]
            K = (t_w[:, None, None] * np.log(pi)).transpose(0, 2, 1).reshape(M * C, C)  # [w*C + l, y]
            logq = np.log(rho)[None, :] + np.asarray(A @ K)
            new = np.exp(logq - logq.max(axis=1, keepdims=True))
            new /= new.sum(axis=1, keepdims=True)
            done = np.abs(new - q).max() < self.tol
            q = new
            if done:
                break
        self.confusions_ = {w: pi[k] for k, w in enumerate(workers)}
        self.priors_ = rho
        own = None if self.method == "mv" else pi[wpos, :, labels]
        self._fit_rows = (df, rows, labels, t, np.log(np.clip(q, 1e-300, None)) if own is None else logq, own)
        self.posteriors_ = pd.DataFrame(q, index=pd.Index(tasks, name="task"), columns=range(C))
        self.labels_ = pd.Series(q.argmax(axis=1), index=self.posteriors_.index, name="label")
        return self

    def _weighted_vote(self, rows: np.ndarray, labels: np.ndarray, w: np.ndarray, T: int) -> np.ndarray:
        """Weighted majority vote (what crowd-kit's MajorityVote with skills = weights gives, by bincount: same
        numbers, ~100x faster), as C columns."""
        C = self.n_classes
        votes = np.bincount(rows * C + labels, weights=w, minlength=T * C).reshape(T, C)
        total = votes.sum(axis=1, keepdims=True)
        probas = np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)
        probas = probas + 1e-3  # keep every class possible for the EM
        return probas / probas.sum(axis=1, keepdims=True)

    def leave_one_out(self) -> pd.DataFrame:
        """For every fitted annotation, the posterior of item i from the *other* evidence on it (the other
        labelers and the model): columns task, worker, label, q0..q{C-1}, and ``agreement`` = q_{l_wi}. It
        measures a labeler without letting it vouch for itself, which matters when an item has one label.
        ``correct`` is the fitted posterior of the given label, P(y_i = l_wi | all labels): the chance that
        this answer is right, with the labeler's own confusion matrix counted."""
        if self._fit_rows is None:
            raise ValueError("leave_one_out needs a fit on at least one annotation")
        df, rows, labels, t, logq, own = self._fit_rows
        if own is None:  # majority vote: remove the worker's own (weighted) vote
            counts = np.exp(logq[rows]) * 0 + self._vote_counts(rows, labels, t)
            counts[np.arange(len(rows)), labels] -= t
            p = np.clip(counts, 0, None) + 1e-3
        else:
            lq = logq[rows] - t[:, None] * np.log(own)
            p = np.exp(lq - lq.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out = df[["task", "worker", "label"]].reset_index(drop=True)
        out = pd.concat([out, pd.DataFrame(p, columns=[f"q{c}" for c in range(self.n_classes)])], axis=1)
        out["agreement"] = p[np.arange(len(rows)), labels]
        # the same item with the labeler's own answer counted (the fitted posterior): P(y_i = l_wi | all labels)
        full = np.exp(logq[rows] - logq[rows].max(axis=1, keepdims=True))
        out["correct"] = full[np.arange(len(rows)), labels] / full.sum(axis=1)
        return out

    def _vote_counts(self, rows: np.ndarray, labels: np.ndarray, t: np.ndarray) -> np.ndarray:
        C = self.n_classes
        return np.bincount(rows * C + labels, weights=t, minlength=(rows.max() + 1) * C).reshape(-1, C)[rows]


def _codes(ids: pd.Series, what: str) -> tuple[np.ndarray, list]:
    """Dense codes 0..n-1 of ``ids`` and the sorted distinct ids (code k is ``uniques[k]``)."""
    codes, uniques = pd.factorize(ids, sort=True)
    if len(codes) and codes.min() < 0:
        raise ValueError(f"annotations: {what} id missing (NaN/None) on row {int(np.flatnonzero(codes < 0)[0])}")
    return codes.astype(np.int64), list(uniques)
