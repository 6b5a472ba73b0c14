"""Optimizers (AdamW, fused where the build supports it; Adam; SGD with momentum / Nesterov) and
learning-rate schedules stepped per optimizer step (warm-up + cosine, step decay, cosine with
warm restarts, one-cycle) or per epoch on the val score (reduce-on-plateau).

Every schedule is a torch scheduler with a ``state_dict``, so ``--resume`` restores its position.
No weight decay on biases and norm parameters (1-D tensors), as is standard.
"""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "step", "cosine_restarts", "onecycle", "plateau")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm parameters (1-D tensors), as is standard."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device,
                    backbone_lr_scale: float = 1.0, *, name: str = "adamw", momentum: float = 0.9,
                    nesterov: bool = False) -> torch.optim.Optimizer:
    """``backbone_lr_scale != 1`` gives pretrained layers a smaller LR than new ones (finetune.py)."""
    if backbone_lr_scale != 1.0:
        from hybridmednet.engine.finetune import param_groups_with_lr

        groups = param_groups_with_lr(model, lr, backbone_lr_scale, weight_decay)
    else:
        groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    try:
        return cls(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # a device/dtype without a fused kernel
        return cls(groups, lr=lr)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up from ~0, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_step(warmup_steps: int, step_size: int, gamma: float):
    """Linear warm-up, then the LR times ``gamma`` every ``step_size`` steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return gamma ** ((step - warmup_steps) // max(1, step_size))

    return factor


def warmup_restarts(warmup_steps: int, cycle_steps: int, min_ratio: float):
    """Linear warm-up, then cosine cycles of ``cycle_steps`` restarting at the full LR (SGDR)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = ((step - warmup_steps) % max(1, cycle_steps)) / max(1, cycle_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer, total_steps: int, warmup_steps: int, min_ratio: float, *, name: str = "cosine",
                    steps_per_epoch: int = 1, step_epochs: float = 10.0, gamma: float = 0.1,
                    restart_epochs: float = 10.0, plateau_patience: int = 3, plateau_factor: float = 0.5):
    """The schedule; ``plateau`` is stepped per epoch with the val score (``scheduler.step(score)``),
    every other one per optimizer step."""
    lr_schedule = torch.optim.lr_scheduler
    if name == "cosine":
        return lr_schedule.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps, min_ratio))
    if name == "step":
        return lr_schedule.LambdaLR(optimizer, warmup_step(warmup_steps, int(step_epochs * steps_per_epoch), gamma))
    if name == "cosine_restarts":
        return lr_schedule.LambdaLR(optimizer, warmup_restarts(warmup_steps, int(restart_epochs * steps_per_epoch),
                                                               min_ratio))
    if name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return lr_schedule.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(total_steps, 1),
                                      pct_start=min(max(warmup_steps / max(total_steps, 1), 0.01), 0.99),
                                      final_div_factor=1 / max(min_ratio, 1e-4) / 25)
    if name == "plateau":
        return lr_schedule.ReduceLROnPlateau(optimizer, mode="max", factor=plateau_factor, patience=plateau_patience,
                                             min_lr=[g["lr"] * min_ratio for g in optimizer.param_groups])
    raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")


def steps_per_epoch_schedule(scheduler) -> bool:
    """Whether the trainer steps this scheduler after every optimizer step (else once per epoch)."""
    return not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
