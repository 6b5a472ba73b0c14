"""Batch preprocessing shared by training, evaluation and prediction.

Kept in one place so a deployed model sees exactly the pixels it was trained on: uint8
``(B, C, H, W)`` (volumes ``(B, C, D, H, W)``) -> float, scaled to [0, 1], normalised by the run's
mean/std.
"""

from __future__ import annotations

import torch


def default_mean_std(channels: int, mean=None, std=None) -> tuple[list[float], list[float]]:
    mean = list(mean) if mean else [0.5] * channels
    std = list(std) if std else [0.5] * channels
    if len(mean) != channels or len(std) != channels:
        from hybridmednet.errors import ConfigError

        raise ConfigError(f"data.mean/data.std need {channels} values (one per channel), got {mean} / {std}")
    return mean, std


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last layout of a tensor (or a model's weights) of this rank: 4 -> NHWC,
    5 -> NDHWC (``channels_last_3d``)."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def normalize_batch(batch: torch.Tensor, mean, std, *, channels_last: bool = False) -> torch.Tensor:
    shape = (1, -1) + (1,) * (batch.ndim - 2)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(shape)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(shape)
    x = batch.float().div_(255.0).sub_(mean_t).div_(std_t)
    return x.contiguous(memory_format=channels_last_format(x.ndim)) if channels_last else x
