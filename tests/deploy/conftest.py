"""Images for the deployment tests (the shared ``trained_run`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import pattern_images


@pytest.fixture
def sample_images(tmp_path):
    """Five 20-px PNGs (the model takes 16 px, so they are resized as in training)."""
    from PIL import Image

    x, _ = pattern_images(2, 3, 20, 3, seed=5)
    paths = []
    for i, img in enumerate(x[:5]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths
