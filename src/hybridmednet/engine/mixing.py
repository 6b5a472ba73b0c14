"""Mixup and CutMix on a normalised batch.

Draws use torch's global generator, whose state ``last`` checkpoints save, so a resumed run
mixes exactly as an uninterrupted one. The partner of each case is a random permutation of the
batch; CutMix's ``lam`` is corrected to the box's true area after clipping at the border.
"""

from __future__ import annotations

import torch


def mix_batch(x: torch.Tensor, y: torch.Tensor, cfg) -> tuple[torch.Tensor, tuple[torch.Tensor, float] | None]:
    """``(mixed x, (partner targets, lam))``, or ``(x, None)`` for a batch left unmixed."""
    if torch.rand(()) >= cfg.prob:
        return x, None
    modes = [m for m, a in (("mixup", cfg.mixup_alpha), ("cutmix", cfg.cutmix_alpha)) if a > 0]
    mode = modes[int(torch.randint(len(modes), ()))] if len(modes) > 1 else modes[0]
    alpha = cfg.mixup_alpha if mode == "mixup" else cfg.cutmix_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(len(x), device=x.device)
    if mode == "mixup":
        return lam * x + (1 - lam) * x[order], (y[order], lam)
    h, w = x.shape[-2:]
    cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[order][..., top:bottom, left:right]
    lam = 1 - (bottom - top) * (right - left) / (h * w)
    return mixed, (y[order], lam)


def mixed_loss(task_loss, out, y: torch.Tensor, mixed, aux: dict | None) -> torch.Tensor:
    """The task loss of a batch: plain, or ``lam L(y_a) + (1 - lam) L(y_b)`` for a mixed one (any
    task loss). The model's own auxiliary terms (prototype losses ...) are computed once, on the
    first targets, and added in full, so a prototype head's momentum update runs once per step."""
    if mixed is None:
        return task_loss(out, y, aux)[0]
    y_b, lam = mixed
    loss = lam * task_loss(out, y, None)[0] + (1 - lam) * task_loss(out, y_b, None)[0]
    return task_loss.combine(loss, aux)
