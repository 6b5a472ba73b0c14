import numpy as np

from hybridmednet.data.dataset import ArrayDataset, EpochSampler, balanced_weights
from hybridmednet.data.transforms import build_train_transform


def test_sampler_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(50, seed=1), EpochSampler(50, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(4)
    assert list(a) != list(b)


def test_sampler_shards_across_ranks_without_overlap():
    ranks = [EpochSampler(11, seed=0, rank=r, world_size=2) for r in range(2)]
    shards = [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == 6
    assert set(shards[0]) | set(shards[1]) == set(range(11))


def test_balanced_sampling_equalises_classes():
    targets = np.array([0] * 90 + [1] * 10)
    sampler = EpochSampler(100, seed=0, weights=balanced_weights(targets))
    drawn = targets[list(sampler) * 1]
    assert 0.35 < drawn.mean() < 0.65


def test_augmentation_is_reproducible_per_epoch():
    images = np.random.default_rng(0).integers(0, 255, (4, 28, 28, 3), dtype=np.uint8)
    ds = ArrayDataset(images, np.zeros(4, dtype=np.int64), build_train_transform("light", 28, 3, seed=0))
    ds.set_epoch(2)
    first = [ds[i][0] for i in range(4)]
    ds.set_epoch(2)
    again = [ds[i][0] for i in range(4)]
    assert all((x == y).all() for x, y in zip(first, again))
    x, y = ds[0]
    assert tuple(x.shape) == (3, 28, 28) and str(x.dtype) == "torch.uint8"


def test_grey_images_keep_one_channel():
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 1), dtype=np.uint8)
    ds = ArrayDataset(images, np.zeros(2, dtype=np.int64), build_train_transform("strong", 64, 1, seed=0))
    assert tuple(ds[0][0].shape) == (1, 64, 64)
