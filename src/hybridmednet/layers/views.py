"""Views of one case cut from its input image inside the model: the whole image at the backbone's
size, a lesion-centred crop, flips and a central zoom.

Inside the model, not in the data pipeline, so a multi-view run keeps one image input and every
path that feeds a model (training, evaluation, export, the torch-free runtime, the service) works
unchanged. The input should be larger than the views (``data.image_size`` a multiple of
``model.multimodal.views.size``): the whole image is area-downsampled to the view size, while the
lesion crop is sampled from the full-resolution input, so it carries detail the whole-image view
has lost instead of upsampling it.

The lesion box is found without labels. Dermoscopic lesions are darker than the skin around them,
so Otsu's threshold (the grey level that maximises the between-class variance, searched over
``bins`` levels) on a coarse grey map marks the dark pixels; a Gaussian prior centred on the image
(sd ``prior_sd`` of the half-side) damps the dark vignetted corners. The box is centred on the
mask's weighted centroid with a half-side of ``margin`` x twice the mask's larger coordinate
standard deviation (a uniform disc of radius r has sd r / 2), clamped to ``[crop_min, crop_max]``
of the image side. The box carries no gradient: it is a measurement, not a learned glimpse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.errors import ConfigError

__all__ = ["VIEW_KINDS", "ViewSampler", "lesion_boxes", "otsu_threshold"]

VIEW_KINDS = ("global", "lesion", "hflip", "vflip", "zoom")
ZOOM = 0.6  # the central zoom view: this fraction of the image side


def otsu_threshold(values: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Per-row Otsu threshold of ``values (B, N)``, searched over ``bins`` levels evenly spaced
    strictly between each row's minimum and maximum; returns ``(B,)``. A constant row returns its
    value (every pixel is then on one side)."""
    low, high = values.amin(1, keepdim=True), values.amax(1, keepdim=True)
    steps = torch.arange(1, bins + 1, device=values.device, dtype=values.dtype) / (bins + 1)
    levels = low + (high - low) * steps  # (B, K)
    below = (values.unsqueeze(1) <= levels.unsqueeze(2)).to(values.dtype)  # (B, K, N)
    n = values.shape[1]
    count = below.sum(2)
    total = values.sum(1, keepdim=True)
    sum_below = (below * values.unsqueeze(1)).sum(2)
    mean_below = sum_below / count.clamp_min(1)
    mean_above = (total - sum_below) / (n - count).clamp_min(1)
    share = count / n
    between = share * (1 - share) * (mean_below - mean_above) ** 2
    return levels.gather(1, between.argmax(1, keepdim=True)).squeeze(1)


def _grid_coords(size: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1] (``align_corners=False`` convention), ``(size,)``."""
    return (torch.arange(size, device=like.device, dtype=like.dtype) * 2 + 1) / size - 1


def lesion_boxes(x: torch.Tensor, *, crop_min: float, crop_max: float, margin: float = 1.25, map_size: int = 32,
                 prior_sd: float = 0.6, bins: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre ``(B, 2)`` as (x, y) in [-1, 1] and half-side ``(B,)`` (a fraction of the image's
    half-side) of a box around the darkest compact region of each image ``(B, C, H, W)``."""
    with torch.no_grad():
        grey = F.adaptive_avg_pool2d(x.float().mean(1, keepdim=True), map_size).flatten(1)  # (B, M*M)
        dark = (grey <= otsu_threshold(grey, bins).unsqueeze(1)).float()
        c = _grid_coords(map_size, grey)
        gy, gx = c.view(-1, 1).expand(map_size, map_size).flatten(), c.view(1, -1).expand(map_size, map_size).flatten()
        prior = torch.exp(-(gx ** 2 + gy ** 2) / (2 * prior_sd ** 2))
        w = dark * prior
        mass = w.sum(1, keepdim=True)
        found = mass > 1e-6
        w = torch.where(found, w / mass.clamp_min(1e-6), prior / prior.sum())  # nothing dark: the centre prior
        cx, cy = (w * gx).sum(1), (w * gy).sum(1)
        sd = torch.maximum(((w * (gx - cx[:, None]) ** 2).sum(1)).sqrt(), ((w * (gy - cy[:, None]) ** 2).sum(1)).sqrt())
        half = (margin * 2 * sd).clamp(crop_min, crop_max)
        # keep the box inside the image: shift the centre, never shrink the box
        limit = 1 - half
        centre = torch.stack([torch.maximum(torch.minimum(cx, limit), -limit),
                              torch.maximum(torch.minimum(cy, limit), -limit)], dim=1)
    return centre, half


def _sample(x: torch.Tensor, centre: torch.Tensor, half: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crop of the box (centre, half-side) to ``size x size``; the grid is built by
    broadcasting, not ``affine_grid``, so an exported graph keeps a dynamic batch."""
    base = _grid_coords(size, x)
    gx = centre[:, 0, None, None] + half[:, None, None] * base.view(1, 1, -1)
    gy = centre[:, 1, None, None] + half[:, None, None] * base.view(1, -1, 1)
    grid = torch.stack([gx.expand(-1, size, size), gy.expand(-1, size, size)], dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


class ViewSampler(nn.Module):
    """``x (B, C, H, W)`` -> one ``(B, C, size, size)`` tensor per configured view, in order."""

    def __init__(self, views: list[str] | tuple[str, ...], size: int, *, crop_min: float, crop_max: float,
                 margin: float = 1.25):
        super().__init__()
        unknown = sorted(set(views) - set(VIEW_KINDS))
        if unknown:
            raise ConfigError(f"model.multimodal.views: unknown view(s) {unknown}; choose from {', '.join(VIEW_KINDS)}")
        self.views, self.size = tuple(views), size
        self.crop_min, self.crop_max, self.margin = crop_min, crop_max, margin

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        if side == self.size:
            return x
        if side % self.size:
            raise ConfigError(f"model.multimodal.views.size {self.size} must divide the input side {side}")
        return F.avg_pool2d(x, side // self.size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        whole = self.whole(x) if {"global", "hflip", "vflip"} & set(self.views) else None
        out = []
        for kind in self.views:
            if kind == "global":
                out.append(whole)
            elif kind == "hflip":
                out.append(whole.flip(-1))
            elif kind == "vflip":
                out.append(whole.flip(-2))
            elif kind == "zoom":
                centre = x.new_zeros(x.shape[0], 2)
                out.append(_sample(x, centre, centre[:, 0] + ZOOM, self.size))
            else:  # lesion
                centre, half = lesion_boxes(x, crop_min=self.crop_min, crop_max=self.crop_max, margin=self.margin)
                out.append(_sample(x, centre, half, self.size))
        return out
