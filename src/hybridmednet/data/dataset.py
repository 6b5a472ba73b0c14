"""Torch dataset over in-memory uint8 arrays, and a sampler that is deterministic per epoch.

Samples leave the dataset as ``uint8 (C, H, W)`` tensors (volumes ``(C, D, H, W)``); conversion to float and
normalisation happen once per batch (see ``preprocess.py``), which is cheaper than per image.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ArrayDataset(Dataset):
    def __init__(self, images: np.ndarray, targets: np.ndarray, transform=None, seed: int = 0,
                 extras: dict[str, np.ndarray] | None = None, return_index: bool = False):
        self.images = images
        self.return_index = return_index  # samples end with their index (cached per-sample targets)
        self.targets = torch.as_tensor(targets)
        self.extras = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in (extras or {}).items()}
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed augmentation so epoch ``e`` draws the same augmentations after a resume."""
        self.epoch = epoch
        if self.transform is not None:
            self.transform.set_random_seed(self.seed * 100_003 + epoch)

    def init_worker(self, worker_id: int) -> None:
        """DataLoader ``worker_init_fn``: each worker gets its own, still deterministic, stream."""
        if self.transform is not None:
            self.transform.set_random_seed(self.seed * 100_003 + self.epoch * 101 + worker_id + 1)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
        sample = (tensor, self.targets[index])
        if self.extras:  # clinical inputs of multimodal models, batched by the default collate
            sample += ({k: v[index] for k, v in self.extras.items()},)
        return sample + (index,) if self.return_index else sample


def balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Per-sample weights giving each class equal expected frequency (multi-label: by the rarest
    positive label of the sample)."""
    if targets.ndim == 1:
        counts = np.bincount(targets)
        return 1.0 / counts[targets]
    counts = targets.sum(axis=0).clip(min=1)
    rarest = np.where(targets > 0, 1.0 / counts[None, :], 0.0).max(axis=1)
    return np.where(rarest > 0, rarest, 1.0 / len(targets))


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced) indices, sharded across DDP ranks.

    The order depends only on ``(seed, epoch)``, so every rank agrees on it and a resumed run
    sees the same batches as an uninterrupted one. Balanced sampling draws with replacement.
    """

    def __init__(self, n: int, *, seed: int, weights: np.ndarray | None = None, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch = 0
        self.per_rank = -(-n // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=generator)
        total = self.per_rank * self.world_size
        order = torch.cat([order, order[: total - self.n]])  # pad so every rank gets the same count
        return iter(order[self.rank:total:self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
