"""Image + clinical classifier: any image backbone, a clinical encoder, one fusion strategy.

    image -> backbone.forward_features -> tokens (B, N, D) -----------\\
    clinical -> frozen text states | scratch transformer | MLP --> fusion -> head -> logits
                                      (tokens (B, T, D), mask) ------/

Samples without clinical input (``clinical_present == 0``: no record, or modality dropout while
training) get a learned 'missing' token instead, so every strategy runs when text is absent. An
image-only head on the same image features is trained beside the fused one (``image_loss_weight``);
its prediction is what the symmetric-KL agreement loss (``agreement_weight``) ties the fused one to.

With ``views`` (``layers/views.py``) the backbone reads views cut from the input instead of the
input itself: ``global_local`` adds a second backbone for the lesion crop and hands both streams'
tokens to the fusion; ``multi_view`` runs every view through the one backbone; ``dual_expert`` mixes
a lesion expert's logits with the fused (context) logits by a learned per-case gate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.layers.modality_fusion import (
    STAGE_FUSIONS,
    TransformerBlock,
    create_fusion,
    masked_mean,
)
from hybridmednet.layers.views import ViewSampler
from hybridmednet.output import ModelOutput

__all__ = ["MultimodalClassifier", "clinical_input_names", "example_clinical_inputs"]


def clinical_input_names(spec: dict) -> list[str]:
    """The model's clinical inputs, in the order ``forward`` and an exported graph take them."""
    if spec["inputs"] == "tabular":
        return ["clinical_present", "tabular"]
    return ["clinical_present", "token_ids" if spec["encoder"] == "scratch" else "text_states", "text_mask"]


def example_clinical_inputs(spec: dict, batch: int, tokens: int = 8, rng: np.random.Generator | None = None
                            ) -> dict[str, np.ndarray]:
    """Random clinical inputs of the right kind and shape (every third case without any), for
    export parity checks and FLOP counts."""
    rng = rng or np.random.default_rng(0)
    out = {}
    for name in clinical_input_names(spec):
        if name == "clinical_present":
            out[name] = (np.arange(batch) % 3 != 2).astype(np.float32)
        elif name == "tabular":
            out[name] = rng.normal(size=(batch, spec["tabular_dim"])).astype(np.float32)
        elif name == "token_ids":
            out[name] = rng.integers(1, len(spec["vocab"]), (batch, tokens)).astype(np.int64)
        elif name == "text_states":
            out[name] = rng.normal(size=(batch, len(spec["layers"]), tokens, spec["feature_dim"])).astype(np.float32)
        else:  # text_mask
            out[name] = np.arange(tokens)[None, :] < rng.integers(1, tokens + 1, (batch, 1))
    return out


# --------------------------------------------------------------------------- image side
class _Capture:
    """Forward hook that keeps stage outputs. An object, not a closure, so a deep copy of the model
    (EMA) gets its own capture list instead of writing into the original's."""

    def __init__(self):
        self.outputs: list = []

    def __call__(self, module, inputs, output) -> None:
        self.outputs.append(output)


def drop_classifier(model: nn.Module) -> nn.Module:
    """The backbone's own classifier is unused here (the multimodal heads replace it)."""
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
    elif isinstance(getattr(model, "head", None), nn.Module):
        model.head = nn.Identity()
    return model


class ImageFeatures(nn.Module):
    """Final feature map as tokens, and (for multi-level fusion) pooled vectors of earlier stages,
    for any backbone: registered models, timm models and the timm + FPN family."""

    def __init__(self, model: nn.Module, image_size: int, in_chans: int, levels: int = 0):
        super().__init__()
        self.model, self.levels = drop_classifier(model), levels
        self._capture = _Capture()
        self.stage_dims: list[int] = []
        self._stage_layout: list[str] = []
        if levels:
            for module in self._stage_modules():
                module.register_forward_hook(self._capture)
        was_training = model.training
        with torch.no_grad():
            out = self._forward_features(model.eval(), torch.zeros(1, in_chans, image_size, image_size))
        model.train(was_training)
        num = getattr(model, "num_features", None)
        self.nhwc = out.ndim == 4 and num is not None and out.shape[-1] == num and out.shape[1] != num
        self.dim = out.shape[-1] if out.ndim == 3 or self.nhwc else out.shape[1]
        if levels:
            self._choose_stages(self._flat(self._capture.outputs))
        self._capture.outputs.clear()

    @staticmethod
    def _forward_features(model, x):
        out = model.forward_features(x)
        return out[0] if isinstance(out, tuple) else out

    def _stage_modules(self) -> list[nn.Module]:
        m = self.model
        if hasattr(m, "backbone") and hasattr(m, "neck"):  # timm + FPN: the backbone returns every stage
            return [m.backbone]
        info = getattr(m, "feature_info", None)
        if isinstance(info, list) and info and "module" in info[0]:
            named = dict(m.named_modules())
            return [named[f["module"]] for f in info if f["module"] in named]
        for attr in ("stages", "blocks", "layers"):
            seq = getattr(m, attr, None)
            if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq) > 1:
                return list(seq)
        raise ConfigError(f"multi_level fusion: cannot find the stages of {type(m).__name__}; use another fusion")

    @staticmethod
    def _flat(outputs) -> list[torch.Tensor]:
        flat = []
        for out in outputs:
            flat.extend(out if isinstance(out, (list, tuple)) else [out])
        return [t for t in flat if isinstance(t, torch.Tensor) and t.ndim in (3, 4)]

    def _choose_stages(self, outputs: list[torch.Tensor]) -> None:
        """One output per resolution (the last at each), the deepest ``levels`` of them."""
        layouts = []
        for t in outputs:
            nhwc = t.ndim == 4 and t.shape[-1] > t.shape[1] and t.shape[1] == t.shape[2]
            layouts.append("tokens" if t.ndim == 3 else "nhwc" if nhwc else "nchw")
        keys = [(tuple(t.shape[1:3]) if lay == "nhwc" else tuple(t.shape[2:]) if lay == "nchw" else i)
                for i, (t, lay) in enumerate(zip(outputs, layouts))]
        last = {k: i for i, k in enumerate(keys)}
        picked = sorted(last.values())
        if len(picked) < self.levels:
            picked = list(range(len(outputs)))
        if len(picked) < self.levels:
            raise ConfigError(f"multi_level fusion wants {self.levels} image stages; {type(self.model).__name__} "
                              f"has {len(picked)}")
        self._picked = picked[-self.levels:]
        self._stage_layout = [layouts[i] for i in self._picked]
        self.stage_dims = [outputs[i].shape[-1] if layouts[i] != "nchw" else outputs[i].shape[1] for i in self._picked]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._capture.outputs.clear()
        out = self._forward_features(self.model, x)
        tokens = out if out.ndim == 3 else (out.flatten(1, 2) if self.nhwc else out.flatten(2).transpose(1, 2))
        stages = []
        if self.levels:
            outputs = self._flat(self._capture.outputs)
            for i, layout in zip(self._picked, self._stage_layout):
                t = outputs[i]
                stages.append(t.mean(1) if layout == "tokens" else t.mean((1, 2)) if layout == "nhwc" else t.mean((2, 3)))
        self._capture.outputs.clear()
        return tokens, stages


# --------------------------------------------------------------------------- clinical side
class FrozenTextProjection(nn.Module):
    """Cached token states of a frozen encoder (B, K, T, Dt) -> one (B, T, D) token set per level."""

    def __init__(self, feature_dim: int, levels: int, dim: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, dim)) for _ in range(levels))

    def forward(self, text_states: torch.Tensor, text_mask: torch.Tensor):
        states = text_states.float()
        return [p(states[:, k]) for k, p in enumerate(self.proj)], text_mask.bool()


class ScratchTextEncoder(nn.Module):
    """Word embeddings + a small pre-norm transformer, trained with the classifier; every layer's
    output is a level."""

    def __init__(self, vocab_size: int, max_tokens: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, max_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))

    def forward(self, token_ids: torch.Tensor, text_mask: torch.Tensor):
        mask = text_mask.bool()
        attend = mask | ~mask.any(1, keepdim=True)  # a row with no tokens attends to everything (then replaced)
        x = self.embed(token_ids) + self.pos[:, :token_ids.shape[1]]
        levels = []
        for layer in self.layers:
            x = layer(x, attend)
            levels.append(x)
        return levels, mask


class TabularEncoder(nn.Module):
    """Numeric/categorical features -> one clinical token."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, tabular: torch.Tensor):
        token = self.mlp(tabular.float()).unsqueeze(1)
        return [token], torch.ones(token.shape[:2], dtype=torch.bool, device=token.device)


def _clinical_encoder(spec: dict, mm) -> tuple[nn.Module, int]:
    if spec["inputs"] == "tabular":
        return TabularEncoder(spec["tabular_dim"], mm.dim), 1
    if spec["encoder"] == "scratch":
        return ScratchTextEncoder(len(spec["vocab"]), spec["max_tokens"], mm.dim, mm.text_depth, mm.heads), mm.text_depth
    return FrozenTextProjection(spec["feature_dim"], len(spec["layers"]), mm.dim), len(spec["layers"])


# --------------------------------------------------------------------------- the classifier
class MultimodalClassifier(nn.Module):
    """``lesion_model``: the second backbone of the two-stream view strategies (``global_local``,
    ``dual_expert``), built like ``image_model``; ``image_size`` is then the views' size."""

    def __init__(self, image_model: nn.Module | None, num_classes: int, spec: dict, mm, *, image_size: int,
                 in_chans: int, drop_rate: float = 0.1, lesion_model: nn.Module | None = None):
        super().__init__()
        self.fusion_name, self.spec = mm.fusion, spec
        self.input_names = clinical_input_names(spec)
        self.modality_dropout, self.agreement_weight, self.image_loss_weight = \
            mm.modality_dropout, mm.agreement_weight, mm.image_loss_weight
        self.clinical, text_levels = _clinical_encoder(spec, mm)
        self.missing = nn.Parameter(torch.zeros(1, 1, mm.dim))
        nn.init.trunc_normal_(self.missing, std=0.02)
        # Stage fusions: one image stage per text layer; a single clinical level goes with 3 image stages.
        self.levels = (text_levels if text_levels > 1 else 3) if mm.fusion in STAGE_FUSIONS else 0
        self.image, self.strategy, self.sampler, self.lesion = None, None, None, None
        if mm.fusion != "clinical_only":
            if image_model is None:
                raise ConfigError(f"fusion {mm.fusion!r} needs an image backbone")
            self.image = ImageFeatures(image_model, image_size, in_chans, levels=self.levels)
            self._build_views(mm, image_size, in_chans, lesion_model)
            # Only what a loss reaches is built: DDP fails on parameters without gradients. The
            # image-only head exists for its losses; multi-level fusion reads the stages instead.
            self.image_head = nn.Linear(mm.dim, num_classes) if mm.image_loss_weight or mm.agreement_weight else None
            self.image_proj = (nn.Sequential(nn.LayerNorm(self.image.dim), nn.Linear(self.image.dim, mm.dim))
                               if not self.levels or self.image_head is not None else None)
        if mm.fusion in STAGE_FUSIONS:
            self.stage_proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, mm.dim)) for c in self.image.stage_dims)
            self.fusion = STAGE_FUSIONS[mm.fusion](mm.dim, self.levels, text_levels, depth=mm.fusion_depth,
                                                   reader=mm.sequence_reader, heads=mm.heads)
        else:
            self.fusion = create_fusion(mm.fusion, mm.dim, heads=mm.heads, rank=mm.bilinear_rank, depth=mm.fusion_depth)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.fusion.out_dim, num_classes)
        if self.image is not None and self.strategy == "dual_expert":
            self._build_gate(mm, num_classes)

    def _build_views(self, mm, size: int, in_chans: int, lesion_model: nn.Module | None) -> None:
        if mm.views is None:
            return
        self.strategy = mm.views.strategy
        if size != mm.views.size:
            raise ConfigError(f"model.multimodal.views: the backbone was built for {size} px, the views are "
                              f"{mm.views.size} px")
        two_stream = self.strategy in ("global_local", "dual_expert")
        if two_stream and lesion_model is None:
            raise ConfigError(f"model.multimodal.views.strategy {self.strategy} needs a second backbone (lesion_model)")
        kinds = ["lesion", "global"] if two_stream else mm.views.views
        self.sampler = ViewSampler(kinds, mm.views.size, crop_min=mm.views.crop_min, crop_max=mm.views.crop_max,
                                   margin=mm.views.margin)
        if two_stream:
            self.lesion = ImageFeatures(lesion_model, size, in_chans)
            self.lesion_proj = nn.Sequential(nn.LayerNorm(self.lesion.dim), nn.Linear(self.lesion.dim, mm.dim))
        if self.strategy != "dual_expert":  # which view a token came from
            self.view_embed = nn.Parameter(torch.zeros(len(kinds), mm.dim))
            nn.init.trunc_normal_(self.view_embed, std=0.02)

    def _build_gate(self, mm, num_classes: int) -> None:
        """Dual expert: the lesion expert's own head and the gate that mixes it with the fused one."""
        self.lesion_head = nn.Linear(mm.dim, num_classes)
        self.gate = nn.Sequential(nn.Linear(self.fusion.out_dim + mm.dim, mm.dim), nn.GELU(), nn.Linear(mm.dim, 1))
        self.last_gate: torch.Tensor | None = None

    def _image_tokens(self, x: torch.Tensor):
        """Projected image tokens ``(B, N, D)``, their mean, the stage vectors (stage fusions), and
        the lesion expert's vector (dual expert)."""
        if self.sampler is None:
            tokens, stages = self.image(x)
            img_tokens = None if self.image_proj is None else self.image_proj(tokens)
            return img_tokens, None if img_tokens is None else img_tokens.mean(1), stages, None
        views = self.sampler(x)
        if self.strategy == "multi_view":
            tokens = self.image_proj(self.image(torch.cat(views, dim=0))[0])  # one backbone pass for every view
            # (B, views x N, D) by splitting and concatenating: a reshape would trace the batch into a constant
            img_tokens = torch.cat([t + e for t, e in zip(tokens.chunk(len(views), dim=0), self.view_embed)], dim=1)
            return img_tokens, img_tokens.mean(1), [], None
        lesion = self.lesion_proj(self.lesion(views[0])[0])
        whole = self.image_proj(self.image(views[1])[0])
        if self.strategy == "dual_expert":  # the context expert reads the whole image; the lesion expert its own
            return whole, whole.mean(1), [], lesion.mean(1)
        img_tokens = torch.cat([whole + self.view_embed[1], lesion + self.view_embed[0]], dim=1)
        return img_tokens, img_tokens.mean(1), [], None

    def _clinical_tokens(self, present: torch.Tensor, inputs: dict[str, torch.Tensor]):
        names = self.input_names[1:]
        levels, mask = self.clinical(*(inputs[n] for n in names))
        present = present.float().view(-1, 1)
        if self.training and self.modality_dropout > 0:
            present = present * (torch.rand_like(present) >= self.modality_dropout).float()
        keep = (present > 0.5) & mask.any(1, keepdim=True)
        first = torch.zeros_like(mask)
        first[:, 0] = True
        mask = (keep & mask) | (~keep & first)  # logical ops, not where(): ONNX Runtime has no bool Where
        levels = [torch.where(keep.unsqueeze(-1), t, self.missing.to(t.dtype).expand_as(t)) for t in levels]
        return levels, mask

    def forward(self, x: torch.Tensor, clinical_present: torch.Tensor, *clinical, **named) -> ModelOutput:
        inputs = dict(zip(self.input_names[1:], clinical)) | named
        missing = [n for n in self.input_names[1:] if n not in inputs]
        if missing:
            raise ConfigError(f"multimodal model: clinical input(s) {missing} not given; it takes {self.input_names}")
        txt_levels, mask = self._clinical_tokens(clinical_present, inputs)
        txt_vecs = [masked_mean(t, mask) for t in txt_levels]
        if self.image is None:
            fused = self.fusion(None, None, txt_levels[-1], mask, txt_vecs[-1])
            return ModelOutput(logits=self.head(self.dropout(fused)), features=fused)
        img_tokens, img_vec, stages, lesion_vec = self._image_tokens(x)
        if self.levels:
            img_vecs = [p(s) for p, s in zip(self.stage_proj, stages)]
            fused = self.fusion(img_vecs, txt_vecs)
        else:
            fused = self.fusion(img_tokens, img_vec, txt_levels[-1], mask, txt_vecs[-1])
        image_logits = None if self.image_head is None else self.image_head(self.dropout(img_vec))
        logits = self.head(self.dropout(fused))
        if lesion_vec is None:
            return ModelOutput(logits=logits, features=fused, image_logits=image_logits)
        lesion_logits = self.lesion_head(self.dropout(lesion_vec))
        gate = torch.sigmoid(self.gate(torch.cat([fused, lesion_vec], dim=1)))  # (B, 1): the lesion expert's share
        self.last_gate = gate.detach()
        return ModelOutput(logits=gate * lesion_logits + (1 - gate) * logits, features=torch.cat([fused, lesion_vec], dim=1),
                           image_logits=image_logits, lesion_logits=lesion_logits)

    def aux_losses(self, output: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image-only cross-entropy (and the dual expert's lesion-head cross-entropy, same weight)
        and the symmetric KL between image-only and fused predictions.

        Symmetric KL is ``sum (p - q) * (log p - log q)``: over the classes of a softmax (single
        label), or per class of independent Bernoullis, where ``log p - log q`` over both outcomes
        sums to the logit difference (multi-label); summed over classes, averaged over the batch."""
        multilabel = targets.ndim == 2

        def task_loss(logits: torch.Tensor) -> torch.Tensor:
            logits = logits.float()
            return F.binary_cross_entropy_with_logits(logits, targets.float()) if multilabel else F.cross_entropy(logits, targets)

        out = {}
        if output.lesion_logits is not None and self.image_loss_weight > 0:
            out["lesion_ce"] = self.image_loss_weight * task_loss(output.lesion_logits)
        if output.image_logits is None:
            return out
        img, fused = output.image_logits.float(), output.logits.float()
        if self.image_loss_weight > 0:
            out["image_ce"] = self.image_loss_weight * task_loss(img)
        if self.agreement_weight > 0:
            if multilabel:
                sym = (torch.sigmoid(img) - torch.sigmoid(fused)) * (img - fused)
            else:
                p, q = F.log_softmax(img, dim=1), F.log_softmax(fused, dim=1)
                sym = (p.exp() - q.exp()) * (p - q)
            out["agreement"] = self.agreement_weight * sym.sum(1).mean()
        return out


def build_multimodal(image_model: nn.Module | None, num_classes: int, spec: dict, mm, *, image_size: int, in_chans: int,
                     drop_rate: float, lesion_model: nn.Module | None = None) -> MultimodalClassifier:
    return MultimodalClassifier(image_model, num_classes, spec, mm, image_size=image_size, in_chans=in_chans,
                                drop_rate=drop_rate, lesion_model=lesion_model)
