"""Shared fixtures: tiny, learnable data sets written by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(os.environ.get("HYBRIDMEDNET_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def requires_shared_data(*parts: str):
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present")


def pattern_images(n_per_class: int, n_classes: int, size: int, channels: int, seed: int = 0):
    """Class k is a bright bar at a class-specific row/column plus noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(n_classes):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, size=(size, size, channels), dtype=np.uint8)
            pos = (k + 1) * size // (n_classes + 1)
            if k % 2:
                img[pos - 1:pos + 1, :] = 230
            else:
                img[:, pos - 1:pos + 1] = 230
            images.append(img)
            labels.append(k)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels)[order]


def write_npz(path: Path, n_classes: int = 3, counts=(40, 10, 10), size: int = 16, keep=None) -> Path:
    """A MedMNIST-style npz of :func:`pattern_images` (``counts`` per class for train, val, test);
    ``keep``: only these classes (labels unchanged)."""
    arrays = {}
    for split, n, seed in zip(("train", "val", "test"), counts, (0, 1, 2)):
        x, y = pattern_images(n, n_classes, size, 3, seed)
        if keep is not None:
            mask = np.isin(y, keep)
            x, y = x[mask], y[mask]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
    np.savez(path, **arrays)
    return path


def torchrun_command(config: Path, nproc: int = 2) -> list[str]:
    """``hybridmednet train`` under torchrun on a free loopback port."""
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={port}", "-m", "hybridmednet", "train", "--config", str(config), "--quiet"]


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A MedMNIST-style npz (``tinymnist.npz``): 3 classes, 16 px RGB, official key layout."""
    return write_npz(tmp_path / "tinymnist.npz")


@pytest.fixture
def clinical_npz(tiny_npz: Path) -> Path:
    """``tiny_npz`` plus ``clinical.csv`` keyed like MedMNIST ids (split, index): age, sex and a
    body site that agrees with the label 70% of the time, some values missing, and a dx_type
    column (the leak the clinical inputs must refuse)."""
    rng = np.random.default_rng(5)
    rows = ["split,index,age,sex,site,dx_type"]
    with np.load(tiny_npz) as arrays:
        for split in ("train", "val", "test"):
            for i, label in enumerate(arrays[f"{split}_labels"][:, 0]):
                site = ["back", "face", "hand"][label if rng.random() < 0.7 else rng.integers(3)]
                age = "" if rng.random() < 0.15 else str(int(rng.integers(20, 80)))
                sex = ["male", "female", "unknown"][int(rng.integers(3))]
                rows.append(f"{split},{i},{age},{sex},{site},{['histo', 'follow_up'][int(label) % 2]}")
    path = tiny_npz.parent / "clinical.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def clinical_section(path: Path, **overrides) -> dict:
    section = {"table": {"path": str(path), "id_template": "{split}/{index}"}, "inputs": "text",
               "template": ["{age:.0f}-year-old", "{sex}", "lesion on the {site}"],
               "missing": {"age": "age unknown"}, "numeric": ["age"], "categorical": ["sex", "site"],
               "text_encoder": {"kind": "scratch"}}
    section.update(overrides)
    return section


def tiny_config(root: Path, run_root: Path, **train) -> dict:
    cfg = {
        "name": "tiny",
        "output_dir": str(run_root),
        "seed": 0,
        "data": {"source": {"kind": "medmnist", "root": str(root), "flag": "tinymnist", "download": False},
                 "image_size": 16, "channels": 3, "augment": "light", "batch_size": 16, "eval_batch_size": 64,
                 "cache": False},
        "model": {"name": "small_cnn", "kwargs": {"widths": [8, 16, 16, 32]}},
        "train": {"epochs": 3, "lr": 0.005, "precision": "fp32", "warmup_epochs": 0.5, "threads": 1,
                  "early_stopping_patience": None},
        "eval": {"n_bootstrap": 50},
    }
    cfg["train"].update(train)
    return cfg


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``root/{train,test}/{a,b}/*.png``: 8 + 4 images per class, 12 px RGB."""
    root = tmp_path / "folder"
    x, y = pattern_images(12, 2, 12, 3, seed=3)
    for i, (img, label) in enumerate(zip(x, y)):
        split = "test" if i % 3 == 0 else "train"
        d = root / split / "ab"[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"patient{i // 2}_img{i}.png")
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny trained run shared by a test module (trained once per module)."""
    from hybridmednet.config.loader import load_config
    from hybridmednet.engine.trainer import train

    root = tmp_path_factory.mktemp("trained")
    arrays = {}
    for split, n, seed in (("train", 40, 0), ("val", 10, 1), ("test", 10, 2)):
        x, y = pattern_images(n, 3, 16, 3, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
    np.savez(root / "tinymnist.npz", **arrays)
    cfg = load_config(raw=tiny_config(root, root / "runs", epochs=2))
    train(cfg, quiet=True)
    return cfg.run_dir


def checkpoint_weights(run: Path, tag: str = "last") -> dict:
    """The tensors of a run's ``best`` or ``last`` checkpoint."""
    import json

    from safetensors.torch import load_file

    meta = json.loads((run / "checkpoints" / f"{tag}.json").read_text())
    return load_file(run / "checkpoints" / meta["weights"])
