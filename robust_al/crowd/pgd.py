"""Batched L-inf PGD in plain torch, run on the live model inside the training loop.

Same iterates as ART's ProjectedGradientDescentPyTorch (NOTES.md: identical output) at a fraction of the cost
for training-size batches; ``pipelines/bench_lfc.py`` measures both on the same batch.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def pgd(model: torch.nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], eps: float,
        steps: int = 10, step_size: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """x' = argmax_{||x' - x||_inf <= eps, x' in [0, 1]} loss_fn(model(x')) by ``steps`` signed-gradient steps
    of ``step_size`` (default eps/4) from a uniform random start in the ball (Madry et al. 2018).

    The model is put in eval mode for the attack (no dropout noise in the gradient) and restored after.
    """
    step_size = eps / 4 if step_size is None else step_size
    was_training = model.training
    model.eval()
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        x_adv = (x + (2 * noise - 1) * eps).clamp(0.0, 1.0)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv))
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    model.train(was_training)
    return x_adv.detach()
