"""Resizing a feature map by average pooling, in a form ONNX export accepts.

Under ``torch.onnx.export`` tracing, sizes read from ``x.shape`` are traced values; adaptive
pooling to such a size fails to export ("output_size is not constant"). :func:`pool_to` turns
the sizes into Python ints (the spatial size of an exported model is fixed; only the batch is
dynamic) and uses a plain ``avg_pool2d`` for whole-multiple ratios (identical to adaptive pooling
there), falling back to adaptive pooling otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pool_to(x: torch.Tensor, target: Sequence[int]) -> torch.Tensor:
    """Average-pool ``x`` (B, C, H, W) to spatial size ``target``."""
    (h, w), (th, tw) = (int(v) for v in x.shape[-2:]), (int(v) for v in target)
    if h == th and w == tw:
        return x
    if h % th == 0 and w % tw == 0:
        return F.avg_pool2d(x, (h // th, w // tw))
    return F.adaptive_avg_pool2d(x, (th, tw))
