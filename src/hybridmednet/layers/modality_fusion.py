"""Image + clinical fusion blocks, one registry behind ``model.multimodal.fusion``.

Every block takes the image tokens ``(B, N, D)`` and pooled vector ``(B, D)``, the clinical tokens
``(B, T, D)`` with their mask ``(B, T)`` (True = real token; every row has at least one) and pooled
vector ``(B, D)``, and returns one fused vector ``(B, out_dim)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.registry import Registry

__all__ = ["FUSIONS", "STAGE_FUSIONS", "JointAttentionFusion", "MultiLevelFusion", "SequenceFusion", "TokenAttention", "TransformerBlock",
           "create_fusion", "masked_mean"]

FUSIONS: Registry[Callable[..., nn.Module]] = Registry("fusion", "model.multimodal.fusion")


def register_fusion(name: str):
    return FUSIONS.register(name)


def create_fusion(name: str, dim: int, **kwargs) -> nn.Module:
    return FUSIONS.get(name)(dim, **kwargs)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class _Fusion(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim


@register_fusion("concat")
class ConcatFusion(_Fusion):
    """[image; clinical]: the baseline every other strategy must beat."""

    def __init__(self, dim: int, **_):
        super().__init__(dim, 2 * dim)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        return torch.cat([img_vec, txt_vec], dim=1)


@register_fusion("add")
class AddFusion(_Fusion):
    def __init__(self, dim: int, **_):
        super().__init__(dim, dim)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        return img_vec + txt_vec


@register_fusion("multiply")
class MultiplyFusion(_Fusion):
    """Element-wise product; the clinical vector acts as a per-channel gain on the image's."""

    def __init__(self, dim: int, **_):
        super().__init__(dim, dim)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        return img_vec * txt_vec


@register_fusion("gated")
class GatedFusion(_Fusion):
    """Gated multimodal unit (Arevalo et al. 2017): a learned per-channel mix of the two modalities."""

    def __init__(self, dim: int, **_):
        super().__init__(dim, dim)
        self.img, self.txt, self.gate = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(2 * dim, dim)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        z = torch.sigmoid(self.gate(torch.cat([img_vec, txt_vec], dim=1)))
        return z * torch.tanh(self.img(img_vec)) + (1 - z) * torch.tanh(self.txt(txt_vec))


class TokenAttention(nn.Module):
    """Multi-head attention of ``query`` over ``context`` tokens with a key mask (True = attend).

    Written with ``unflatten``/``flatten`` over the head dimension only, so an exported graph keeps
    batch and token counts dynamic (``nn.MultiheadAttention`` traces them into constants)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"model.multimodal: dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None):
        q = self.q(query).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.kv(context).chunk(2, dim=-1))
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).flatten(2))


class _Attend(nn.Module):
    """Pre-norm attention of ``query`` tokens over ``context`` tokens, with a residual."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, heads)

    def forward(self, query, context, context_mask=None):
        return query + self.attn(self.norm_q(query), self.norm_kv(context), context_mask)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP block (the scratch text encoder's layer)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2, drop: float = 0.1):
        super().__init__()
        self.attend = _Attend(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(drop), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attend(x, x, mask)
        return x + self.mlp(self.norm(x))


@register_fusion("cross_attention")
class CrossAttentionFusion(_Fusion):
    """Image tokens attend to the clinical tokens; the attended image tokens are pooled."""

    def __init__(self, dim: int, heads: int = 4, **_):
        super().__init__(dim, dim)
        self.attend = _Attend(dim, heads)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        return self.attend(img_tokens, txt_tokens, txt_mask).mean(1)


@register_fusion("co_attention")
class CoAttentionFusion(_Fusion):
    """Bidirectional: image tokens attend to clinical tokens and clinical tokens to image tokens."""

    def __init__(self, dim: int, heads: int = 4, **_):
        super().__init__(dim, 2 * dim)
        self.img_to_txt, self.txt_to_img = _Attend(dim, heads), _Attend(dim, heads)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        img = self.img_to_txt(img_tokens, txt_tokens, txt_mask).mean(1)
        txt = masked_mean(self.txt_to_img(txt_tokens, img_tokens), txt_mask)
        return torch.cat([img, txt], dim=1)


@register_fusion("joint_attention")
class JointAttentionFusion(_Fusion):
    """Image and clinical tokens as one set (each with a learned modality embedding) through
    pre-norm self-attention blocks (``fusion_depth``): every token attends to every other, image
    tokens of several views to each other and to the text (the multi-view strategy); then the
    image tokens' mean and the real clinical tokens' mean, concatenated."""

    def __init__(self, dim: int, heads: int = 4, depth: int = 1, **_):
        super().__init__(dim, 2 * dim)
        self.modality = nn.Parameter(torch.zeros(2, dim))
        nn.init.trunc_normal_(self.modality, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        n = img_tokens.shape[1]
        seq = torch.cat([img_tokens + self.modality[0], txt_tokens + self.modality[1]], dim=1)
        mask = torch.cat([torch.ones_like(img_tokens[..., 0], dtype=torch.bool), txt_mask], dim=1)
        for block in self.blocks:
            seq = block(seq, mask)
        seq = self.norm(seq)
        return torch.cat([seq[:, :n].mean(1), masked_mean(seq[:, n:], txt_mask)], dim=1)


@register_fusion("bilinear")
class LowRankBilinearFusion(_Fusion):
    """Low-rank bilinear pooling (MFB, Yu et al. 2017): ``sum_k (U_k v) * (V_k t)``, then signed
    square root and L2 normalisation, which keep the product's scale stable."""

    def __init__(self, dim: int, rank: int = 4, **_):
        super().__init__(dim, dim)
        self.rank = rank
        self.img, self.txt = nn.Linear(dim, dim * rank), nn.Linear(dim, dim * rank)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        # unflatten, not view(len(x), ...): the ONNX tracer would freeze len() into a constant batch size
        z = (self.img(img_vec) * self.txt(txt_vec)).unflatten(-1, (-1, self.rank)).sum(-1)
        z = torch.sign(z) * torch.sqrt(z.abs() + 1e-6)
        return F.normalize(z, dim=1) * z.shape[1] ** 0.5


@register_fusion("clinical_only")
class ClinicalOnly(_Fusion):
    """No image: the metadata-only baseline."""

    def __init__(self, dim: int, **_):
        super().__init__(dim, dim)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        return txt_vec


class MultiLevelFusion(nn.Module):
    """Fuse several image stages with several clinical levels (text hidden layers), pairwise by
    level (gated), then weight the levels adaptively: per-sample softmax weights from the fused
    vectors themselves, so the model can lean on early or late features case by case."""

    out_dim: int

    def __init__(self, dim: int, levels: int, text_levels: int = 1, **_):
        super().__init__()
        self.levels = nn.ModuleList(GatedFusion(dim) for _ in range(levels))
        self.score = nn.Linear(dim, 1)
        self.out_dim = dim
        self.last_weights: torch.Tensor | None = None

    def forward(self, img_vecs: list[torch.Tensor], txt_vecs: list[torch.Tensor]) -> torch.Tensor:
        txt_vecs = txt_vecs * len(img_vecs) if len(txt_vecs) == 1 else txt_vecs  # one clinical level for every stage
        fused = torch.stack([f(None, i, None, None, t) for f, i, t in zip(self.levels, img_vecs, txt_vecs)], dim=1)
        weights = torch.softmax(self.score(torch.tanh(fused)).squeeze(-1), dim=1)
        self.last_weights = weights.detach()
        return (weights.unsqueeze(-1) * fused).sum(1)


@register_fusion("ssm")
class SelectiveScanFusion(_Fusion):
    """Clinical and image tokens as one sequence (clinical first, each with a learned modality
    embedding) through bidirectional selective-scan blocks (Mamba / Vim, ``layers/mamba.py``), then
    a masked mean. Padded clinical tokens are zeroed before the scan and left out of the mean.

    Not exportable: the scan is a loop over tokens, which tracing unrolls, so an ONNX graph would
    only accept the traced text length (image token counts are fixed, text lengths are not)."""

    not_exportable = ("unrolls its selective scan over the tokens: the ONNX graph would accept only the traced "
                      "text length; serve this run with the torch backend")

    def __init__(self, dim: int, depth: int = 1, **_):
        super().__init__(dim, dim)
        from hybridmednet.layers.mamba import BiMambaBlock

        self.modality = nn.Parameter(torch.zeros(2, dim))
        nn.init.trunc_normal_(self.modality, std=0.02)
        self.blocks = nn.Sequential(*(BiMambaBlock(dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)

    def forward(self, img_tokens, img_vec, txt_tokens, txt_mask, txt_vec):
        txt = (txt_tokens + self.modality[0]) * txt_mask.unsqueeze(-1).to(txt_tokens.dtype)
        seq = torch.cat([txt, img_tokens + self.modality[1]], dim=1)
        mask = torch.cat([txt_mask, torch.ones_like(img_tokens[..., 0], dtype=torch.bool)], dim=1)
        return masked_mean(self.norm(self.blocks(seq)), mask)


class SequenceFusion(nn.Module):
    """The image's stage vectors, shallow to deep, then the clinical level vector(s), read as one
    sequence (with learned position embeddings) by a bidirectional LSTM or a small transformer; the
    mean of its outputs. The seed's "sequence modelling" strategy: the reader decides how the scales
    and the metadata combine, instead of a fixed operator."""

    def __init__(self, dim: int, levels: int, text_levels: int = 1, *, depth: int = 1, reader: str = "lstm",
                 heads: int = 4, **_):
        super().__init__()
        self.out_dim, self.reader = dim, reader
        self.position = nn.Parameter(torch.zeros(1, levels + text_levels, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        if reader == "lstm":
            if dim % 2:
                raise ConfigError(f"model.multimodal: sequence_reader lstm needs an even dim, got {dim}")
            self.read = nn.LSTM(dim, dim // 2, num_layers=depth, batch_first=True, bidirectional=True)
        elif reader == "transformer":
            self.read = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        else:
            raise ConfigError(f"model.multimodal.sequence_reader {reader!r}: choose lstm or transformer")

    def forward(self, img_vecs: list[torch.Tensor], txt_vecs: list[torch.Tensor]) -> torch.Tensor:
        seq = torch.stack([*img_vecs, *txt_vecs], dim=1) + self.position
        if self.reader == "lstm":
            seq = self.read(seq)[0]
        else:
            mask = torch.ones_like(seq[..., 0], dtype=torch.bool)
            for block in self.read:
                seq = block(seq, mask)
        return seq.mean(1)


# fusions over several image stages (and clinical levels): the classifier builds them with the stage count
STAGE_FUSIONS: dict[str, type[nn.Module]] = {"multi_level": MultiLevelFusion, "sequence": SequenceFusion}
