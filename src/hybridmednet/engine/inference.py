"""Batched inference over uint8 image arrays: probabilities (softmax or sigmoid) and loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from hybridmednet.data.preprocess import normalize_batch
from hybridmednet.models.output import as_output


def logits_to_probs(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_arrays(model: nn.Module, images: np.ndarray, *, mean, std, runtime, multilabel: bool,
                   batch_size: int = 512, targets: np.ndarray | None = None, loss_fn: nn.Module | None = None):
    """Return ``(probs (N, C) float64, mean loss or None)`` for ``images`` (N, H, W, C) uint8."""
    was_training = model.training
    model.eval()
    probs, total_loss = [], 0.0
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2)))
        x = normalize_batch(chunk.to(runtime.device), mean, std, channels_last=runtime.channels_last)
        with runtime.autocast():
            logits = as_output(model(x)).logits
        logits = logits.float()
        if loss_fn is not None and targets is not None:
            y = torch.as_tensor(targets[start:start + batch_size], device=logits.device)
            total_loss += float(loss_fn(logits, y)) * len(chunk)
        probs.append(logits_to_probs(logits, multilabel).cpu().double().numpy())
    model.train(was_training)
    out = np.concatenate(probs) if probs else np.zeros((0, 0))
    return out, (total_loss / max(len(images), 1) if loss_fn is not None and targets is not None else None)
