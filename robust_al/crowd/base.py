"""Shared plumbing of the learners that fit a classifier from crowd annotations (one file per algorithm)."""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from robust_al.crowd.network import build_network, epochs_for, penultimate, pick_device, shuffled_batches


@dataclass
class CrowdData:
    """Annotations as index tensors on the device: item row, worker index, label, plus a padded per-item view."""

    X: torch.Tensor            # (N, ...) inputs of the annotated items, float32 in [0, 1]
    rows: torch.Tensor         # (A,) item row of each annotation
    workers: torch.Tensor      # (A,) worker index
    labels: torch.Tensor       # (A,) label
    worker_ids: list[str]      # index -> worker name
    item_ids: np.ndarray       # row -> item id
    pad_workers: torch.Tensor  # (N, K) workers of each item, -1 = none
    pad_labels: torch.Tensor   # (N, K)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def encode(X: np.ndarray, annotations: pd.DataFrame, item_ids: np.ndarray | None, n_classes: int,
           device: torch.device) -> CrowdData:
    """Keep the annotated rows of X and turn the long (task, worker, label) table into index tensors.

    ``item_ids`` names the rows of X (default: 0..len(X)-1, so ``task`` is a row number). Workers are
    indexed in sorted order, so the result does not depend on the order of the table.
    """
    X = np.asarray(X, dtype=np.float32)
    ids = np.arange(len(X)) if item_ids is None else np.asarray(item_ids)
    df = annotations[["task", "worker", "label"]]
    bad = ~df["task"].isin(ids)
    if bad.any():
        raise ValueError(f"annotation for task {df['task'][bad].iloc[0]!r} that is not among the items given")
    lab = df["label"].astype(int)
    if ((lab < 0) | (lab >= n_classes)).any():
        raise ValueError(f"label {lab[(lab < 0) | (lab >= n_classes)].iloc[0]} outside 0..{n_classes - 1}")
    used = np.array(sorted(df["task"].unique()))
    row_of = {t: r for r, t in enumerate(used)}
    pos = pd.Series(np.arange(len(ids)), index=ids)
    Xu = X[pos.loc[used].to_numpy()]
    workers = sorted(df["worker"].astype(str).unique())
    w_of = {w: k for k, w in enumerate(workers)}
    rows = df["task"].map(row_of).to_numpy()
    wk = df["worker"].astype(str).map(w_of).to_numpy()
    order = np.lexsort((wk, rows))
    rows, wk, lab = rows[order], wk[order], lab.to_numpy()[order]
    K = int(np.bincount(rows, minlength=len(used)).max())
    pad_w = -np.ones((len(used), K), dtype=np.int64)
    pad_l = np.zeros((len(used), K), dtype=np.int64)
    slot = np.zeros(len(used), dtype=np.int64)
    for r, w, l in zip(rows, wk, lab):
        pad_w[r, slot[r]], pad_l[r, slot[r]] = w, l
        slot[r] += 1
    t = lambda a: torch.as_tensor(a, device=device)
    return CrowdData(t(Xu), t(rows), t(wk), t(lab), workers, used, t(pad_w), t(pad_l))


def majority_posteriors(data: CrowdData, n_classes: int) -> torch.Tensor:
    """rho initialised by majority vote (ties share the mass), as Algorithm 1 of A-LFC."""
    counts = torch.zeros(data.n_items, n_classes, device=data.X.device)
    counts.index_put_((data.rows, data.labels), torch.ones_like(data.rows, dtype=torch.float32), accumulate=True)
    top = counts == counts.max(dim=1, keepdim=True).values
    return top.float() / top.float().sum(dim=1, keepdim=True)


def confusions_from_posteriors(data: CrowdData, rho: torch.Tensor, n_classes: int, smooth: float = 1e-6,
                               prior: torch.Tensor | None = None) -> torch.Tensor:
    """A-LFC eq. 6: pi^(j)_{kk'} = sum_i rho(t_i=k) 1(y_ij=k') / sum_i rho(t_i=k) 1(y_ij != ⊥); (W, C, C).
    ``prior`` adds Dirichlet pseudo-counts (the MAP version), e.g. seeded from the campaign's trust."""
    W = len(data.worker_ids)
    num = torch.zeros(W, n_classes, n_classes, device=rho.device)
    # num[w, :, l] += rho[i, :]
    num.index_put_((data.workers[:, None].expand(-1, n_classes),
                    torch.arange(n_classes, device=rho.device)[None, :].expand(len(data.rows), -1),
                    data.labels[:, None].expand(-1, n_classes)), rho[data.rows], accumulate=True)
    num = num + smooth + (0.0 if prior is None else prior)
    return num / num.sum(dim=2, keepdim=True)


def crowd_likelihood(data: CrowdData, pi: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """log prod_j p(y_ij | t_i = k; Pi) for the items ``rows``: (len(rows), C)."""
    w, l = data.pad_workers[rows], data.pad_labels[rows]
    mask = (w >= 0).float()
    logp = torch.log(pi[w.clamp_min(0), :, l])  # (B, K, C): log pi_w[k, l] for every k
    return (logp * mask[..., None]).sum(dim=1)


class CrowdLearner(BaseEstimator):
    """Base class: a network (MLP for features, small CNN for images) trained from crowd labels.

    Subclasses implement ``_fit(data)``; fitted attributes end in ``_`` (``classes_``, ``confusion_matrices_``
    (W, C, C) with rows = true class, ``posteriors_`` (N, C) over the annotated items, ``loss_history_``,
    ``workers_``, ``item_ids_``).

    A scikit-learn estimator as well: the constructor only stores its arguments, so ``get_params``,
    ``set_params`` and ``sklearn.base.clone`` work (the parameters are those of every ``__init__`` up the
    class chain: subclasses pass the base's through ``**kw``). Labels in the long (task, worker, label) table
    are class ids 0..n_classes-1, or any names when ``classes`` lists them (or when exactly ``n_classes``
    distinct names occur: then sorted, as scikit-learn's ``LabelEncoder`` orders them); ``predict`` returns
    ``classes_`` entries.
    """

    def __init__(self, n_classes: int, input_shape: Sequence[int], hidden: Sequence[int] = (128,),
                 dropout: float = 0.5, epochs: int = 100, batch_size: int = 64, lr: float = 1e-3,
                 device: str = "auto", seed: int = 0, warm_start: bool = False, prior_strength: float = 0.0,
                 min_steps: int = 0, standardize: bool = True, classes: Sequence | None = None):
        self.n_classes, self.input_shape = n_classes, input_shape
        self.standardize = standardize
        self.hidden, self.dropout = hidden, dropout
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.device = device
        self.seed, self.warm_start, self.prior_strength = seed, warm_start, prior_strength
        self.min_steps = min_steps
        self.classes = classes
        self.progress = False

    @classmethod
    def _get_param_names(cls) -> list[str]:
        # scikit-learn reads one __init__ signature and skips **kw; ours spread over the class chain
        import inspect

        names: set[str] = set()
        for k in cls.__mro__:
            if "__init__" in vars(k) and issubclass(k, CrowdLearner):
                names |= {p.name for p in inspect.signature(k.__init__).parameters.values()
                          if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        return sorted(names)

    @property
    def torch_device(self) -> torch.device:
        """``device`` resolved (``auto``: CUDA when present)."""
        return pick_device(self.device)

    def _encode_labels(self, annotations: pd.DataFrame) -> pd.DataFrame:
        """Set ``classes_`` and return the table with labels as class ids; a label outside the classes is a
        one-line error."""
        labels = annotations["label"]
        numeric = pd.api.types.is_numeric_dtype(labels)
        if self.classes is not None:
            classes = np.asarray(self.classes)
        elif numeric:
            classes = np.arange(self.n_classes)
        else:
            classes = np.array(sorted(labels.unique()))
        if len(classes) != self.n_classes:
            raise ValueError(f"{len(classes)} classes {list(classes)[:5]} for n_classes={self.n_classes}: "
                             "give classes=[...] naming all of them in order")
        self.classes_ = classes
        if numeric and self.classes is None:
            return annotations
        code = {c: k for k, c in enumerate(classes.tolist())}
        bad = ~labels.isin(list(code))
        if bad.any():
            raise ValueError(f"label {labels[bad].iloc[0]!r} is not one of classes {list(classes)}")
        return annotations.assign(label=labels.map(code).astype(int))

    def n_epochs_for(self, n_items: int) -> int:
        """``epochs``, or more when that would be fewer than ``min_steps`` gradient steps (tiny labeled sets)."""
        return epochs_for(n_items, self.batch_size, self.epochs, self.min_steps)

    def init_model(self, X: np.ndarray) -> torch.nn.Module:
        """A fresh network whose input standardization uses the statistics of ``X`` (no labels involved;
        the identity with ``standardize=False``)."""
        torch.manual_seed(self.seed)
        self.model = build_network(tuple(self.input_shape), self.n_classes, "auto", tuple(self.hidden),
                                   self.dropout).to(self.torch_device)
        if self.standardize:
            self.model.standardize.fit(X)
        return self.model

    def state_dict(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def snapshot(self, label: str = ""):
        """The fitted network's weights as an immutable value (:class:`robust_al.crowd.learner.Snapshot`)."""
        from robust_al.crowd.learner import Snapshot

        return Snapshot.of(self.model.state_dict(), label)

    def restore(self, snapshot) -> None:
        """Put ``snapshot``'s weights into the network (copied: the snapshot stays as it was)."""
        self.model.load_state_dict(dict(snapshot.weights))

    def fit(self, X: np.ndarray, annotations: pd.DataFrame, item_ids: np.ndarray | None = None,
            prior_trust: dict[str, float] | None = None) -> CrowdLearner:
        """Fit on items ``X`` (rows named by ``item_ids``, default row numbers) and annotations in the long
        (task, worker, label) form. ``prior_trust`` (worker -> trust in [0, 1]) seeds each worker's confusion
        matrix with a Dirichlet prior worth ``prior_strength`` labels: trust on the diagonal, the rest spread.
        With ``warm_start`` the current network is trained further instead of a new one."""
        data = encode(X, self._encode_labels(annotations), item_ids, self.n_classes, self.torch_device)
        if not (self.warm_start and hasattr(self, "model")):
            self.init_model(X)
        self.workers_, self.item_ids_ = data.worker_ids, data.item_ids
        self._prior = self._trust_prior(data, prior_trust)
        self._generator = torch.Generator(device="cpu").manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self._fit(data)
        self.model.eval()
        return self

    def _fit(self, data: CrowdData) -> None:
        raise NotImplementedError

    def _trust_prior(self, data: CrowdData, trust: dict[str, float] | None) -> torch.Tensor | None:
        """Dirichlet pseudo-counts (W, C, C) from trust, or None."""
        if not trust or self.prior_strength <= 0:
            return None
        C = self.n_classes
        t = torch.tensor([float(trust.get(w, 1.0 / C)) for w in data.worker_ids], device=self.torch_device)
        off = ((1 - t) / max(C - 1, 1))[:, None, None].expand(-1, C, C)
        eye = torch.eye(C, device=self.torch_device)[None]
        return self.prior_strength * (eye * t[:, None, None] + (1 - eye) * off)

    def epoch_batches(self, n: int) -> Callable[[], Iterator[torch.Tensor]]:
        """A new permutation of the n items per epoch, from this fit's generator."""
        return shuffled_batches(n, self.batch_size, self._generator, self.torch_device)

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.model.eval()
        out = []
        for s in range(0, len(X), 4096):
            xb = torch.as_tensor(np.asarray(X[s:s + 4096], dtype=np.float32), device=self.torch_device)
            out.append(torch.softmax(self.model(xb), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_classes), np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable class of each row, as a ``classes_`` entry."""
        top = self.predict_proba(X).argmax(axis=1)
        return self.classes_[top] if hasattr(self, "classes_") else top

    def embed(self, X: np.ndarray) -> np.ndarray:
        return penultimate(self.model, X)

    def confusion_of(self, worker: str) -> np.ndarray:
        return self.confusion_matrices_[self.workers_.index(worker)]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """E_target[-log softmax(logits)], averaged (optionally weighted) over the batch."""
    ce = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1)
    return ce.mean() if weight is None else (weight * ce).sum() / weight.sum().clamp_min(1e-12)
