"""EM with a neural classifier (AggNet), its adversarial version A-LFC, and MALC.

All three keep per-worker confusion matrices Pi and label posteriors rho and alternate, per minibatch
(A-LFC Algorithm 1): a gradient step on the network (M-step for theta), the closed-form Pi (A-LFC eq. 6),
and the posteriors of the batch's items (A-LFC eq. 7). rho starts from majority vote. Everything stays on
the model's device; adversarial batches are made on the live model with :func:`robust_al.crowd.pgd.pgd`.
"""
from __future__ import annotations

import torch

from robust_al.crowd.base import (CrowdData, CrowdLearner, confusions_from_posteriors, crowd_likelihood,
                                  majority_posteriors, soft_cross_entropy)
from robust_al.crowd.network import train_minibatches
from robust_al.crowd.pgd import pgd


def cl_pm(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CLIRAT eq. 7, the confused-label probability margin of each row.

    Correctly classified: p_y - max_{j != y} p_j (the PM of eq. 5). Misclassified: sum over the confused
    labels j (those with p_j > p_y) of (p_y - p_j), so several confused labels count more than one.
    """
    p_y = probs.gather(1, y[:, None])
    others = probs.scatter(1, y[:, None], -1.0)
    correct = probs.argmax(dim=1) == y
    pm = p_y[:, 0] - others.max(dim=1).values
    confused = (p_y - probs).clamp(max=0.0).sum(dim=1)  # only j with p_j > p_y contribute
    return torch.where(correct, pm, confused)


def cl_pm_weights(probs: torch.Tensor, y: torch.Tensor, gamma: float = 10.0, beta: float = -0.5) -> torch.Tensor:
    """omega_i = m * sigmoid(gamma (beta - CL-PM_i)) / sum_j sigmoid(...) (CLIRAT Algorithm 1): riskier
    examples (smaller margin) weigh more; the weights of a batch sum to its size."""
    w = torch.sigmoid(gamma * (beta - cl_pm(probs, y)))
    return len(w) * w / w.sum().clamp_min(1e-12)


def misclassification_weight(probs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MALC's mu_i = p(f(x_i) != z_i) = 1 - p_{z_i}(x_i)."""
    return 1.0 - probs.gather(1, z[:, None])[:, 0]


class NeuralEM(CrowdLearner):
    """AggNet / neural EM (alpha = 1) and A-LFC (alpha < 1).

    M-step loss (A-LFC eq. 4-5): alpha * E_rho CE(f(x)) + (1 - alpha) * E_rho CE(f(x')), where x' maximizes
    E_rho CE(f(x')) over the eps-ball (eq. 3) by PGD (random start, ``pgd_steps`` steps of eps/4).
    E-step (eq. 7): rho_i(k) ∝ prod_j pi^(j)_{k, y_ij} * (alpha p(k|x_i) + (1 - alpha) p(k|x'_i)).
    With ``reweight='cl-pm'`` the adversarial term is weighted by CLIRAT's CL-PM weights after
    ``warmup`` epochs (weights 1 before).
    """

    def __init__(self, n_classes, input_shape, alpha: float = 1.0, eps: float = 8 / 255, pgd_steps: int = 10,
                 reweight: str | None = None, gamma: float = 10.0, beta: float = -0.5, warmup: int | None = None,
                 **kw):
        super().__init__(n_classes, input_shape, **kw)
        if reweight not in (None, "cl-pm"):
            raise ValueError(f"reweight must be None or 'cl-pm', got {reweight!r}")
        self.alpha, self.eps, self.pgd_steps = alpha, eps, pgd_steps
        self.reweight, self.gamma, self.beta = reweight, gamma, beta
        self.warmup = warmup

    @property
    def warmup_epochs(self) -> int:
        """``warmup``, by default 0.625 x epochs (CLIRAT: 75 of 120)."""
        return int(0.625 * self.epochs) if self.warmup is None else self.warmup

    @property
    def adversarial(self) -> bool:
        return self.alpha < 1.0

    def _end_epoch(self, data: CrowdData) -> None:
        """Hook for per-epoch bookkeeping of subclasses."""

    def _weights(self, logits_adv: torch.Tensor, rho: torch.Tensor, epoch: int) -> torch.Tensor | None:
        if self.reweight is None or epoch < self.warmup_epochs:
            return None
        return cl_pm_weights(torch.softmax(logits_adv.detach(), 1), rho.argmax(1), self.gamma, self.beta)

    def _attack(self, xb: torch.Tensor, rho_b: torch.Tensor) -> torch.Tensor:
        return pgd(self.model, xb, lambda logits: soft_cross_entropy(logits, rho_b), self.eps, self.pgd_steps,
                   generator=self._pgd_gen)

    def _loss(self, xb, x_adv, rho_b, epoch):
        logits = self.model(xb)
        loss = self.alpha * soft_cross_entropy(logits, rho_b)
        if x_adv is not None:
            logits_adv = self.model(x_adv)
            loss = loss + (1 - self.alpha) * soft_cross_entropy(logits_adv, rho_b,
                                                                self._weights(logits_adv, rho_b, epoch))
        return loss

    def _fit(self, data: CrowdData) -> None:
        C = self.n_classes
        self._pgd_gen = torch.Generator(device="cpu").manual_seed(self.seed + 1)
        rho = majority_posteriors(data, C)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        adv: dict[str, torch.Tensor | None] = {}  # this batch's adversarial examples, for the E-step

        def loss(b, epoch):
            xb, rho_b = data.X[b], rho[b]
            adv["x"] = self._attack(xb, rho_b) if self.adversarial else None
            self.model.train()
            return self._loss(xb, adv["x"], rho_b, epoch)

        @torch.no_grad()
        def e_step(b, _epoch):
            pi = confusions_from_posteriors(data, rho, C, prior=self._prior)  # eq. 6
            self.model.eval()
            prior = self.alpha * torch.softmax(self.model(data.X[b]), 1)
            if adv["x"] is not None:
                prior = prior + (1 - self.alpha) * torch.softmax(self.model(adv["x"]), 1)
            log_post = crowd_likelihood(data, pi, b) + torch.log(prior.clamp_min(1e-12))  # eq. 7
            rho[b] = torch.softmax(log_post, dim=1)

        self.loss_history_ = train_minibatches(opt, self.n_epochs_for(data.n_items), self.epoch_batches(data.n_items),
                                               loss, e_step, lambda _e, _loss: self._end_epoch(data), self.progress,
                                               type(self).__name__)
        self.posteriors_ = rho.cpu().numpy()
        self.confusion_matrices_ = confusions_from_posteriors(data, rho, C, prior=self._prior).cpu().numpy()


class AggNet(NeuralEM):
    """EM with a neural classifier (Albarqouni & Baur 2016): NeuralEM without adversarial examples."""

    def __init__(self, n_classes, input_shape, **kw):
        kw.setdefault("alpha", 1.0)
        super().__init__(n_classes, input_shape, **kw)


class ALFC(NeuralEM):
    """A-LFC (Chen et al. 2022): alpha = 0.5, training eps 8/255, PGD-10 with random start."""

    def __init__(self, n_classes, input_shape, **kw):
        kw.setdefault("alpha", 0.5)
        super().__init__(n_classes, input_shape, **kw)


class MALC(NeuralEM):
    """MALC (eq. 4): min CE(f(x'), z) + lambda * KL(f(x) || f(x')) * mu_i, mu_i = 1 - p_z(x_i), where x'
    maximizes KL(f(x) || f(x')) in the eps-ball and z is the label estimated from the crowd (argmax rho).
    Misclassified items (f(x) != z) thus weigh most in the robustness term; correctly classified ones little.
    Same EM over confusion matrices and posteriors as A-LFC (eq. 6, eq. 7 with ``alpha``).
    Fitted extra: ``misclassified_share_`` per epoch (|X^-| / N, eq. 2).
    """

    def __init__(self, n_classes, input_shape, lam: float = 6.0, **kw):
        kw.setdefault("alpha", 0.5)
        super().__init__(n_classes, input_shape, **kw)
        self.lam = lam

    @property
    def adversarial(self) -> bool:
        return True

    def _attack(self, xb, rho_b):
        with torch.no_grad():
            self.model.eval()
            p_nat = torch.softmax(self.model(xb), 1)

        def kl(logits_adv):
            return (p_nat * (torch.log(p_nat.clamp_min(1e-12)) - torch.log_softmax(logits_adv, 1))).sum()

        return pgd(self.model, xb, kl, self.eps, self.pgd_steps, generator=self._pgd_gen)

    def _loss(self, xb, x_adv, rho_b, epoch):
        z = rho_b.argmax(1)
        logits, logits_adv = self.model(xb), self.model(x_adv)
        p_nat = torch.softmax(logits, 1)
        mu = misclassification_weight(p_nat, z)
        kl = (p_nat * (torch.log(p_nat.clamp_min(1e-12)) - torch.log_softmax(logits_adv, 1))).sum(1)
        w = self._weights(logits_adv, rho_b, epoch)
        ce = torch.nn.functional.cross_entropy(logits_adv, z, reduction="none")
        ce = ce.mean() if w is None else (w * ce).sum() / w.sum()
        self._misclassified += int((p_nat.argmax(1) != z).sum())
        return ce + self.lam * (kl * mu).mean()

    def _fit(self, data):
        self.misclassified_share_: list[float] = []
        self._misclassified = 0
        super()._fit(data)

    def _end_epoch(self, data) -> None:
        self.misclassified_share_.append(self._misclassified / data.n_items)
        self._misclassified = 0
