"""Batched inference over uint8 image arrays: probabilities (softmax or sigmoid) and loss."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hybridmednet.data.preprocess import normalize_batch
from hybridmednet.models.output import as_output


def batch_extras(extras: dict[str, np.ndarray] | None, start: int, size: int, device) -> dict[str, torch.Tensor]:
    """Rows ``start:start+size`` of each clinical input, as tensors on ``device``."""
    return {k: torch.from_numpy(np.ascontiguousarray(v[start:start + size])).to(device) for k, v in (extras or {}).items()}


def logits_to_probs(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_arrays(model: nn.Module, images: np.ndarray, *, mean, std, runtime, multilabel: bool,
                   batch_size: int = 512, targets: np.ndarray | None = None, loss_fn: nn.Module | None = None,
                   extras: dict[str, np.ndarray] | None = None):
    """Return ``(probs (N, C) float64, mean loss or None)`` for ``images`` (N, H, W, C) uint8.
    ``extras``: per-sample clinical inputs of a multimodal model, sliced like the images."""
    was_training = model.training
    model.eval()
    probs, total_loss = [], 0.0
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2)))
        x = normalize_batch(chunk.to(runtime.device), mean, std, channels_last=runtime.channels_last)
        clinical = batch_extras(extras, start, batch_size, runtime.device)
        with runtime.autocast():
            logits = as_output(model(x, **clinical)).logits
        logits = logits.float()
        if loss_fn is not None and targets is not None:
            y = torch.as_tensor(targets[start:start + batch_size], device=logits.device)
            total_loss += float(loss_fn(logits, y)) * len(chunk)
        probs.append(logits_to_probs(logits, multilabel).cpu().double().numpy())
    model.train(was_training)
    out = np.concatenate(probs) if probs else np.zeros((0, 0))
    return out, (total_loss / max(len(images), 1) if loss_fn is not None and targets is not None else None)
