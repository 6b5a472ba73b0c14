"""Exponential moving average of weights, via ``torch.optim.swa_utils.AveragedModel``.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so early averages are not dominated by
the random initialisation (short CPU runs have only a few thousand steps).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def _ema_update(decay: float):
    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = int(num_averaged.item()) if torch.is_tensor(num_averaged) else int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1 - d)
        else:  # integer buffers such as BatchNorm's num_batches_tracked: follow the model
            torch._foreach_copy_(ema_params, params)

    return update


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    return AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=True)
