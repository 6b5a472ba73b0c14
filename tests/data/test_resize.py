"""fit_to_square: centre crop or squash, box-filter downscaling, shapes kept for grey images."""

import numpy as np

from hybridmednet.data.resize import fit_to_square


def test_center_crop_takes_the_middle_square_and_squash_keeps_everything():
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, :2] = 255  # a bright band at the far left: cropped away, squashed in
    assert fit_to_square(image, 4, "center_crop").max() == 0
    squashed = fit_to_square(image, 4, "squash")
    assert squashed.shape == (4, 4, 3) and squashed[:, 0].min() == 255 and squashed[:, -1].max() == 0


def test_downscaling_averages_boxes_and_grey_keeps_its_channel():
    image = np.kron(np.array([[0, 200], [100, 50]], np.uint8), np.ones((4, 4), np.uint8))[..., None]
    out = fit_to_square(image, 2, "center_crop")
    assert out.shape == (2, 2, 1) and out[..., 0].tolist() == [[0, 200], [100, 50]]
    checker = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)[..., None]
    assert fit_to_square(checker, 4, "squash").squeeze().tolist() == [[128] * 4] * 4  # area mean, not a sample


def test_the_right_size_is_returned_unchanged():
    image = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_to_square(image, 6, "center_crop"), image)
