"""Parameters and FLOPs of a model (``hybridmednet models --details``).

FLOPs come from ``torch.utils.flop_counter`` (one multiply-add = 2 FLOPs, the convention of the
published "GFLOPs" figures this project compares against); they count convolutions, matmuls and
attention, not element-wise ops.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int, in_chans: int = 3, extra_inputs: dict | None = None,
                spatial_dims: int = 2) -> int:
    """FLOPs of one forward pass of a single image (``spatial_dims=3``: one ``S^3`` volume;
    ``extra_inputs``: a multimodal model's clinical inputs for that image; a frozen text encoder
    runs beforehand and is not counted).

    Not under ``no_grad``: there ``nn.MultiheadAttention`` takes a fused fast path that the
    flop counter cannot trace."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, in_chans, *(image_size,) * spatial_dims), **(extra_inputs or {}))
    model.train(was_training)
    return int(counter.get_total_flops())


def model_details(name: str, image_size: int = 224, in_chans: int = 3, num_classes: int = 7) -> dict:
    from hybridmednet.models import create_model

    kwargs = {"img_size": image_size} if name.startswith("vision_mamba") else {}
    from hybridmednet.models._registry import model_spatial_dims

    model = create_model(name, num_classes, in_chans, image_size=image_size, **kwargs)
    return {"model": name, "image_size": image_size, "params_m": count_parameters(model) / 1e6,
            "gflops": count_flops(model, image_size, in_chans, spatial_dims=model_spatial_dims(name)) / 1e9}
