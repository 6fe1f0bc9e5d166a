"""Labels and a calibrated trust per labeler from answers alone: infer, score, detect, route, infer again."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from robust_al.crowd.aggregate import TrustWeightedDS
from robust_al.trust.model import chance, class_suspect, routing_threshold, safe_route, worker_accuracy

METHODS = ("twds", "ds", "mv", "mmsr")


@dataclass
class CrowdAssessment:
    """What :func:`assess_crowd` found.

    ``posteriors``: task x class; ``labels``: task -> class; ``workers``: per labeler ``trust``, ``accuracy``,
    ``lower``/``upper`` (credible interval of its accuracy), ``worst_class``/``class_upper``, ``n`` (labels),
    ``flags`` (';'-joined reasons, '' if none), ``routed`` (its labels were left out of the final inference);
    ``threshold``: the routing threshold tau used (eq. 6 of :mod:`robust_al.trust.model`).
    """

    posteriors: pd.DataFrame
    labels: pd.Series
    workers: pd.DataFrame
    threshold: float
    info: dict = field(default_factory=dict)


def _fit(annotations: pd.DataFrame, n_classes: int, method: str, weights=None) -> TrustWeightedDS:
    agg = TrustWeightedDS(n_classes, "mv" if method == "mv" else "ds")
    return agg.fit(annotations, weights)


def _mmsr_posteriors(annotations: pd.DataFrame, n_classes: int, random_state: int) -> pd.DataFrame:
    """crowd-kit's MMSR (Ma & Olshevsky 2020) labels as one-hot posteriors (MMSR gives no probabilities).

    ``n_iter`` = 1000 (crowd-kit's default is 10,000 at ~0.03-0.07 s each on the Zheng crowds; the skills
    had settled long before). Where workers share too few tasks its covariance completion fails and every
    skill is NaN (Zheng product: 176 workers, 3 answers per task): that is refused in one line rather than
    voted on with undefined weights."""
    from crowdkit.aggregation import MMSR

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MMSR(n_iter=1000, random_state=random_state).fit(annotations[["task", "worker", "label"]])
        if model.skills_ is None:  # crowd-kit types it Optional; fit always sets it
            raise RuntimeError("crowd-kit's MMSR.fit left skills_ unset")
        if model.skills_.isna().all():
            raise ValueError("crowd-kit's MMSR cannot fit this crowd: every worker skill came out NaN (workers "
                             "share too few tasks for its covariance completion); use --method twds or ds")
        labels = model.predict(annotations[["task", "worker", "label"]])
    post = np.zeros((len(labels), n_classes))
    post[np.arange(len(labels)), labels.to_numpy().astype(int)] = 1.0
    return pd.DataFrame(post, index=labels.index.rename("task"), columns=range(n_classes))


def _flags(table: pd.DataFrame, tau: float, detected: dict[object, list[str]]) -> pd.Series:
    out, suspect = {}, class_suspect(table, tau)
    for w, row in table.iterrows():
        f = list(detected.get(w, []))
        if row["upper"] < tau:
            f.append("below-threshold")
        if suspect[w]:
            f.append(f"class-{int(row['worst_class'])}")
        out[w] = ";".join(f)
    return pd.Series(out, dtype=object).reindex(table.index)


def detect_adversaries(ann: pd.DataFrame, n_classes: int, random_state: int = 0, side: str = "mmsr"
                       ) -> dict[object, list[str]]:
    """Flags from the crowd's agreement structure (:mod:`robust_al.trust.detect`): ``spammer`` (a row of the
    cross-covariance's low-rank factor confidently near 0) and ``colluder`` (a bloc that agrees with itself
    far more than with the rest, the side chosen by MMSR's skills as the second opinion).

    ``side="mmsr"``: the lower-MMSR side is flagged whenever a bloc is found. The detectors' stricter default
    (``"both"``, also a unanimity check) missed blocs of 30 % on dog and temp here (adversary AUC 0.69 for
    blocs over 5 real crowds at 10 and 30 %, against 0.99 with ``"mmsr"``); MMSR alone picks the honest side
    as a bloc nears half of the crowd (temp at 40 %)."""
    from robust_al.trust import detect

    w, workers = pd.factorize(ann["worker"])
    t, _ = pd.factorize(ann["task"])
    y = ann["label"].to_numpy(dtype=np.int64)
    M = len(workers)
    out: dict[object, list[str]] = {}
    if M < 5:  # neither test has any power on a handful of labelers (and crowd-kit's MMSR crashes on 2)
        return out
    spam = detect.spammer_scores(t, w, y, n_classes, n_workers=M, random_state=random_state)
    for k in np.flatnonzero(spam["spammer"].reindex(range(M)).fillna(False).to_numpy(dtype=bool)):
        out.setdefault(workers[k], []).append("spammer")
    try:
        skills = detect.mmsr_skills(t, w, y, n_classes, random_state, n_workers=M)
    except (ValueError, np.linalg.LinAlgError):  # no second opinion: no side can be chosen, flag no bloc
        return out
    blocs = detect.colluding_blocs(t, w, y, n_classes, skills=skills, n_workers=M, random_state=random_state,
                                   side=side)
    for k in np.flatnonzero(blocs["colluder"].reindex(range(M)).fillna(False).to_numpy(dtype=bool)):
        out.setdefault(workers[k], []).append("colluder")
    return out


def _scored(ann: pd.DataFrame, n_classes: int, method: str, first: TrustWeightedDS | None, out: set,
            prior_strength: float, level: float) -> tuple[TrustWeightedDS, pd.DataFrame]:
    """The inference without the labelers in ``out``, and every labeler scored against it."""
    fit = first if not out and first is not None else _fit(
        ann, n_classes, method, {w: (0.0 if w in out else 1.0) for w in ann["worker"].unique()})
    return fit, worker_accuracy(fit.leave_one_out(), n_classes, prior_strength=prior_strength, level=level)


def _threshold(table: pd.DataFrame, n_classes: int, relative: float) -> tuple[float, float]:
    """The crowd's typical accuracy and tau (eq. 6)."""
    typical = float(table["prior"].iloc[0]) if len(table) else chance(n_classes)
    return typical, routing_threshold(n_classes, typical, relative)


def _confirm(ann: pd.DataFrame, n_classes: int, method: str, first: TrustWeightedDS | None,
             detected: dict[object, list[str]], prior_strength: float, level: float, relative: float):
    """Score everyone against the evidence inferred without the flagged labelers, and drop a found bloc the
    evidence refutes. Returns (evidence, table, typical, tau, detected)."""
    detected = {w: list(f) for w, f in detected.items()}
    evidence, table = _scored(ann, n_classes, method, first, set(detected), prior_strength, level)
    typical, tau = _threshold(table, n_classes, relative)
    bloc = [w for w, f in detected.items() if "colluder" in f and w in table.index]
    if bloc and np.average(table.loc[bloc, "accuracy"], weights=table.loc[bloc, "n"]) >= tau:
        # a bloc that, scored against the evidence inferred without it, is as accurate as the crowd is not
        # attacking anything: the split was honest workers against heavy near-chance ones (clean rte: 48 good
        # workers flagged, their bloc's mean accuracy 0.85 against tau 0.64; routing them cost 1.25 points)
        for w in bloc:
            detected[w] = [f for f in detected[w] if f != "colluder"]
            if not detected[w]:
                del detected[w]
        evidence, table = _scored(ann, n_classes, method, first, set(detected), prior_strength, level)
        typical, tau = _threshold(table, n_classes, relative)
    return evidence, table, typical, tau, detected


def detected_flags(annotations: pd.DataFrame, n_classes: int, random_state: int = 0, *, method: str = "ds",
                   prior_strength: float = 4.0, level: float = 0.9, relative: float = 0.5
                   ) -> tuple[dict[object, list[str]], pd.DataFrame]:
    """The detectors' flags (:func:`detect_adversaries`) that the evidence does not refute, as
    :func:`assess_crowd` keeps them (worker -> reasons: ``spammer``, ``colluder``), and every labeler scored
    (:func:`worker_accuracy`) against the labels inferred without the flagged ones (empty if none is
    flagged): a bloc scored against evidence it sways looks accurate. A campaign's ledger routes on both."""
    ann = annotations[["task", "worker", "label"]].reset_index(drop=True)
    detected = detect_adversaries(ann, n_classes, random_state)
    if not detected:
        return {}, pd.DataFrame()
    _, table, _, _, detected = _confirm(ann, n_classes, method, None, detected, prior_strength, level, relative)
    return detected, table if detected else pd.DataFrame()


def assess_crowd(annotations: pd.DataFrame, n_classes: int, method: str = "twds", route: bool = False,
                 random_state: int = 0, *, level: float = 0.9, relative: float = 0.5,
                 prior_strength: float = 4.0, max_share: float = 0.5, detect: bool = True) -> CrowdAssessment:
    """Infer labels from a long table (``task``, ``worker``, ``label`` in 0..C-1) and score every labeler.

    1. Truth inference: ``twds`` / ``ds`` robust-al's Dawid-Skene (:class:`TrustWeightedDS`), ``mv`` its
       weighted majority vote, ``mmsr`` crowd-kit's MMSR for the labels.
    2. Detection (``detect``): spammers and colluding blocs from the agreement structure
       (:func:`detect_adversaries`). A large bloc turns Dawid-Skene to its side on the items it attacks (a
       bloc of 30 % of dog's workers: every trust-based ranking put it on top, AUC 0.00), so the evidence
       each labeler is scored against is inferred without the flagged ones.
    3. Trust: each label against the leave-one-out posterior of its item (Dawid-Skene's, whatever the
       method), turned into a posterior accuracy with a credible interval (:func:`worker_accuracy`).
    4. Routing (``route``): labelers confidently under tau (eq. 6, relative to chance and the crowd's typical
       labeler), confidently worse on one class than overall (eq. 8), or flagged and not confidently above
       tau, are routed out (no more queries), within the safety limits of :func:`safe_route`. The labels
       are inferred again without those under tau or flagged, and everyone is re-scored against that. A
       labeler routed out only for one class keeps its labels in the inference: Dawid-Skene models its
       confusion, so its other classes still inform (leaving out a targeted attacker that is 85 % right
       elsewhere cost 1.1 points of label accuracy on a synthetic 5-class crowd, 0.825 -> 0.814, and leaving
       out a spammer changed nothing). An item only left-out labelers answered keeps its first inference.
    ``twds`` differs from ``ds`` only in detection and routing.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    ann = annotations[["task", "worker", "label"]].reset_index(drop=True)
    first = _fit(ann, n_classes, method)
    detected = detect_adversaries(ann, n_classes, random_state) if detect and method == "twds" else {}

    evidence, table, typical, tau, detected = _confirm(ann, n_classes, method, first, detected, prior_strength,
                                                       level, relative)
    flagged = set(detected)
    posteriors = first.posteriors_
    routed = pd.Series(False, index=table.index)
    if route and len(table):
        routed = safe_route(table, tau, flagged, max_share=max_share)
        out = set(routed[routed & ((table["upper"] < tau) | table.index.isin(list(flagged)))].index)
        if out:
            second, rescored = (_scored(ann, n_classes, method, first, out, prior_strength, level)
                                if out != flagged else (evidence, table))
            kept = ann.loc[~ann["worker"].isin(out), "task"].unique()
            posteriors = first.posteriors_.copy()
            posteriors.loc[kept] = second.posteriors_.loc[kept].to_numpy()
            table = rescored.reindex(table.index).fillna(table)
    if method == "mmsr":
        posteriors = _mmsr_posteriors(ann, n_classes, random_state).reindex(posteriors.index).fillna(posteriors)
    workers = table.copy()
    workers["flags"] = _flags(table, tau, detected)
    workers["routed"] = routed.reindex(table.index).fillna(False).astype(bool)
    labels = pd.Series(posteriors.to_numpy().argmax(axis=1), index=posteriors.index, name="label")
    return CrowdAssessment(posteriors, labels, workers, tau, {"typical": typical, "detected": len(detected)})
