"""Selective state-space (Mamba / S6) mixing in pure PyTorch, and its bidirectional (Vim) block.

Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"; Zhu et al.
2024, "Vision Mamba" (Vim). No CUDA kernel: the scan is written with ordinary tensor ops, so it
runs on CPU, trains with autograd and exports to ONNX.

The recurrence, per channel ``d`` and state ``n`` (``A = -exp(A_log)``, diagonal)::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = <C_t, h_t> + D * u_t

The scan (:func:`selective_scan`) steps over tokens in a Python loop. For the short sequences
this package sees (49-196 patch tokens) that is the fast choice on CPU: each step is a few
element-wise ops on a ``(batch, D, N)`` slab that stays in cache, so the loop is memory-bound,
not Python-bound, and a loop over a fixed sequence length unrolls under ONNX tracing. Measured
on 1 CPU thread, ``vision_mamba_tiny`` at 28 px, batch 64, forward+backward: this loop ~41 img/s;
the same loop over pre-materialised ``(batch, L, D, N)`` decay/drive tensors ~16 img/s; a
chunked parallel scan (decay-weighted sums within 4-token chunks from cumulative log-decays,
a loop across chunks) ~1.5 img/s, because it does ``chunk`` times the memory traffic. Parallel
scans pay off on GPUs, where the bandwidth is; a fused kernel is what the paper uses there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor) -> torch.Tensor:
    """``u, delta``: (batch, L, D); ``A``: (D, N); ``B, C``: (batch, L, N); ``D``: (D,) -> (batch, L, D)."""
    # Per-step slabs are built inside the loop: a (batch, D, N) slab stays in cache, whereas
    # materialising the (batch, L, D, N) decay and drive tensors first streams L times that
    # through memory, which measured 2.5x slower on CPU. ``unbind`` (not indexing) keeps
    # backward linear in L: indexing's backward writes a full-size zero tensor per step.
    steps = zip(delta.unsqueeze(-1).unbind(1), (delta * u).unsqueeze(-1).unbind(1), B.unsqueeze(2).unbind(1),
                C.unsqueeze(2).unbind(1))
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for delta_t, du_t, B_t, C_t in steps:  # (batch, D, 1), (batch, D, 1), (batch, 1, N), (batch, 1, N)
        h = torch.exp(delta_t * A) * h + du_t * B_t
        ys.append((h * C_t).sum(-1))  # (batch, D); mul+sum measured 2x faster than a bmm here
    return torch.stack(ys, dim=1) + u * D


class SelectiveSSM(nn.Module):
    """One direction of S6: causal depthwise conv, input-dependent delta/B/C, scan, D skip.

    Maps ``(batch, L, d_inner)`` to ``(batch, L, d_inner)``; the input/output projections and
    the SiLU(z) gate live in :class:`BiMambaMixer`, shared by both directions.
    """

    def __init__(self, d_inner: int, d_state: int = 16, d_conv: int = 4, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_inner / 32)  # = ceil(d_model / 16) for expand 2
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, padding=d_conv - 1, groups=d_inner)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        # delta starts log-uniform in [dt_min, dt_max] (Mamba's init): bias = softplus^-1(dt)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real: A_n = -(n + 1), the same for every channel
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        x = self.conv1d(x.transpose(1, 2))[..., :L].transpose(1, 2)  # causal: keep the first L outputs
        x = F.silu(x)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log.float())
        # the scan runs in fp32 even under autocast: a bf16 state loses precision over the steps
        with torch.autocast(x.device.type, enabled=False):
            return selective_scan(x.float(), delta.float(), A, B.float(), C.float(), self.D.float())


class BiMambaMixer(nn.Module):
    """Vim's bidirectional Mamba mixer: shared in/out projections, one SSM per scan direction.

    The backward SSM reads the flipped token sequence; the two outputs are averaged, gated by
    SiLU(z) and projected back to ``dim``.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        d_inner = expand * dim
        dt_rank = math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.forward_ssm = SelectiveSSM(d_inner, d_state, d_conv, dt_rank)
        self.backward_ssm = SelectiveSSM(d_inner, d_state, d_conv, dt_rank)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=-1)
        y = self.forward_ssm(x) + self.backward_ssm(x.flip(1)).flip(1)
        return self.out_proj((0.5 * y).to(z.dtype) * F.silu(z))


class BiMambaBlock(nn.Module):
    """Pre-norm residual block: ``x + drop_path(mixer(norm(x)))`` on ``(batch, L, dim)`` tokens."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, drop_path: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = BiMambaMixer(dim, d_state, d_conv, expand)
        from timm.layers import DropPath  # stochastic depth, imported lazily: timm pulls in torchvision

        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mixer(self.norm(x)))
