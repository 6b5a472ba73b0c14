"""Views cut inside the model: Otsu's threshold, the label-free lesion box, and the view sampler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybridmednet.errors import ConfigError
from hybridmednet.layers.views import ViewSampler, lesion_boxes, otsu_threshold


def _coords(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(size) * 2 + 1) / size - 1
    return torch.meshgrid(c, c, indexing="ij")


def dark_disc(size: int = 64, centre=(0.3, -0.2), radius: float = 0.3) -> torch.Tensor:
    """Bright skin (0.9) with a dark disc (0.2), centre as (x, y) in [-1, 1]."""
    yy, xx = _coords(size)
    img = torch.full((1, 3, size, size), 0.9)
    img[0, :, (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < radius ** 2] = 0.2
    return img


def test_otsu_splits_a_two_level_row_between_its_levels():
    row = torch.cat([torch.full((30,), 0.1), torch.full((70,), 0.8)])[None]
    t = otsu_threshold(row, bins=32)
    assert 0.1 <= t.item() < 0.8
    assert otsu_threshold(torch.full((1, 10), 0.5)).item() == pytest.approx(0.5)  # constant: no split, no NaN


def test_the_box_is_centred_on_a_dark_lesion_and_sized_by_it():
    centre, half = lesion_boxes(dark_disc(), crop_min=0.1, crop_max=0.9, margin=1.25)
    assert centre[0].tolist() == pytest.approx([0.3, -0.2], abs=0.05)
    assert half.item() == pytest.approx(1.25 * 0.3, rel=0.1)  # a disc of radius r has coordinate sd r / 2


def test_the_box_is_clamped_and_stays_inside_the_image():
    centre, half = lesion_boxes(dark_disc(centre=(0.8, 0.8), radius=0.1), crop_min=0.5, crop_max=0.9)
    assert half.item() == pytest.approx(0.5)
    assert (centre.abs() + half[:, None] <= 1 + 1e-6).all()
    centre, half = lesion_boxes(torch.ones(2, 3, 32, 32), crop_min=0.3, crop_max=0.7)  # nothing dark
    assert centre.abs().max() < 1e-6 and half.tolist() == pytest.approx([0.7, 0.7])


def test_views_have_the_view_size_and_the_whole_image_is_an_area_downsample():
    x = torch.rand(3, 3, 64, 64)
    views = ViewSampler(["global", "lesion", "hflip", "vflip", "zoom"], 16, crop_min=0.4, crop_max=0.9)(x)
    assert [tuple(v.shape) for v in views] == [(3, 3, 16, 16)] * 5
    assert torch.allclose(views[0], F.avg_pool2d(x, 4))
    assert torch.equal(views[2], views[0].flip(-1)) and torch.equal(views[3], views[0].flip(-2))


def test_the_lesion_view_reads_the_full_resolution_box():
    """On an image whose value is its own x coordinate (bilinear sampling is exact on a ramp), the
    crop's values span the box's columns: the crop is the box, read from the input."""
    size = 64
    _, xx = _coords(size)
    x = xx.expand(1, 3, size, size).clone()
    crop = ViewSampler(["lesion"], 32, crop_min=0.1, crop_max=0.9)(x)[0]
    centre, half = lesion_boxes(x, crop_min=0.1, crop_max=0.9)
    assert centre[0, 0] < 0  # the dark (low) side of the ramp
    edge = half[0] * (1 - 1 / 32)  # outermost pixel centres of the 32-px crop
    assert crop[0, 0].min().item() == pytest.approx((centre[0, 0] - edge).item(), abs=1e-4)
    assert crop[0, 0].max().item() == pytest.approx((centre[0, 0] + edge).item(), abs=1e-4)


def test_gradients_reach_the_image_through_every_view_but_not_through_the_box():
    x = dark_disc().requires_grad_()
    sum(v.sum() for v in ViewSampler(["global", "lesion", "zoom"], 16, crop_min=0.3, crop_max=0.9)(x)).backward()
    assert x.grad.abs().sum() > 0
    centre, half = lesion_boxes(x, crop_min=0.3, crop_max=0.9)
    assert not centre.requires_grad and not half.requires_grad


def test_bad_views_are_config_errors():
    with pytest.raises(ConfigError, match="unknown view"):
        ViewSampler(["global", "side"], 16, crop_min=0.3, crop_max=0.9)
    with pytest.raises(ConfigError, match="must divide the input side 40"):
        ViewSampler(["global"], 16, crop_min=0.3, crop_max=0.9)(torch.rand(1, 3, 40, 40))
