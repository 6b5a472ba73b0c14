"""Attention blocks for NCHW feature maps: CBAM, 2-D self-attention and two cross-attentions.

Every block takes and returns ``(B, C, H, W)`` tensors and keeps the input's spatial size, so it
can be dropped between any two stages of a CNN. They are written with plain ops (no
``nn.MultiheadAttention``) so they trace to ONNX opset 17 and run under bf16 autocast.

Which one to use:

* :class:`CBAM` - cheap (a few hundred parameters per stage), reweights channels then
  positions; safe anywhere.
* :class:`MultiHeadSelfAttention2d` - global context at every position, O((HW)^2) memory; for
  the last, low-resolution stages only.
* :class:`CrossScaleAttention` - queries at full resolution, keys/values pooled to at most
  ``kv_size x kv_size`` tokens: global context with memory O(HW * kv_size^2), so usable on
  high-resolution maps and for mixing two scales.
* :class:`CrossBranchAttention` - SAGAN-style attention from one branch into another, starting
  as the identity (``gamma = 0``) so it can be added to a pretrained two-branch model.

Blocks built with ``store_attention=True`` keep their last attention map in
``last_attention`` (detached, fp32) for explanations; that path materialises the full attention
matrix instead of calling the fused ``scaled_dot_product_attention`` kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.layers.pooling import pool_to

__all__ = ["CBAM", "CrossBranchAttention", "CrossScaleAttention", "MultiHeadSelfAttention2d",
           "bottleneck_width", "channel_pool"]


def bottleneck_width(channels: int, reduction: int) -> int:
    """Hidden width of a squeeze-excite style MLP: ``channels // reduction``, but at least 8
    (or ``channels`` when that is smaller), so narrow stages do not end up with a 1-unit
    bottleneck that a single dead ReLU switches off."""
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}")
    return max(channels // reduction, min(channels, 8))


def channel_pool(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 2, H, W)``: channel mean and channel max, the two "where is there
    signal" maps that CBAM-style spatial attention convolves."""
    return torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)


def _split_heads(tokens: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, N, C) -> (B, heads, N, C // heads)``."""
    b, n, c = tokens.shape
    return tokens.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, heads, N, d) -> (B, N, heads * d)``."""
    b, h, n, d = tokens.shape
    return tokens.transpose(1, 2).reshape(b, n, h * d)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
            need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention over ``(B, heads, N, d)`` tensors.

    Uses the fused kernel unless the caller wants the weights, which the fused kernel never
    materialises; the explicit path computes the same function. Returned weights are
    ``(B, heads, Nq, Nk)`` before dropout.
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), None
    weights = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    attn = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return attn @ v, weights


def _check_heads(channels: int, num_heads: int) -> None:
    if num_heads < 1 or channels % num_heads:
        raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018).

    Channel attention first ("what": a shared MLP over the average- and max-pooled descriptors,
    summed, sigmoid), then spatial attention ("where": a ``spatial_kernel`` conv over the
    channel-mean and channel-max maps, sigmoid). Both gates multiply the input, so the block
    only ever attenuates features; it adds no residual of its own. Unlike the reference code the
    spatial conv has no BatchNorm, so the block behaves the same in train and eval mode and at
    batch size 1.
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7):
        super().__init__()
        if spatial_kernel % 2 == 0:
            raise ValueError(f"spatial_kernel must be odd to keep the spatial size, got {spatial_kernel}")
        hidden = bottleneck_width(channels, reduction)
        self.channel_mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                         nn.Conv2d(hidden, channels, 1))
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.channel_mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.channel_mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + peak)
        return x * torch.sigmoid(self.spatial_conv(channel_pool(x)))


class MultiHeadSelfAttention2d(nn.Module):
    """Pre-norm multi-head self-attention over the ``H * W`` positions of a feature map, with a
    residual: ``x + proj(attention(LayerNorm(x)))``.

    No positional encoding is added: the input comes from a CNN whose features already encode
    local structure and (through padding) position, and leaving it out keeps the block
    resolution-agnostic (no embedding to interpolate when the image size changes). The price is
    that the attention itself is permutation-equivariant: permuting pixels permutes the output.

    Memory is O(B * heads * (HW)^2); keep it to low-resolution stages (or use
    :class:`CrossScaleAttention`). ``dropout`` (training only) applies to the attention weights
    and to the output projection. With ``store_attention=True``, ``last_attention`` is
    ``(B, H, W)``: the attention each key position received, averaged over heads and queries
    (it sums to 1 over positions).
    """

    def __init__(self, channels: int, num_heads: int = 4, qkv_bias: bool = True, dropout: float = 0.0,
                 store_attention: bool = False):
        super().__init__()
        _check_heads(channels, num_heads)
        self.num_heads = num_heads
        self.dropout = dropout
        self.store_attention = store_attention
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(dropout)
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(self.norm(tokens)).chunk(3, dim=-1)
        out, weights = _attend(_split_heads(q, self.num_heads), _split_heads(k, self.num_heads),
                               _split_heads(v, self.num_heads), self.dropout if self.training else 0.0,
                               self.store_attention)
        if weights is not None:
            self.last_attention = weights.detach().float().mean(dim=(1, 2)).reshape(b, h, w)
        out = self.proj_drop(self.proj(_merge_heads(out)))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class CrossScaleAttention(nn.Module):
    """Attention from every position of a (high-resolution) query map into a pooled context map.

    Keys and values come from ``x_context`` (or from ``x_query`` itself when it is omitted,
    which gives spatial-reduction self-attention as in PVT), average-pooled to at most
    ``kv_size x kv_size`` tokens. The attention matrix is therefore ``HW x kv_size^2``: memory
    is O(HW * kv_size^2), linear in the query resolution, instead of O((HW)^2). A context with
    ``context_channels != channels`` is first projected by a 1x1 conv. Pre-norm on both sides
    and a residual on the query: ``x_query + proj(attention(...))``. No positional encoding (see
    :class:`MultiHeadSelfAttention2d`); ``dropout`` as there.

    With ``store_attention=True``, ``last_attention`` is ``(B, H*W, kh*kw)``, the head-averaged
    attention of every query position over the pooled context grid (``kh, kw <= kv_size``).

    ONNX: adaptive pooling exports only when the context's size is a multiple of ``kv_size``
    (or at most ``kv_size``), e.g. 14, 28 or 56 px for ``kv_size=7``; the exported graph is
    fixed to the traced context size.
    """

    def __init__(self, channels: int, num_heads: int = 4, kv_size: int = 7, context_channels: int | None = None,
                 qkv_bias: bool = True, dropout: float = 0.0, store_attention: bool = False):
        super().__init__()
        _check_heads(channels, num_heads)
        if kv_size < 1:
            raise ValueError(f"kv_size must be >= 1, got {kv_size}")
        self.num_heads = num_heads
        self.kv_size = kv_size
        self.dropout = dropout
        self.store_attention = store_attention
        needs_proj = context_channels is not None and context_channels != channels
        self.context_proj = nn.Conv2d(context_channels, channels, 1) if needs_proj else nn.Identity()
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels, bias=qkv_bias)
        self.kv = nn.Linear(channels, 2 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(dropout)
        self.last_attention: torch.Tensor | None = None

    def forward(self, x_query: torch.Tensor, x_context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x_query.shape
        context = x_query if x_context is None else self.context_proj(x_context)
        ch, cw = (int(v) for v in context.shape[-2:])
        context = pool_to(context, (min(ch, self.kv_size), min(cw, self.kv_size)))
        q = self.q(self.norm_q(x_query.flatten(2).transpose(1, 2)))
        k, v = self.kv(self.norm_kv(context.flatten(2).transpose(1, 2))).chunk(2, dim=-1)
        out, weights = _attend(_split_heads(q, self.num_heads), _split_heads(k, self.num_heads),
                               _split_heads(v, self.num_heads), self.dropout if self.training else 0.0,
                               self.store_attention)
        if weights is not None:
            self.last_attention = weights.detach().float().mean(dim=1)
        out = self.proj_drop(self.proj(_merge_heads(out)))
        return x_query + out.transpose(1, 2).reshape(b, c, h, w)


class CrossBranchAttention(nn.Module):
    """Non-local attention from branch A (``x``) into branch B (``context``), SAGAN-style
    (Zhang et al., 2019), as the product specifies.

    Query: 1x1 conv of ``x`` to ``max(1, channels // 8)`` channels; key: 1x1 conv of the context
    to the same width; value: 1x1 conv of the context to ``channels``. Softmax over key
    positions (no ``1/sqrt(d)`` scaling, as in SAGAN), then ``x + gamma * attended`` with a
    learnable scalar ``gamma`` initialised to 0: the block starts as the exact identity, so it
    can be inserted into a trained model without changing its output, and learns how much
    cross-branch context to let in.

    A context of another spatial size is resized to ``x``'s by adaptive average pooling (for a
    smaller context that replicates cells; ONNX export needs the context to be a whole multiple
    of ``x``'s size). ``context=None`` attends within ``x`` (plain SAGAN self-attention).
    Memory is O(B * (HW)^2): use it on low-resolution maps. With ``store_attention=True``,
    ``last_attention`` is ``(B, H, W)``: the attention each key position received, averaged
    over queries.
    """

    def __init__(self, channels: int, context_channels: int | None = None, store_attention: bool = False):
        super().__init__()
        self.channels = channels
        self.context_channels = context_channels or channels
        inner = max(1, channels // 8)
        self.store_attention = store_attention
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(self.context_channels, inner, 1)
        self.value = nn.Conv2d(self.context_channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            if self.context_channels != self.channels:
                raise ValueError("context is required when context_channels differs from channels")
            context = x
        b, c, h, w = x.shape
        context = pool_to(context, (h, w))
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, inner)
        k = self.key(context).flatten(2)  # (B, inner, HW)
        v = self.value(context).flatten(2)  # (B, C, HW)
        attn = torch.bmm(q, k).softmax(dim=-1)  # (B, HW queries, HW keys)
        if self.store_attention:
            self.last_attention = attn.detach().float().mean(dim=1).reshape(b, h, w)
        attended = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.gamma * attended
