"""Two-stage baselines: aggregate the crowd with crowd-kit (majority vote or Dawid-Skene), then train the network."""
from __future__ import annotations

import warnings

import pandas as pd
import torch
from crowdkit.aggregation import DawidSkene, MajorityVote

from robust_al.crowd.base import CrowdData, CrowdLearner, confusions_from_posteriors
from robust_al.crowd.network import train_minibatches


class TwoStage(CrowdLearner):
    """``method='mv'`` or ``'ds'`` (crowd-kit), hard labels, then cross-entropy training of the network.
    ``confusion_matrices_`` are eq. 6 of A-LFC with the aggregated posteriors."""

    def __init__(self, n_classes, input_shape, method: str = "mv", **kw):
        super().__init__(n_classes, input_shape, **kw)
        if method not in ("mv", "ds"):
            raise ValueError(f"two-stage method must be 'mv' or 'ds', got {method!r}")
        self.method = method

    def _fit(self, data: CrowdData) -> None:
        C = self.n_classes
        df = pd.DataFrame({"task": data.rows.cpu().numpy(), "worker": data.workers.cpu().numpy(),
                           "label": data.labels.cpu().numpy()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agg = (MajorityVote() if self.method == "mv" else DawidSkene(n_iter=100)).fit(df)
        if agg.probas_ is None:  # crowd-kit types it Optional; fit always sets it
            raise RuntimeError(f"crowd-kit's {type(agg).__name__}.fit left probas_ unset")
        probas = agg.probas_.reindex(index=range(data.n_items), columns=range(C), fill_value=0.0).to_numpy()
        rho = torch.as_tensor(probas / probas.sum(1, keepdims=True), dtype=torch.float32, device=self.torch_device)
        y = rho.argmax(1)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self.model.train()
        self.loss_history_ = train_minibatches(
            opt, self.n_epochs_for(data.n_items), self.epoch_batches(data.n_items),
            lambda b, _epoch: torch.nn.functional.cross_entropy(self.model(data.X[b]), y[b]))
        self.posteriors_ = rho.cpu().numpy()
        self.confusion_matrices_ = confusions_from_posteriors(data, rho, C, prior=self._prior).cpu().numpy()
