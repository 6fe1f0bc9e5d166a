"""Truth inference from crowd labels: crowd-kit's Dawid-Skene / majority vote, tempered by trust."""
from __future__ import annotations

import warnings
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from crowdkit.aggregation import DawidSkene, MajorityVote

MODEL_WORKER = "__model__"  # the model's out-of-sample prediction, entered as one more (fallible) worker


def _confusions(errors: pd.DataFrame, workers: list[str], n_classes: int, smooth: float) -> np.ndarray:
    """crowd-kit ``errors_`` ((worker, observed) x true) -> array [worker, true, observed], rows summing to 1."""
    pi = np.full((len(workers), n_classes, n_classes), smooth)
    index = {w: k for k, w in enumerate(workers)}
    for (w, observed), row in errors.iterrows():
        for true, p in row.items():
            if 0 <= int(true) < n_classes and 0 <= int(observed) < n_classes:
                pi[index[w], int(true), int(observed)] += float(p)
    return pi / pi.sum(axis=2, keepdims=True)


class TrustWeightedDS:
    """Dawid-Skene posteriors with each labeler's log-likelihood tempered by its trust.

    crowd-kit fits the per-worker confusion matrices pi_w and class priors rho (Dawid & Skene 1979; tutorial
    eq. for the DS model); the posterior over the true class of item i is then recomputed as
        log q_i(y) = log rho(y) + sum_{w labels i} t_w * log pi_w[y, l_wi] + const,
    so a labeler's vote counts in proportion to its trust t_w (t_w = 0 below the routing threshold: such
    labels are ignored). ``method='mv'`` uses crowd-kit's majority vote instead of DS (each vote weighted t_w).
    Fitted: ``posteriors_`` (DataFrame task x class), ``labels_`` (Series), ``confusions_`` (dict worker ->
    C x C, rows = true class), ``priors_``.
    """

    def __init__(self, n_classes: int, method: str = "ds", n_iter: int = 50, smooth: float = 0.01,
                 threshold: float = 0.0):
        if method not in ("ds", "mv"):
            raise ValueError(f"aggregation.method must be 'ds' or 'mv', got {method!r}")
        self.n_classes, self.method, self.n_iter = n_classes, method, n_iter
        self.smooth, self.threshold = smooth, threshold

    def fit(self, annotations: pd.DataFrame, trust: Callable[[str], float] | Mapping[str, float] | None = None
            ) -> "TrustWeightedDS":
        df = annotations[["task", "worker", "label"]].copy()
        df["label"] = df["label"].astype(int)
        if trust is None:
            t_of = lambda w: 1.0  # noqa: E731
        else:
            t_of = trust if callable(trust) else (lambda w: float(trust.get(w, 1.0)))  # type: ignore[union-attr]
        t = np.array([t_of(w) if w != MODEL_WORKER else 1.0 for w in df["worker"]], dtype=float)
        t = np.where(t < self.threshold, 0.0, t)
        tasks = np.array(sorted(df["task"].unique()))
        C = self.n_classes
        if len(df) == 0:
            self.posteriors_ = pd.DataFrame(np.zeros((0, C)), columns=range(C))
            self.labels_ = pd.Series(dtype=int)
            self.confusions_, self.priors_ = {}, np.full(C, 1.0 / C)
            return self
        task_pos = {k: i for i, k in enumerate(tasks)}
        rows = df["task"].map(task_pos).to_numpy()
        labels = df["label"].to_numpy()
        if self.method == "mv":
            logq = np.zeros((len(tasks), C))
            np.add.at(logq, (rows, labels), t)
            logq = np.where(logq.sum(1, keepdims=True) > 0, np.log(logq + 1e-3), 0.0)
            self.confusions_, self.priors_ = {}, np.full(C, 1.0 / C)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = DawidSkene(n_iter=self.n_iter).fit(df)
            workers = sorted(df["worker"].unique())
            pi = _confusions(ds.errors_, workers, C, self.smooth)
            prior = np.full(C, self.smooth)
            for c, p in ds.priors_.items():
                if 0 <= int(c) < C:
                    prior[int(c)] += float(p)
            self.priors_ = prior / prior.sum()
            self.confusions_ = {w: pi[k] for k, w in enumerate(workers)}
            wpos = df["worker"].map({w: k for k, w in enumerate(workers)}).to_numpy()
            logq = np.tile(np.log(self.priors_), (len(tasks), 1))
            # sum_w t_w * log pi_w[:, l_w] for each item
            np.add.at(logq, rows, t[:, None] * np.log(pi[wpos, :, labels]))
        self._fit_rows = (df, rows, labels, t, logq.copy(), None if self.method == "mv" else pi[wpos, :, labels])
        logq -= logq.max(axis=1, keepdims=True)
        q = np.exp(logq)
        q /= q.sum(axis=1, keepdims=True)
        self.posteriors_ = pd.DataFrame(q, index=pd.Index(tasks, name="task"), columns=range(C))
        self.labels_ = pd.Series(q.argmax(axis=1), index=self.posteriors_.index, name="label")
        return self

    def leave_one_out(self) -> pd.DataFrame:
        """For every fitted annotation, the posterior of item i from the *other* evidence on it (the other
        labelers and the model): columns task, worker, label, q0..q{C-1}, and ``agreement`` = q_{l_wi}. It
        measures a labeler without letting it vouch for itself, which matters when an item has one label."""
        df, rows, labels, t, logq, own = self._fit_rows
        if own is None:  # majority vote: remove the worker's own (trust-weighted) vote
            counts = np.exp(logq[rows]) - 1e-3
            counts[np.arange(len(rows)), labels] -= t
            p = np.clip(counts, 0, None) + 1e-3
        else:
            lq = logq[rows] - t[:, None] * np.log(own)
            p = np.exp(lq - lq.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out = df[["task", "worker", "label"]].reset_index(drop=True)
        out = pd.concat([out, pd.DataFrame(p, columns=[f"q{c}" for c in range(self.n_classes)])], axis=1)
        out["agreement"] = p[np.arange(len(rows)), labels]
        return out
