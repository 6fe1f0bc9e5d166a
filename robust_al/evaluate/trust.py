"""Does trust find the bad workers of a real crowd? Simulated adversaries injected into a recorded crowd, and metrics.

Injection (:func:`inject_adversaries`) adds ``n_adv = round(f / (1 - f) * M)`` simulated workers to a crowd of
``M`` real workers, so that the adversaries are a fraction ``f`` of *all* workers (``f = 0.2`` with 100 real
workers adds 25: 25 / 125 = 0.2).  Each labels as many items as a typical real worker (``k`` = the median number
of labels per real worker, rounded, at most the number of items), items drawn without replacement from all the
crowd's items by a seeded generator.  Kinds:

* ``spammer``: a uniformly random class per item.
* ``flipper`` (targeted): every item of the ``target`` class is labeled ``to``; on the other items the
  flipper is an ordinary worker, right with probability ``honest_accuracy`` = the median true accuracy of the
  real workers (over workers with >= 10 labels on items of known truth, all workers if none has), and
  otherwise a uniformly random other class.  Defaults: ``target`` = the most frequent true class, ``to`` = the
  second most frequent.
* ``bloc`` (colluding): all members label items of one shared pool of ``ceil(bloc_pool * k)`` items (default
  ``bloc_pool`` 1.5, so two members share about 2/3 of their items) and give every pool item the SAME wrong
  class, drawn once per item from the shared generator (uniform among the classes other than the truth).
  Members therefore agree with each other on every shared item.

Adversaries need to know the truth to flip it: where the truth is unknown (-1) they take the real crowd's
majority vote (ties: lowest class) as the truth.  Injected workers get the codes after the largest real worker
code (integer worker ids) or ``"adv<i>"`` (string ids).

Metrics:

* :func:`label_accuracy`: aggregated labels vs truth over tasks with a known truth; a task without a label
  counts as wrong.
* :func:`worker_accuracy`: each worker's true accuracy over its labels on items of known truth.
* :func:`trust_spearman`: Spearman rank correlation of a method's trust and the workers' true accuracy over the
  workers with >= ``min_labels`` (10) labels of known truth.  On a clean crowd these are real workers only; with
  injected adversaries the evaluation passes every worker, adversaries included (they are workers whose true
  accuracy the trust should rank too); ``workers=`` restricts it.
* :func:`adversary_auc`: ROC AUC of "injected vs real" scored by *minus* the trust (lower trust = more
  adversarial; 1.0 = every adversary below every real worker), :func:`sklearn.metrics.roc_auc_score`.

Baselines (:func:`fit_baseline`, crowd-kit 1.4): ``mv`` (trust = agreement with the majority vote), ``ds``
(Dawid-Skene; trust = expected accuracy sum_c prior_c * P(label c | true c)), ``glad`` (trust = ability
alpha), ``mmsr`` (trust = its skill).  :func:`fit_robust_al` runs
``robust_al.trust.assess.assess_crowd`` (trust = its ``workers.trust``).
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ADVERSARY_KINDS = ("spammer", "flipper", "bloc")
BASELINES = ("mv", "ds", "glad", "mmsr")
MIN_LABELS = 10

__all__ = ["ADVERSARY_KINDS", "BASELINES", "CLEAN", "METHODS", "ROBUST_AL", "Check", "Injection", "MethodTimeout",
           "acceptance_checks", "adversary_auc", "evaluate_crowd", "fit_baseline", "fit_robust_al",
           "inject_adversaries", "injection_seed", "label_accuracy", "markdown", "mean_table", "n_adversaries",
           "time_limit", "trust_spearman", "worker_accuracy"]


# --------------------------------------------------------------------------------------------------------------
# injection
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Injection:
    """A crowd with injected adversaries: the combined table and what was injected."""

    annotations: pd.DataFrame  # real rows first, then the injected ones (task, worker, label)
    adversaries: np.ndarray    # worker ids of the injected workers
    kind: str
    fraction: float            # requested fraction of all workers
    n_real: int                # real workers
    labels_per_adversary: int  # k: the median labels per real worker (capped at the number of items)
    target: int | None = None  # flipper: the class always mislabeled ...
    to: int | None = None      # ... as this class
    honest_accuracy: float | None = None  # flipper: accuracy off the target class
    pool: np.ndarray | None = None        # bloc: the shared items

    @property
    def realized_fraction(self) -> float:
        n = len(self.adversaries)
        return n / (n + self.n_real) if n + self.n_real else 0.0


def n_adversaries(fraction: float, n_real: int) -> int:
    """Workers to add so that they are ``fraction`` of all workers: ``round(f / (1 - f) * n_real)``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"adversary fraction must be in [0, 1), got {fraction}")
    return int(round(fraction / (1.0 - fraction) * n_real))


def _truth_array(truth, n_tasks: int | None = None) -> pd.Series:
    """Truth as a Series indexed by task (-1 = unknown); an array is indexed by position = task code."""
    if isinstance(truth, pd.Series):
        return truth.astype(np.int64)
    arr = np.asarray(truth, dtype=np.int64)
    return pd.Series(arr, index=np.arange(len(arr)))


def _majority(annotations: pd.DataFrame, n_classes: int) -> pd.Series:
    counts = pd.crosstab(annotations["task"], annotations["label"]).reindex(columns=range(n_classes), fill_value=0)
    return pd.Series(np.argmax(counts.to_numpy(), axis=1), index=counts.index)


def _belief(annotations: pd.DataFrame, truth: pd.Series, n_classes: int, tasks: np.ndarray) -> np.ndarray:
    """The class an adversary takes for true, per task of ``tasks``: the truth, else the real majority vote."""
    t = truth.reindex(tasks).fillna(-1).to_numpy(dtype=np.int64, copy=True)
    unknown = t < 0
    if unknown.any():
        t[unknown] = _majority(annotations, n_classes).reindex(tasks[unknown]).fillna(0).to_numpy(dtype=np.int64)
    return t


def _other_class(rng: np.random.Generator, true: np.ndarray, n_classes: int) -> np.ndarray:
    """A uniformly random class different from ``true`` (elementwise)."""
    shift = rng.integers(1, n_classes, size=len(true))
    return (true + shift) % n_classes


def inject_adversaries(annotations: pd.DataFrame, truth, n_classes: int, kind: str, fraction: float,
                       seed: int | Sequence[int] = 0, *, target: int | None = None, to: int | None = None,
                       bloc_pool: float = 1.5) -> Injection:
    """Add simulated adversaries of ``kind`` (spammer, flipper, bloc) as ``fraction`` of all workers.

    ``annotations``: long table task, worker, label (label codes 0..n_classes-1); ``truth``: per task code
    (array) or a Series indexed by task, -1 = unknown.  ``seed``: anything ``numpy.random.default_rng`` takes;
    the same arguments give the same injection.  See the module docstring for the kinds.
    """
    if kind not in ADVERSARY_KINDS:
        raise ValueError(f"unknown adversary kind {kind!r}; valid: {', '.join(ADVERSARY_KINDS)}")
    if n_classes < 2:
        raise ValueError(f"adversaries need at least 2 classes, got {n_classes}")
    if bloc_pool < 1.0:
        raise ValueError(f"bloc_pool must be >= 1 (a pool of at least k items), got {bloc_pool}")
    ann = annotations[["task", "worker", "label"]].reset_index(drop=True)
    truth = _truth_array(truth)
    real_workers = pd.unique(ann["worker"])
    M = len(real_workers)
    n_adv = n_adversaries(fraction, M)
    tasks = np.sort(pd.unique(ann["task"]))
    per_worker = ann.groupby("worker").size()
    k = int(min(len(tasks), max(1, round(float(per_worker.median()))))) if M else 0
    rng = np.random.default_rng(seed)
    shared, own = rng.spawn(2)

    if pd.api.types.is_integer_dtype(ann["worker"]):
        start = int(ann["worker"].max()) + 1 if M else 0
        adv_ids: np.ndarray = np.arange(start, start + n_adv, dtype=np.int64)
    else:
        adv_ids = np.array([f"adv{i}" for i in range(n_adv)], dtype=object)
    inj = Injection(annotations=ann, adversaries=adv_ids, kind=kind, fraction=fraction, n_real=M,
                    labels_per_adversary=k)

    belief = _belief(ann, truth, n_classes, tasks)
    if kind == "flipper":
        freq = np.bincount(belief, minlength=n_classes)
        order = np.argsort(-freq, kind="stable")
        inj.target = int(order[0]) if target is None else int(target)
        inj.to = int(order[1] if order[0] == inj.target else order[0]) if to is None else int(to)
        if inj.target == inj.to or not (0 <= inj.target < n_classes and 0 <= inj.to < n_classes):
            raise ValueError(f"flipper target {inj.target} and to {inj.to} must be two different classes "
                             f"in 0..{n_classes - 1}")
        acc = worker_accuracy(ann, truth)
        ok = acc[acc["n"] >= MIN_LABELS]
        ok = ok if len(ok) else acc[acc["n"] > 0]
        inj.honest_accuracy = float(ok["accuracy"].median()) if len(ok) else 1.0 / n_classes
    if kind == "bloc":
        size = min(len(tasks), math.ceil(bloc_pool * k))
        pool_pos = np.sort(shared.choice(len(tasks), size=size, replace=False))
        inj.pool = tasks[pool_pos]
        wrong = np.full(len(tasks), -1, dtype=np.int64)
        wrong[pool_pos] = _other_class(shared, belief[pool_pos], n_classes)

    frames = []
    for w in adv_ids:
        if kind == "bloc":
            pos = own.choice(pool_pos, size=k, replace=False)
            lab = wrong[pos]
        else:
            pos = own.choice(len(tasks), size=k, replace=False)
            if kind == "spammer":
                lab = own.integers(0, n_classes, size=k)
            else:  # flipper
                right = own.random(k) < inj.honest_accuracy
                lab = np.where(right, belief[pos], _other_class(own, belief[pos], n_classes))
                lab = np.where(belief[pos] == inj.target, inj.to, lab)
        frames.append(pd.DataFrame({"task": tasks[pos], "worker": np.full(k, w, dtype=adv_ids.dtype),
                                    "label": lab.astype(np.int64)}))
    if frames:
        added = pd.concat(frames, ignore_index=True).astype({"task": ann["task"].dtype})
        inj.annotations = pd.concat([ann, added], ignore_index=True)
    return inj


# --------------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------------
def label_accuracy(labels: pd.Series, truth) -> float:
    """Share of tasks with a known truth whose label (``labels``: task -> class) is the truth; a task without
    a label counts as wrong.  NaN when no task has a known truth."""
    truth = _truth_array(truth)
    truth = truth[truth >= 0]
    if not len(truth):
        return math.nan
    got = pd.Series(labels).reindex(truth.index)
    return float((got.to_numpy() == truth.to_numpy()).mean())


def worker_accuracy(annotations: pd.DataFrame, truth) -> pd.DataFrame:
    """Per worker: ``n`` labels on items of known truth, ``correct``, ``accuracy`` (NaN where n = 0)."""
    truth = _truth_array(truth)
    t = truth.reindex(annotations["task"].to_numpy()).fillna(-1).to_numpy(dtype=np.int64)
    known = t >= 0
    df = pd.DataFrame({"worker": annotations["worker"].to_numpy(), "known": known,
                       "correct": known & (annotations["label"].to_numpy() == t)})
    g = df.groupby("worker", sort=True)
    out = pd.DataFrame({"n": g["known"].sum().astype(np.int64), "correct": g["correct"].sum().astype(np.int64)})
    out["accuracy"] = out["correct"] / out["n"].where(out["n"] > 0)
    return out


def trust_spearman(trust: pd.Series, annotations: pd.DataFrame, truth, min_labels: int = MIN_LABELS,
                   workers: Iterable | None = None) -> tuple[float, int]:
    """Spearman rho of ``trust`` (worker -> value) and true accuracy over the workers with >= ``min_labels``
    labels of known truth (and in ``workers`` if given) that have a trust value; and how many such workers.

    rho is NaN with fewer than 3 workers or when trust or accuracy is constant over them."""
    from scipy.stats import spearmanr

    acc = worker_accuracy(annotations, truth)
    acc = acc[acc["n"] >= min_labels]
    if workers is not None:
        acc = acc[acc.index.isin(list(workers))]
    t = pd.Series(trust, dtype=float).reindex(acc.index)
    keep = t.notna().to_numpy()
    n = int(keep.sum())
    a, t = acc["accuracy"].to_numpy()[keep], t.to_numpy()[keep]
    if n < 3 or np.ptp(a) == 0 or np.ptp(t) == 0:
        return math.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(t, a).statistic), n


def adversary_auc(trust: pd.Series, adversaries: Iterable) -> float:
    """ROC AUC of adversaries vs the other workers of ``trust``, scored by -trust (lower trust = adversary).

    Workers without a trust value (NaN) are left out; NaN when either group is empty."""
    from sklearn.metrics import roc_auc_score

    t = pd.Series(trust, dtype=float).dropna()
    is_adv = t.index.isin(list(adversaries))
    if is_adv.all() or not is_adv.any():
        return math.nan
    return float(roc_auc_score(is_adv, -t.to_numpy()))


# --------------------------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------------------------
class MethodTimeout(BaseException):
    """A fit ran past its time limit.  A BaseException, so that no ``except Exception`` inside a library
    (scipy's optimizer, pandas) swallows it and carries on."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`MethodTimeout` in the block once it has used ``seconds`` of this process's CPU time.

    CPU time (``ITIMER_PROF`` / ``SIGPROF``: Unix, main thread only), not wall time, so that a limit means the
    same on a loaded shared box and on an idle one (the pipelines run one BLAS thread per process, where CPU
    time ~ wall time when the machine is not oversubscribed).  ``None`` / ``0`` = no limit.  Elsewhere (another
    thread, no SIGPROF) the block runs without a limit and a ``RuntimeWarning`` says so."""
    if not seconds:
        yield
        return
    if not hasattr(signal, "SIGPROF") or threading.current_thread() is not threading.main_thread():
        # stacklevel 3: past this generator and contextlib's __enter__, to the caller's `with` line
        warnings.warn("time_limit needs SIGPROF in the main thread; running without a limit", RuntimeWarning,
                      stacklevel=3)
        yield
        return

    def _raise(signum, frame):
        raise MethodTimeout(f"ran past {seconds:g} CPU s")

    old = signal.signal(signal.SIGPROF, _raise)
    signal.setitimer(signal.ITIMER_PROF, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def _ds_trust(model) -> pd.Series:
    """Expected accuracy of each worker under crowd-kit's Dawid-Skene: sum_c prior_c * P(label c | true c)."""
    err = model.errors_  # index (worker, observed label), columns true label
    priors = model.priors_
    out = {}
    for w, block in err.groupby(level="worker", sort=False):
        m = block.droplevel("worker")
        out[w] = float(sum(priors.get(c, 0.0) * (m.at[c, c] if c in m.index and c in m.columns else 0.0)
                           for c in priors.index))
    return pd.Series(out, dtype=float)


def fit_baseline(method: str, annotations: pd.DataFrame, n_classes: int, random_state: int = 0,
                 timeout: float | None = None) -> tuple[pd.Series, pd.Series, float]:
    """Fit a crowd-kit baseline; returns (labels: task -> class, trust: worker -> score, seconds).

    ``timeout`` (CPU seconds, None = none): :class:`MethodTimeout` if the fit runs longer (see :func:`time_limit`).
    """
    from crowdkit.aggregation import GLAD, MMSR, DawidSkene, MajorityVote

    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; valid: {', '.join(BASELINES)}")
    data = annotations[["task", "worker", "label"]]
    t0 = time.perf_counter()
    with warnings.catch_warnings(), time_limit(timeout):
        warnings.simplefilter("ignore")
        if method == "mv":
            m = MajorityVote().fit(data)
            labels, trust = m.labels_, m.skills_
        elif method == "ds":
            m = DawidSkene(n_iter=100).fit(data)
            labels, trust = m.labels_, _ds_trust(m)
        elif method == "glad":
            m = GLAD(n_iter=100, silent=True).fit(data)
            labels, trust = m.labels_, m.alphas_
        else:
            m = MMSR(random_state=random_state)
            labels = m.fit_predict(data)
            trust = m.skills_
    seconds = time.perf_counter() - t0
    return pd.Series(labels).astype(np.int64), pd.Series(trust, dtype=float), seconds


def fit_robust_al(annotations: pd.DataFrame, n_classes: int, route: bool, method: str = "twds",
                  random_state: int = 0, timeout: float | None = None):
    """robust-al's :func:`robust_al.trust.assess.assess_crowd`; returns (labels, trust, seconds, assessment)."""
    from robust_al.trust.assess import assess_crowd

    t0 = time.perf_counter()
    with time_limit(timeout):
        res = assess_crowd(annotations[["task", "worker", "label"]], n_classes, method=method, route=route,
                           random_state=random_state)
    seconds = time.perf_counter() - t0
    return pd.Series(res.labels).astype(np.int64), res.workers["trust"].astype(float), seconds, res


# --------------------------------------------------------------------------------------------------------------
# one evaluation unit: a crowd, clean or with adversaries, every method
# --------------------------------------------------------------------------------------------------------------
ROBUST_AL = ("robust-al", "robust-al-route")  # assess_crowd without / with routing
METHODS = BASELINES + ROBUST_AL
CLEAN = "none"  # the kind of a clean (rate 0) unit


def injection_seed(seed: int, kind: str, rate: float) -> list[int]:
    """The generator seed of one (seed, kind, rate) injection: every cell of a grid draws its own adversaries."""
    return [int(seed), ADVERSARY_KINDS.index(kind), int(round(rate * 1000))]


def evaluate_crowd(crowd, kind: str, rate: float, seed: int, methods: Sequence[str] = METHODS,
                   timeouts: dict[str, float] | None = None, skip: dict[str, str] | None = None,
                   robust_al_method: str = "twds", min_labels: int = MIN_LABELS) -> list[dict]:
    """Every method on ``crowd`` (a :class:`robust_al.data.crowds.Crowd`), clean (``rate`` 0, ``kind``
    ``'none'``) or with ``kind`` adversaries as ``rate`` of all workers; one row per method.

    Row: crowd, kind, rate, seed, method, n_workers, n_adversaries, n_labels, label_accuracy, spearman (trust vs
    true accuracy, workers with >= ``min_labels`` labels, adversaries included), n_workers_ge10, auc (NaN on a
    clean crowd), seconds (wall time of the fit), cpu_seconds (its CPU time: what a loaded machine does not
    inflate), note (why a method has no figures: ``skipped: ...``,
    ``timeout: ...``, ``error: ...``).  ``timeouts``: CPU seconds per method (see :func:`time_limit`); ``skip``:
    method -> reason, not run.  Methods' ``random_state`` is ``seed``; the injection's is :func:`injection_seed`.
    """
    timeouts, skip = dict(timeouts or {}), dict(skip or {})
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; valid: {', '.join(METHODS)}")
    if rate > 0:
        inj = inject_adversaries(crowd.annotations, crowd.truth, crowd.n_classes, kind, rate,
                                 seed=injection_seed(seed, kind, rate))
        ann, adversaries = inj.annotations, inj.adversaries
    else:
        kind, ann, adversaries = CLEAN, crowd.annotations, np.zeros(0, dtype=np.int64)
    base = {"crowd": crowd.name, "kind": kind, "rate": float(rate), "seed": int(seed),
            "n_workers": int(ann["worker"].nunique()), "n_adversaries": len(adversaries), "n_labels": len(ann)}
    rows = []
    for m in methods:
        row = {**base, "method": m, "label_accuracy": math.nan, "spearman": math.nan, "n_workers_ge10": 0,
               "auc": math.nan, "seconds": math.nan, "cpu_seconds": math.nan, "note": ""}
        rows.append(row)
        if m in skip:
            row["note"] = f"skipped: {skip[m]}"
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            if m in BASELINES:
                labels, trust, row["seconds"] = fit_baseline(m, ann, crowd.n_classes, random_state=seed,
                                                             timeout=timeouts.get(m))
            else:
                labels, trust, row["seconds"], _ = fit_robust_al(ann, crowd.n_classes, route=m == "robust-al-route",
                                                                 method=robust_al_method, random_state=seed,
                                                                 timeout=timeouts.get(m))
        except MethodTimeout as e:
            row["note"] = f"timeout: {e}"
        except Exception as e:  # one failed fit must not lose the grid: recorded in the row
            row["note"] = f"error: {type(e).__name__}: {e}".splitlines()[0]
        row["cpu_seconds"] = time.process_time() - c0
        if row["note"]:
            row["seconds"] = time.perf_counter() - t0
            continue
        row["label_accuracy"] = label_accuracy(labels, crowd.truth)
        row["spearman"], row["n_workers_ge10"] = trust_spearman(trust, ann, crowd.truth, min_labels=min_labels)
        if len(adversaries):
            row["auc"] = adversary_auc(trust, adversaries)
    return rows


# --------------------------------------------------------------------------------------------------------------
# summary: tables and the acceptance checks of issue #12
# --------------------------------------------------------------------------------------------------------------
def mean_table(results: pd.DataFrame, value: str, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean of ``value`` over seeds per (crowd, kind, rate) row and method column (NaN where none ran)."""
    methods = list(methods) if methods is not None else [m for m in METHODS if m in set(results["method"])]
    t = results.groupby(["crowd", "kind", "rate", "method"], sort=True)[value].mean().unstack("method")
    return t.reindex(columns=methods)


def markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a GitHub markdown table (index levels as the first columns, NaN as '-')."""
    df = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df

    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "-" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


@dataclass
class Check:
    name: str
    passed: bool | None  # None: nothing to check (no unit of that kind was run)
    figures: str

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def acceptance_checks(results: pd.DataFrame, routing_cost: float = 0.005, min_spearman: float = 0.6,
                      min_workers: int = 20, max_rate: float = 0.3, min_auc: float = 0.9) -> list[Check]:
    """The acceptance checks of issue #12 on a results table (rows as :func:`evaluate_crowd` makes them).

    (i) On every clean crowd (mean over seeds), routing costs at most ``routing_cost`` (0.5 points) of label
        accuracy: acc(robust-al) - acc(robust-al-route) <= routing_cost.
    (ii) On every clean crowd where >= ``min_workers`` (20) workers have >= 10 labels, Spearman(trust of
        robust-al-route, true accuracy) >= ``min_spearman`` (0.6), mean over seeds.
    (iii) Over the units with adversaries at 0 < rate <= ``max_rate`` (30%): (a) robust-al-route's label
        accuracy beats every crowd-kit baseline on average, each compared on the (crowd, kind, rate) cells
        where that baseline ran (a GLAD skipped for time is compared only where it ran), cells weighted
        equally, so it beats the best one; (b) robust-al-route's adversary AUC, averaged over those cells, is
        >= ``min_auc`` (0.9).  The figures also give the per-kind means and the worst cell.
    """
    r = results
    checks: list[Check] = []
    clean = r[r["rate"] == 0]
    acc = mean_table(clean, "label_accuracy") if len(clean) else pd.DataFrame()

    # (i)
    if {"robust-al", "robust-al-route"} <= set(acc.columns) and len(acc):
        cost = (acc["robust-al"] - acc["robust-al-route"]).droplevel(["kind", "rate"])
        ok = cost.dropna()
        figs = ", ".join(f"{c} {100 * v:+.2f}" for c, v in cost.items())
        checks.append(Check("(i) clean crowds: routing costs <= %.1f points of label accuracy" % (100 * routing_cost),
                            bool((ok <= routing_cost).all()) and len(ok) == len(cost) if len(cost) else None,
                            f"cost in points (no-routing minus routing): {figs}"))
    else:
        checks.append(Check("(i) clean crowds: routing cost", None, "robust-al / robust-al-route not run clean"))

    # (ii)
    sub = clean[clean["method"] == "robust-al-route"]
    if len(sub):
        g = sub.groupby("crowd").agg(spearman=("spearman", "mean"), n=("n_workers_ge10", "max"))
        big = g[g["n"] >= min_workers]
        figs = ", ".join(f"{c} {v.spearman:.3f} (n={int(v.n)})" for c, v in big.iterrows())
        small = ", ".join(g.index[g["n"] < min_workers])
        checks.append(Check(f"(ii) clean crowds with >= {min_workers} workers of >= 10 labels: "
                            f"Spearman(trust, accuracy) >= {min_spearman}",
                            bool((big["spearman"] >= min_spearman).all()) if len(big) else None,
                            f"robust-al-route: {figs or 'no such crowd'}"
                            + (f"; too few workers: {small}" if small else "")))
    else:
        checks.append(Check("(ii) Spearman(trust, accuracy)", None, "robust-al-route not run clean"))

    # (iii)
    att = r[(r["rate"] > 0) & (r["rate"] <= max_rate + 1e-9)]
    if len(att) and "robust-al-route" in set(att["method"]):
        cells = mean_table(att, "label_accuracy")
        ra = cells["robust-al-route"]
        diffs, figs = {}, []
        for m in BASELINES:
            if m not in cells.columns:
                continue
            both = cells[[m]].join(ra).dropna()
            if not len(both):
                continue
            diffs[m] = float((both["robust-al-route"] - both[m]).mean())
            figs.append(f"{m} {both[m].mean():.4f} vs {both['robust-al-route'].mean():.4f} ({len(both)} cells, "
                        f"{100 * diffs[m]:+.2f} points)")
        by_kind = ra.groupby(level="kind").mean()
        best = cells[[m for m in BASELINES if m in cells.columns]].max(axis=1)
        figs.append("robust-al-route by kind: " + ", ".join(f"{k} {v:.4f}" for k, v in by_kind.items()))
        figs.append(f"per-cell best crowd-kit method (an oracle): {best.mean():.4f}")
        checks.append(Check(f"(iii-a) adversaries <= {100 * max_rate:.0f}%: robust-al-route beats the best crowd-kit "
                            "method on label accuracy (mean over cells)",
                            bool(diffs) and all(d > 0 for d in diffs.values()) if diffs else None, "; ".join(figs)))
        auc = mean_table(att, "auc")["robust-al-route"]
        worst = auc.idxmin() if auc.notna().any() else None
        figs = (f"mean {auc.mean():.4f} over {int(auc.notna().sum())} cells; by kind: "
                + ", ".join(f"{k} {v:.4f}" for k, v in auc.groupby(level='kind').mean().items())
                + (f"; worst cell {worst[0]}/{worst[1]}/{worst[2]:g}: {auc[worst]:.4f}" if worst is not None else ""))
        checks.append(Check(f"(iii-b) adversaries <= {100 * max_rate:.0f}%: robust-al-route adversary AUC >= {min_auc} "
                            "(mean over cells)",
                            bool(auc.mean() >= min_auc) if auc.notna().any() else None, figs))
    else:
        checks.append(Check(f"(iii) adversaries <= {100 * max_rate:.0f}%", None,
                            "no unit with adversaries and robust-al-route"))
    return checks
