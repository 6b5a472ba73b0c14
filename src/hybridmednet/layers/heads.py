"""Classifier heads by name: ``create_head(name, in_features, num_classes, **kwargs)``.

Every head turns a backbone feature map into logits in two steps, so models can return the
embedding too (for prototypes, explanations, retrieval):

- ``embed(fmap) -> (B, D)``: pooling plus any projection; ``embed_dim`` is ``D``;
- ``classify(emb) -> (B, num_classes)``; ``forward(fmap) = classify(embed(fmap))``;
- ``aux_losses(emb, targets) -> {name: scalar}``: training-only terms, already weighted (empty
  for most heads); the model puts them in ``ModelOutput.aux_losses``;
- ``last_attention``: (B, H, W) weights of the latest forward for heads that attend, else None.

``fmap`` is a CNN map (B, C, H, W); (B, N, C) token sequences and already pooled (B, C) vectors
are accepted too. All heads export to ONNX (opset 17).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.layers.kan import KANLinear
from hybridmednet.layers.moe import MixtureOfExperts, load_balance_loss
from hybridmednet.layers.prototype import PrototypeClassifier
from hybridmednet.layers.prototype_attention import PrototypeMixedAttention
from hybridmednet.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head", "model.kwargs.head",
                                                     framework_args={"in_features", "num_classes", "drop_rate"})


def register_head(name: str):
    return HEADS.register(name)


def list_heads() -> list[str]:
    return HEADS.names()


def create_head(name: str, in_features: int, num_classes: int, **kwargs) -> ClassifierHead:
    return HEADS.get(name)(in_features, num_classes, **kwargs)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Average (B, C, H, W) over space or (B, N, C) over tokens; (B, C) passes through."""
    if x.ndim == 4:
        return x.mean((2, 3))
    if x.ndim == 3:
        return x.mean(1)
    return x


class ClassifierHead(nn.Module):
    """Base class: subclasses set ``embed_dim`` and implement ``embed`` and ``classify``."""

    embed_dim: int
    last_attention: torch.Tensor | None = None

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(fmap))

    def aux_losses(self, emb: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}


@register_head("linear")
class LinearHead(ClassifierHead):
    """Average pool, dropout, linear: the timm default."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.embed_dim = in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def embed(self, fmap):
        return global_pool(fmap)

    def classify(self, emb):
        return self.fc(self.drop(emb))


@register_head("mlp")
class MLPHead(ClassifierHead):
    """Average pool -> Linear-GELU (the embedding, ``hidden_dim``) -> Dropout-Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden_dim: int | None = None, drop_rate: float = 0.0):
        super().__init__()
        self.embed_dim = hidden_dim or in_features
        self.proj = nn.Sequential(nn.Linear(in_features, self.embed_dim), nn.GELU())
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.embed_dim, num_classes)

    def embed(self, fmap):
        return self.proj(global_pool(fmap))

    def classify(self, emb):
        return self.fc(self.drop(emb))


class ResidualMLPBlock(nn.Module):
    """``x + MLP(LayerNorm(x))`` with a GELU MLP of width ``ratio * dim``."""

    def __init__(self, dim: int, ratio: float = 2.0, drop_rate: float = 0.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop_rate), nn.Linear(hidden, dim))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


@register_head("residual_mlp")
class ResidualMLPHead(ClassifierHead):
    """Average pool, optional projection to ``hidden_dim``, ``depth`` pre-norm residual MLP blocks, LayerNorm."""

    def __init__(self, in_features: int, num_classes: int, hidden_dim: int | None = None, depth: int = 2,
                 mlp_ratio: float = 2.0, drop_rate: float = 0.0):
        super().__init__()
        self.embed_dim = hidden_dim or in_features
        self.proj = nn.Linear(in_features, self.embed_dim) if self.embed_dim != in_features else nn.Identity()
        self.blocks = nn.Sequential(*(ResidualMLPBlock(self.embed_dim, mlp_ratio, drop_rate) for _ in range(depth)))
        self.norm = nn.LayerNorm(self.embed_dim)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.embed_dim, num_classes)

    def embed(self, fmap):
        return self.norm(self.blocks(self.proj(global_pool(fmap))))

    def classify(self, emb):
        return self.fc(self.drop(emb))


@register_head("attention_pool")
class AttentionPoolHead(ClassifierHead):
    """A learned query attends over the H*W tokens (multi-head); the attended vector is the embedding.

    ``last_attention`` holds the head-averaged weights of the latest forward, detached, as
    (B, H, W) for a feature map or (B, N) for tokens: a built-in saliency map.
    """

    def __init__(self, in_features: int, num_classes: int, num_heads: int = 4, drop_rate: float = 0.0):
        super().__init__()
        if in_features % num_heads:
            raise ConfigError(f"attention_pool num_heads={num_heads} must divide in_features={in_features}")
        self.embed_dim = in_features
        self.query = nn.Parameter(torch.zeros(1, 1, in_features))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm_tokens = nn.LayerNorm(in_features)
        self.attn = nn.MultiheadAttention(in_features, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(in_features)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def embed(self, fmap):
        if fmap.ndim == 4:
            tokens = fmap.flatten(2).transpose(1, 2)
        elif fmap.ndim == 3:
            tokens = fmap
        else:
            tokens = fmap.unsqueeze(1)
        tokens = self.norm_tokens(tokens)
        query = self.query.expand(tokens.shape[0], -1, -1)
        out, weights = self.attn(query, tokens, tokens, need_weights=True, average_attn_weights=True)
        weights = weights.detach()[:, 0]  # (B, N)
        if fmap.ndim == 4:
            weights = weights.reshape(fmap.shape[0], fmap.shape[2], fmap.shape[3])
        self.last_attention = weights
        return self.norm(out[:, 0])

    def classify(self, emb):
        return self.fc(self.drop(emb))


@register_head("kan")
class KANHead(ClassifierHead):
    """Average pool, then KAN layers: LayerNorm -> KANLinear for each of ``hidden_dims`` and the output.

    ``basis`` is ``"spline"`` (B-splines, efficient-KAN) or ``"rbf"`` (Gaussians, FastKAN); the
    LayerNorm before each layer keeps inputs inside ``grid_range``. With no hidden layers the
    embedding is the pooled feature vector and the classifier is a single KAN layer.
    """

    def __init__(self, in_features: int, num_classes: int, hidden_dims: Sequence[int] = (), basis: str = "spline",
                 grid_size: int = 5, spline_order: int = 3, grid_range: tuple[float, float] = (-2.0, 2.0),
                 drop_rate: float = 0.0):
        super().__init__()
        kan = dict(basis=basis, grid_size=grid_size, spline_order=spline_order, grid_range=tuple(grid_range))
        dims = [in_features, *hidden_dims]
        self.hidden = nn.Sequential(*(nn.Sequential(nn.LayerNorm(a), KANLinear(a, b, **kan))
                                      for a, b in zip(dims, dims[1:])))
        self.embed_dim = dims[-1]
        self.drop = nn.Dropout(drop_rate)
        self.norm = nn.LayerNorm(self.embed_dim)
        self.fc = KANLinear(self.embed_dim, num_classes, **kan)

    def embed(self, fmap):
        return self.hidden(global_pool(fmap))

    def classify(self, emb):
        return self.fc(self.drop(self.norm(emb)))


@register_head("moe")
class MoEHead(ClassifierHead):
    """Average pool -> mixture of ``num_experts`` MLP experts with top-``top_k`` routing -> linear.

    ``aux_losses`` returns ``balance_weight`` times the load-balancing loss of the latest ``embed``
    (1.0 before weighting when routing is uniform); ``last_routing`` keeps that routing.
    """

    def __init__(self, in_features: int, num_classes: int, num_experts: int = 4, top_k: int = 2,
                 hidden_dim: int | None = None, embed_dim: int | None = None, balance_weight: float = 0.01,
                 drop_rate: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim or in_features
        self.moe = MixtureOfExperts(in_features, self.embed_dim, num_experts, top_k, hidden_dim)
        self.balance_weight = balance_weight
        self.last_routing = None
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.embed_dim, num_classes)

    def embed(self, fmap):
        emb, self.last_routing = self.moe(global_pool(fmap))
        return emb

    def classify(self, emb):
        return self.fc(self.drop(emb))

    def aux_losses(self, emb, targets):
        if self.last_routing is None:
            return {}
        return {"moe_balance": self.balance_weight * load_balance_loss(self.last_routing.probs, self.last_routing.mask)}


@register_head("prototype")
class PrototypeHead(ClassifierHead):
    """Average pool (optionally a linear projection to ``proj_dim``) -> multi-prototype cosine classifier.

    With ``mixed_attention`` the embedding is instead the gated fusion of pooled, windowed
    self-attention and prototype cross-attention streams over the (projected) feature tokens
    (:class:`~hybridmednet.layers.prototype_attention.PrototypeMixedAttention`, ``attention_heads``
    heads, ``window`` x ``window`` windows); ``last_attention`` is then where the prototypes looked.

    Other keyword arguments go to :class:`~hybridmednet.layers.prototype.PrototypeClassifier`
    (prototypes_per_class, max_per_class, scale, learn_scale, aggregation, momentum, the loss
    weights, margin, add_threshold, contrastive_weight, contrastive_tau). ``aux_losses`` also runs
    the momentum update while training; call ``maybe_add_prototypes()`` yourself (e.g. per epoch):
    slots are preallocated, so no optimizer rebuild is needed.
    """

    def __init__(self, in_features: int, num_classes: int, proj_dim: int | None = None, drop_rate: float = 0.0,
                 mixed_attention: bool = False, attention_heads: int = 4, window: int = 4, **kwargs):
        super().__init__()
        self.embed_dim = proj_dim or in_features
        self.proj = nn.Linear(in_features, proj_dim) if proj_dim else nn.Identity()
        self.drop = nn.Dropout(drop_rate)  # on the embedding before the cosine logits, like the other heads
        self.classifier = PrototypeClassifier(self.embed_dim, num_classes, **kwargs)
        self.mixed = None
        if mixed_attention:
            self.mixed = PrototypeMixedAttention(self.embed_dim, attention_heads, window)

    def embed(self, fmap):
        if self.mixed is None:
            return self.proj(global_pool(fmap))
        if fmap.ndim not in (3, 4):
            raise ConfigError(f"the prototype head's mixed_attention needs a (B, C, H, W) map or (B, N, C) tokens, got "
                              f"shape {tuple(fmap.shape)}; use a backbone that returns one, or drop mixed_attention")
        grid = tuple(fmap.shape[2:]) if fmap.ndim == 4 else None
        tokens = self.proj(fmap.flatten(2).transpose(1, 2) if fmap.ndim == 4 else fmap)
        protos = self.classifier.normalized_prototypes().flatten(0, 1)
        emb = self.mixed(tokens, grid, protos, self.classifier.active.flatten())
        self.last_attention = self.mixed.last_attention
        return emb

    def classify(self, emb):
        return self.classifier(self.drop(emb))

    def aux_losses(self, emb, targets):
        return self.classifier.aux_losses(emb, targets)

    def update_prototypes(self, emb: torch.Tensor, targets: torch.Tensor) -> None:
        self.classifier.update_prototypes(emb, targets)

    def maybe_add_prototypes(self) -> bool:
        return self.classifier.maybe_add_prototypes()

    @property
    def prototypes_added(self) -> int:
        return self.classifier.prototypes_added
