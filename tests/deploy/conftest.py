"""A tiny trained run shared by the deployment tests (trained once per module)."""

from __future__ import annotations

import numpy as np
import pytest

from hybridmednet.config.loader import load_config
from hybridmednet.engine.trainer import train
from tests.conftest import pattern_images, tiny_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    arrays = {}
    for split, n, seed in (("train", 40, 0), ("val", 10, 1), ("test", 10, 2)):
        x, y = pattern_images(n, 3, 16, 3, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
    np.savez(root / "tinymnist.npz", **arrays)
    cfg = load_config(raw=tiny_config(root, root / "runs", epochs=2))
    train(cfg, quiet=True)
    return cfg.run_dir


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
