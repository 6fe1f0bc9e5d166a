"""Crowd Layer (Rodrigues & Pereira 2018): one differentiable layer per annotator on top of the network."""
from __future__ import annotations

import torch
from torch import nn

from robust_al.crowd.base import CrowdData, CrowdLearner
from robust_al.crowd.network import train_minibatches


class AnnotatorLayer(nn.Module):
    """Maps the network's class probabilities sigma (B, C) to annotator-specific logits (B, W, C).

    MW: W_r sigma (a C x C matrix per annotator, initialised to the identity);
    VW: w_r ⊙ sigma (a vector per annotator, initialised to ones); VW-B: w_r ⊙ sigma + b_r.

    Why not crowd-kit's ``crowdkit.learning.CrowdLayer`` (1.4.2), which computes the same thing (measured: with
    the same weights its mw / vw / vw+b outputs equal these bit for bit, ``tests/test_learners.py``): here
    ``import crowdkit.learning`` fails (its ``text_summarization`` imports ``PreTrainedModel`` from the
    installed transformers 5.24, which raises ModuleNotFoundError), so the module is reachable only by patching
    ``sys.modules``; and its mw squeezes a batch of one item to shape (C,) instead of (1, C). This layer also
    takes K annotators per item at once (B, K) where crowd-kit takes one per row.
    """

    def __init__(self, n_workers: int, C: int, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "MW":
            self.weight = nn.Parameter(torch.eye(C).repeat(n_workers, 1, 1))
        elif kind in ("VW", "VW-B"):
            self.weight = nn.Parameter(torch.ones(n_workers, C))
            self.bias = nn.Parameter(torch.zeros(n_workers, C)) if kind == "VW-B" else None
        else:
            raise ValueError(f"Crowd Layer variant must be 'MW', 'VW' or 'VW-B', got {kind!r}")

    def forward(self, sigma: torch.Tensor, workers: torch.Tensor) -> torch.Tensor:
        """Annotator logits for (item, worker) pairs: sigma (B, C), workers (B, K) -> (B, K, C)."""
        w = self.weight[workers.clamp_min(0)]
        if self.kind == "MW":
            return torch.einsum("bkcd,bd->bkc", w, sigma)
        out = w * sigma[:, None, :]
        return out + self.bias[workers.clamp_min(0)] if self.bias is not None else out


class CrowdLayer(CrowdLearner):
    """Network -> softmax sigma -> per-annotator crowd layer; trained end to end with the cross-entropy of each
    annotator's label under its own output (missing labels masked). Predicts with sigma.
    ``confusion_matrices_[w][k]`` = softmax(crowd layer of w applied to the one-hot of class k)."""

    def __init__(self, n_classes, input_shape, kind: str = "MW", **kw):
        super().__init__(n_classes, input_shape, **kw)
        self.kind = kind

    def _fit(self, data: CrowdData) -> None:
        C = self.n_classes
        self.layer_ = AnnotatorLayer(len(data.worker_ids), C, self.kind).to(self.torch_device)
        opt = torch.optim.Adam(list(self.model.parameters()) + list(self.layer_.parameters()), lr=self.lr)

        def loss(b, _epoch):
            sigma = torch.softmax(self.model(data.X[b]), dim=1)
            w, y = data.pad_workers[b], data.pad_labels[b]
            logits = self.layer_(sigma, w)
            mask = (w >= 0).float()
            ce = nn.functional.cross_entropy(logits.reshape(-1, C), y.reshape(-1), reduction="none")
            return (ce * mask.reshape(-1)).sum() / mask.sum()

        self.model.train()
        self.loss_history_ = train_minibatches(opt, self.n_epochs_for(data.n_items),
                                               self.epoch_batches(data.n_items), loss)
        self.model.eval()
        with torch.no_grad():
            eye = torch.eye(C, device=self.torch_device)
            conf = []
            for wk in range(len(data.worker_ids)):
                ws = torch.full((C, 1), wk, device=self.torch_device, dtype=torch.long)
                conf.append(torch.softmax(self.layer_(eye, ws)[:, 0, :], dim=1))
            self.confusion_matrices_ = torch.stack(conf).cpu().numpy()
            self.posteriors_ = torch.softmax(self.model(data.X), 1).cpu().numpy()
