"""How well are injected poisons found? The secured-set check vs ART's poisoning defences.

Each detector names a set of training items; precision = poisons among them / named, recall = poisons named /
poisons that entered training (labeled, or caught before training by the check). ART's defences run on the
campaign's final training set (labeled items with their inferred labels):
- ActivationDefence (activation clustering, Chen et al. 2018) and SpectralSignatureDefense (Tran et al. 2018),
  per class on the *penultimate* layer (ART would use the logits: measured weak, see NOTES.md);
- ProvenanceDefense (Baracaldo et al. 2018) with the secured set S as trusted data and each item's labeler as
  its data source (on a frozen network: its head refitted on the fixed features, which is the same refit).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robust_al.crowd.network import ClassifierNet, FrozenFeatureNet, penultimate
from robust_al.reproducible import seeded
from robust_al.trust.ledger import AGREEMENT


def _penultimate_classifier(model: ClassifierNet, input_shape, n_classes: int, lr: float = 1e-3):
    """An ART PyTorchClassifier whose ``get_activations`` returns the penultimate layer (``features``)."""
    from art.estimators.classification import PyTorchClassifier

    class Penultimate(PyTorchClassifier):
        def get_activations(self, x, layer=None, batch_size: int = 128, framework: bool = False):
            return penultimate(model, x, batch_size)

    device = next(model.parameters()).device
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    return Penultimate(model, loss=nn.CrossEntropyLoss(), optimizer=opt, input_shape=tuple(input_shape),
                       nb_classes=n_classes, clip_values=(0.0, 1.0), channels_first=True,
                       device_type="gpu" if device.type == "cuda" else "cpu")


def _head_classifier(model: ClassifierNet, d: int, n_classes: int, lr: float = 1e-3):
    """An ART PyTorchClassifier over a frozen network's trained head, fed the fixed features: retraining it is
    retraining the whole network (nothing else learns), without the backbone's forward pass in every epoch."""
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    return PyTorchClassifier(model.head, loss=nn.CrossEntropyLoss(), input_shape=(d,), nb_classes=n_classes,
                             optimizer=torch.optim.Adam(model.head.parameters(), lr=lr),
                             device_type="gpu" if device.type == "cuda" else "cpu")


def provenance_defense():
    """ART's ProvenanceDefense with its ``filter_input`` done by row identity: ART tests every value of every
    row for membership in the segment (O(n x d x segment) per source, 28 s of a 71 s run on 1.5k CIFAR-2
    items); a row of float features is in the segment exactly when its bytes are."""
    from art.defences.detector.poison import ProvenanceDefense

    class RowProvenanceDefense(ProvenanceDefense):
        @staticmethod
        def filter_input(data: np.ndarray, labels: np.ndarray, segment: np.ndarray):
            seg = {np.ascontiguousarray(r).tobytes() for r in segment}
            keep = np.array([np.ascontiguousarray(r).tobytes() not in seg for r in data], dtype=bool)
            return data[keep], labels[keep]

    return RowProvenanceDefense


def _accuracy(y: np.ndarray, logits: np.ndarray) -> float:
    return float(np.mean(np.asarray(y).argmax(1) == np.asarray(logits).argmax(1)))


def precision_recall(flagged: np.ndarray, poisons: np.ndarray) -> dict:
    flagged, poisons = np.unique(flagged), np.unique(poisons)
    hit = len(np.intersect1d(flagged, poisons))
    return {"precision": hit / len(flagged) if len(flagged) else None,
            "recall": hit / len(poisons) if len(poisons) else None, "flagged": int(len(flagged)),
            "poisons": int(len(poisons))}


def deep_knn_flags(Z: np.ndarray, y: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Deep k-NN (Peri et al. 2020, "Deep k-NN defense against clean-label data poisoning attacks"): flag item i
    when its label y_i is not the plurality label of its k nearest other items in feature space (cosine; ties to
    the smallest class id). Returns a boolean mask over the rows of Z."""
    Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    D = -(Z @ Z.T)
    np.fill_diagonal(D, np.inf)
    nb = y[np.argsort(D, axis=1, kind="stable")[:, :k]]
    plural = np.array([np.bincount(r, minlength=n_classes).argmax() for r in nb], dtype=y.dtype)
    return plural != y


class _TrustAsTrained:
    """The store as the ledger reads it, without the last iteration's agreement update (its events' reasons
    start with trust.ledger.AGREEMENT), which came after F_last was trained: the trust that training weighted
    its items by (model.targets 'trust') and routed by."""

    def __init__(self, store, last: int):
        self.store, self.last = store, last

    def trust_events(self):
        ev = self.store.trust_events()
        return ev[(ev["iteration"] < self.last)
                  | ((ev["iteration"] == self.last) & ~ev["reason"].astype(str).str.startswith(AGREEMENT + " "))]


def target_without_poisons(campaign) -> bool:
    """Q3's control: does the last model, retrained the same way without the poisons, misclassify the target
    too? Then the poisons did not cause the miss (a target near the boundary can fall on its own).

    On a finished campaign (resumed, not run): F_last's own training less the injected items: from F_{last-1}
    (warm start) or the initial network, with the seed of the attempt that made F_last (0; 1 after a
    re-examination; 2 when a quarantine was kept), the trust F_last was trained with and the augmentations made
    before it. With the poisons left in, this gives F_last back. Nothing is written: the poisons leave the
    labeled set in memory only."""
    from robust_al.crowd.learner import Snapshot
    from robust_al.trust import TrustLedger

    c = campaign
    last = c.load_state() - 1
    meta = c.store.get_meta("poison")
    poisons = {int(i) for i in meta["item_ids"]}
    m = c.prev_metrics
    attempt = 0 if m.get("secured_check", "accepted") == "accepted" else 2 if m.get("quarantined") else 1
    start = None if last == 0 else Snapshot.of(c.store.iteration_state(last - 1)[2], f"F_{last - 1}")
    c.ledger = TrustLedger.configured(c.crowd.workers, _TrustAsTrained(c.store, last), c.cfg.trust,
                                      c.cfg.annotators.k, c.cfg.seed)
    c.status = {i: s for i, s in c.status.items() if i not in poisons}
    c.train_model(last, attempt, start)
    T = c.dataset.test
    return bool(int(c.learner.predict(T.X[[meta["target_test_index"]]])[0]) == meta["base_class"])


def filter_cost(store) -> dict[str, int]:
    """What the poison filter cost honest labelers' work, read from a finished campaign's store (a
    :class:`~robust_al.store.RunStore`): ``honest_filtered`` (items that are not injected, kept out of training
    by the filter) of ``honest_labeled`` (every item not injected that got its labels: used, filtered,
    quarantined or discarded)."""
    from robust_al.campaign import DISCARDED, FILTERED, LABELED, QUARANTINED

    injected = {int(i) for i in store.injected_ids()}
    honest = [s for i, s in store.statuses().items() if int(i) not in injected]
    return {"honest_filtered": sum(s == FILTERED for s in honest),
            "honest_labeled": sum(s in (LABELED, FILTERED, QUARANTINED, DISCARDED) for s in honest)}


def detection_report(campaign, expected_poison_share: float = 0.1) -> dict[str, dict]:
    """Precision/recall of each detector on a finished (resumed, not run) campaign with injected poisons."""
    campaign.load_state()
    # activation clustering's k-means and the refits draw from the global generators
    with seeded(campaign.global_seed("detection")):
        return _detect(campaign, expected_poison_share)


def _detect(c, expected_poison_share: float) -> dict[str, dict]:
    import copy

    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    from robust_al.campaign import DISCARDED, FILTERED, HOLDOUT, LABELED, QUARANTINED

    injected = c.injected_ids()
    status = c.status
    entered = np.array([i for i in injected if status.get(int(i)) in (LABELED, QUARANTINED, DISCARDED, FILTERED)],
                       np.int64)
    caught = np.array([i for i, s in status.items() if s in (QUARANTINED, DISCARDED)], np.int64)
    report = {"secured check": precision_recall(caught, entered)}
    if c.cfg.poison_filter.enabled:
        report["poison filter"] = precision_recall(c.store.filtered()["item_id"].to_numpy(np.int64), entered)

    labeled = c.ids_with(LABELED)
    post = c.inferred_labels()
    labeled = labeled[np.isin(labeled, post.index.to_numpy())]
    X = c.pool.X[c.pool.positions(labeled)]
    y = post.loc[labeled].to_numpy().argmax(1)
    Y = np.eye(c.pool.n_classes, dtype=np.float32)[y]
    in_train = injected[np.isin(injected, labeled)]
    model = copy.deepcopy(c.net.model)
    clf = _penultimate_classifier(model, c.pool.input_shape, c.pool.n_classes)

    ac = ActivationDefence(clf, X, Y)
    _, clean = ac.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller")
    report["activation clustering"] = precision_recall(labeled[np.asarray(clean) == 0], in_train)

    ss = SpectralSignatureDefense(clf, X, Y, expected_pp_poison=expected_poison_share, batch_size=256,
                                  eps_multiplier=1.5)
    _, clean = ss.detect_poison()
    report["spectral signature"] = precision_recall(labeled[np.asarray(clean) == 0], in_train)

    ann = c.store.annotations(labeled)
    ann = ann[ann["purpose"] == "query"].drop_duplicates("task").set_index("task")["worker"].reindex(labeled)
    sources = sorted(set(ann.dropna()))  # only sources that hold items: ART cannot fit on an empty one
    src = ann.map({w: k for k, w in enumerate(sources)}).fillna(len(sources)).astype(int).to_numpy()
    P = np.eye(int(src.max()) + 1, dtype=np.float32)[src]
    S = c.pool.subset(c.ids_with(HOLDOUT))
    x_train, x_val, pv_clf = X, S.X, clf
    if isinstance(model, FrozenFeatureNet):
        x_train, x_val = penultimate(model, X), penultimate(model, S.X)  # = the frozen features
        pv_clf = _head_classifier(copy.deepcopy(model), x_train.shape[1], c.pool.n_classes)
    pv = provenance_defense()(pv_clf, x_train, Y, P, x_val=x_val, eps=0.2, perf_func=_accuracy,
                               y_val=np.eye(c.pool.n_classes, dtype=np.float32)[S.y])
    # (perf_func: ART's "accuracy" string fails on one-hot labels + logits)
    try:
        _, clean = pv.detect_poison()
        report["provenance (labelers as sources)"] = precision_recall(labeled[np.asarray(clean) == 0], in_train)
    except ValueError as e:  # ART refits without each source; a refit on nothing left raises
        report["provenance (labelers as sources)"] = {"precision": None, "recall": None, "error": str(e)}
    return report
