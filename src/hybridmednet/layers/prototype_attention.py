"""Mixed attention between a prototype classifier's prototypes and an image's feature tokens.

The multi-prototype design the head follows reads an image through its prototypes, not only
through global pooling. Three streams, each a (B, D) embedding, are fused by a learned per-case
softmax gate (its last value is kept in ``last_gate`` for inspection):

- *pooled*: the plain average of the feature tokens (what the head uses without this block);
- *local*: windowed self-attention among the tokens (non-overlapping ``window x window`` windows
  of the feature map, or runs of ``window**2`` tokens for a token sequence; padded positions are
  masked), then averaged: local context without the quadratic cost of global attention;
- *cross*: the prototypes, first refined by self-attention among themselves (so a class's
  prototypes see each other and their rivals), query the tokens; the mean of what the active
  prototypes read is the embedding. Its attention over the tokens, averaged over prototypes and
  heads, is ``last_attention`` (B, H, W): where in the image the prototypes looked.

Inactive prototype slots (see :class:`~hybridmednet.layers.prototype.PrototypeClassifier`) are
masked out of both prototype attentions, so activating a slot later changes nothing until then.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.errors import ConfigError


def window_partition(tokens: torch.Tensor, grid: tuple[int, int] | None, window: int):
    """Split (B, N, D) tokens into windows: returns (B * n_windows, w, D), a padding mask
    (B * n_windows, w) that is True on padded positions, and the window count per image.

    With a ``grid`` (H, W) the windows are ``window x window`` squares of the map; without one,
    runs of ``window**2`` consecutive tokens."""
    b, n, d = tokens.shape
    if grid is None:
        size = window * window
        pad = (size - n % size) % size  # no negative operands: they trace to C-style ops in ONNX
        x = F.pad(tokens, (0, 0, 0, pad))
        mask = torch.zeros(n + pad, dtype=torch.bool, device=tokens.device)
        mask[n:] = True
        count = (n + pad) // size
        return x.reshape(b * count, size, d), mask.reshape(count, size).repeat(b, 1), count
    h, w = grid
    ph, pw = (window - h % window) % window, (window - w % window) % window
    x = F.pad(tokens.reshape(b, h, w, d), (0, 0, 0, pw, 0, ph))
    mask = torch.zeros(h + ph, w + pw, dtype=torch.bool, device=tokens.device)
    mask[h:, :] = True
    mask[:, w:] = True
    nh, nw = (h + ph) // window, (w + pw) // window
    x = x.reshape(b, nh, window, nw, window, d).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, window * window, d)
    mask = mask.reshape(nh, window, nw, window).permute(0, 2, 1, 3).reshape(nh * nw, window * window)
    return x, mask.repeat(b, 1), nh * nw


class PrototypeMixedAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4, window: int = 4, drop_rate: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"prototype mixed attention: embedding size {dim} is not divisible by "
                              f"attention_heads={heads}; choose a divisor of {dim} (or set proj_dim)")
        if window < 1:
            raise ConfigError(f"prototype mixed attention: window must be >= 1, got {window}")
        self.window = window
        self.norm_tokens, self.norm_protos = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.local = nn.MultiheadAttention(dim, heads, dropout=drop_rate, batch_first=True)
        self.proto_self = nn.MultiheadAttention(dim, heads, dropout=drop_rate, batch_first=True)
        self.cross = nn.MultiheadAttention(dim, heads, dropout=drop_rate, batch_first=True)
        self.gate = nn.Linear(3 * dim, 3)
        self.last_gate: torch.Tensor | None = None
        self.last_attention: torch.Tensor | None = None

    def local_tokens(self, tokens: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        """Tokens after windowed self-attention (residual), padded positions dropped: (B, N, D)."""
        windows, mask, _ = window_partition(self.norm_tokens(tokens), grid, self.window)
        attended = self.local(windows, windows, windows, key_padding_mask=mask, need_weights=False)[0]
        b, n, d = tokens.shape
        if grid is None:
            return tokens + attended.reshape(b, -1, d)[:, :n]
        h, w = grid
        nh, nw = (h + self.window - 1) // self.window, (w + self.window - 1) // self.window
        full = attended.reshape(b, nh, nw, self.window, self.window, d).permute(0, 1, 3, 2, 4, 5)
        return tokens + full.reshape(b, nh * self.window, nw * self.window, d)[:, :h, :w].reshape(b, n, d)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None, prototypes: torch.Tensor,
                active: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, N, D), ``grid`` (H, W) of a feature map or None, ``prototypes`` (P, D) and
        their ``active`` mask (P,); returns the fused (B, D) embedding."""
        b = tokens.shape[0]
        pooled = tokens.mean(1)
        local = self.local_tokens(tokens, grid).mean(1)
        inactive = ~active.unsqueeze(0)  # (1, P): masked as keys
        p = self.norm_protos(prototypes.to(tokens.dtype)).unsqueeze(0)
        p = p + self.proto_self(p, p, p, key_padding_mask=inactive, need_weights=False)[0]
        normed = self.norm_tokens(tokens)
        read, weights = self.cross(p.expand(b, -1, -1), normed, normed, need_weights=True)  # (B, P, D), (B, P, N)
        keep = active.to(read.dtype).view(1, -1, 1)
        cross = (read * keep).sum(1) / keep.sum(1).clamp_min(1)
        where = (weights * keep).sum(1) / keep.sum(1).clamp_min(1)  # (B, N)
        self.last_attention = where.detach().reshape(b, *grid) if grid is not None else None
        gate = torch.softmax(self.gate(torch.cat([pooled, local, cross], dim=-1)), dim=-1)
        self.last_gate = gate.detach()
        return gate[:, :1] * pooled + gate[:, 1:2] * local + gate[:, 2:] * cross
