"""``ModelOutput``: what every HybridMedNet model's forward returns (a shared type, kept low so
losses, the engine and deploy read it without importing the models package).

Plain timm models return a logits tensor; :func:`as_output` wraps that, so the engine reads one
type. ``aux_losses`` carries training-only terms a model computes itself (prototype cluster /
separation / diversity losses ...); the engine adds them to the task loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, num_classes): fine classes
    coarse_logits: torch.Tensor | None = None  # (B, num_coarse) when a taxonomy is configured
    features: torch.Tensor | None = None  # (B, D) pooled embedding
    attention_maps: torch.Tensor | None = None  # (B, h, w) for explanations
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    image_logits: torch.Tensor | None = None  # multimodal models: the image-only head's logits
    lesion_logits: torch.Tensor | None = None  # dual-expert multimodal models: the lesion expert's logits


def as_output(out) -> ModelOutput:
    return out if isinstance(out, ModelOutput) else ModelOutput(logits=out)


class LogitsOnly(torch.nn.Module):
    """Export wrapper: ONNX / TorchScript see a plain ``logits`` tensor output."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *clinical: torch.Tensor) -> torch.Tensor:
        return as_output(self.model(x, *clinical)).logits
