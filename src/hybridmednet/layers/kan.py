"""Kolmogorov-Arnold network layers (Liu et al. 2024) in plain PyTorch.

A KAN layer learns one univariate function per (input, output) edge and sums them:
``y_j = sum_i w_base[j, i] * silu(x_i) + sum_i sum_b w_spline[j, i, b] * B_b(x_i)``.
Two families of basis functions ``B_b``:

- ``"spline"``: B-splines of order ``spline_order`` on a fixed uniform grid of ``grid_size``
  intervals over ``grid_range`` (extended by ``spline_order`` knots each side), evaluated by the
  Cox-de Boor recursion, as in efficient-KAN. ``grid_size + spline_order`` bases per input.
- ``"rbf"``: Gaussian radial basis functions centred on ``grid_size`` evenly spaced points over
  ``grid_range`` with width equal to their spacing, as in FastKAN.

The grid is fixed (no grid refinement), so inputs should be roughly inside ``grid_range``: the
heads put a LayerNorm in front. Outside the range the spline bases vanish and only the SiLU
base branch remains. Everything is elementwise arithmetic and matmuls, so it exports to ONNX.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.errors import ConfigError

KAN_BASES = ("spline", "rbf")


def bspline_bases(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """B-spline bases of ``order`` at ``x`` (..., ) on increasing ``knots`` (G,): shape (..., G - 1 - order)."""
    x = x.unsqueeze(-1)
    bases = ((x >= knots[:-1]) & (x < knots[1:])).to(x.dtype)
    for k in range(1, order + 1):
        left = (x - knots[:-(k + 1)]) / (knots[k:-1] - knots[:-(k + 1)]) * bases[..., :-1]
        right = (knots[k + 1:] - x) / (knots[k + 1:] - knots[1:-k]) * bases[..., 1:]
        bases = left + right
    return bases


def rbf_bases(x: torch.Tensor, centers: torch.Tensor, width: float) -> torch.Tensor:
    """Gaussian bases ``exp(-((x - c) / width)^2)`` at ``x`` (...,): shape (..., len(centers))."""
    return torch.exp(-(((x.unsqueeze(-1) - centers) / width) ** 2))


class KANLinear(nn.Module):
    """One KAN layer ``in_features -> out_features``: SiLU base branch plus learned basis expansions."""

    def __init__(self, in_features: int, out_features: int, basis: str = "spline", grid_size: int = 5,
                 spline_order: int = 3, grid_range: tuple[float, float] = (-1.0, 1.0), base_activation: bool = True,
                 init_scale: float = 0.1):
        super().__init__()
        if basis not in KAN_BASES:
            raise ConfigError(f"KAN basis {basis!r} is unknown; choose from {', '.join(KAN_BASES)}")
        lo, hi = float(grid_range[0]), float(grid_range[1])
        if not hi > lo or grid_size < 1:
            raise ConfigError(f"KAN grid needs grid_range low < high and grid_size >= 1, got {grid_range}, {grid_size}")
        self.in_features, self.out_features, self.basis = in_features, out_features, basis
        self.spline_order = spline_order
        if basis == "spline":
            step = (hi - lo) / grid_size
            knots = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32) * step + lo
            self.register_buffer("grid", knots)
            self.num_bases = grid_size + spline_order
            self.width = step
        else:
            self.register_buffer("grid", torch.linspace(lo, hi, grid_size))
            self.num_bases = grid_size
            self.width = (hi - lo) / max(grid_size - 1, 1)
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features)) if base_activation else None
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features * self.num_bases))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.reset_parameters(init_scale)

    def reset_parameters(self, init_scale: float = 0.1) -> None:
        if self.base_weight is not None:
            nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        # small random spline coefficients: the layer starts close to its SiLU base branch
        nn.init.normal_(self.spline_weight, std=init_scale / math.sqrt(self.in_features))
        nn.init.zeros_(self.bias)

    def bases(self, x: torch.Tensor) -> torch.Tensor:
        """Basis values (B, in_features, num_bases) for inputs (B, in_features)."""
        if self.basis == "spline":
            return bspline_bases(x, self.grid, self.spline_order)
        return rbf_bases(x, self.grid, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(self.bases(x).flatten(1), self.spline_weight, self.bias)
        if self.base_weight is not None:
            out = out + F.linear(F.silu(x), self.base_weight)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, basis={self.basis}, num_bases={self.num_bases}"
