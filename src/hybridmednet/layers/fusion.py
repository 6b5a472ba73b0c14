"""Input-dependent fusion of same-shaped feature maps (e.g. the CNN and transformer branches
of a hybrid model).

A fixed sum or concatenation weighs every branch the same for every image; here a small MLP
looks at all branches' global descriptors and decides, per image and per channel, how much of
each branch to keep (selective-kernel style, Li et al. 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridmednet.layers.attention import bottleneck_width

__all__ = ["AdaptiveFusion"]


def _as_tuple(inputs: tuple) -> tuple[torch.Tensor, ...]:
    """Accept ``f(a, b, c)`` and ``f([a, b, c])`` alike."""
    if len(inputs) == 1 and isinstance(inputs[0], Sequence):
        return tuple(inputs[0])
    return tuple(inputs)


class AdaptiveFusion(nn.Module):
    """Weighted sum of ``num_inputs`` maps ``(B, C, H, W)`` with per-sample, per-channel weights.

    Each input is global-average-pooled to ``(B, C)``; the descriptors are concatenated and a
    two-layer MLP (hidden width ``bottleneck_width(num_inputs * channels, reduction)``) gives
    ``num_inputs`` logits per channel, softmaxed across the inputs. Per channel rather than per
    sample because branches tend to specialise by channel (one branch's texture channels, the
    other's shape channels); per-sample weighting is the special case of equal rows.

    The MLP's last layer is zero-initialised, so fusion starts as the plain mean of the inputs
    and moves away from it only as far as training asks. ``last_weights`` keeps the weights of
    the last forward, ``(B, num_inputs, C)``, detached, summing to 1 over inputs.

    ``forward(*inputs)`` takes the maps as separate arguments or as one list.
    """

    def __init__(self, channels: int, num_inputs: int = 2, reduction: int = 8):
        super().__init__()
        if num_inputs < 2:
            raise ValueError(f"num_inputs must be >= 2, got {num_inputs}")
        self.channels = channels
        self.num_inputs = num_inputs
        hidden = bottleneck_width(num_inputs * channels, reduction)
        self.mlp = nn.Sequential(nn.Linear(num_inputs * channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_inputs * channels))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.last_weights: torch.Tensor | None = None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        maps = _as_tuple(inputs)
        if len(maps) != self.num_inputs:
            raise ValueError(f"expected {self.num_inputs} inputs, got {len(maps)}")
        descriptors = torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)  # (B, n*C)
        logits = self.mlp(descriptors).reshape(-1, self.num_inputs, self.channels)
        weights = logits.float().softmax(dim=1)  # fp32 so the weights sum to 1 under autocast too
        self.last_weights = weights.detach()
        # A running sum of per-input products: no (B, n, C, H, W) stack, and each product keeps
        # the input's dtype and memory format (the stacked form was ~10x slower on CPU in bf16).
        out = maps[0] * weights[:, 0, :, None, None].to(maps[0].dtype)
        for i in range(1, self.num_inputs):
            out = out + maps[i] * weights[:, i, :, None, None].to(maps[i].dtype)
        return out
