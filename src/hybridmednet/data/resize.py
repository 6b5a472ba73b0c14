"""Resizing an image to the model's square input: the one implementation shared by training
(``materialize``), prediction, explanations and the torch-free ONNX runtime, so a deployed model
sees exactly the pixels it was trained on. Needs only numpy and OpenCV (no torch).
"""

from __future__ import annotations

import cv2
import numpy as np


def fit_to_square(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Centre-crop to a square (``center_crop``) or stretch (``squash``), then resize.

    Downscaling uses area interpolation (a box filter, as MedMNIST's own recipe), upscaling
    bicubic.
    """
    h, w = image.shape[:2]
    if mode == "center_crop" and h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top:top + side, left:left + side]
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    out = cv2.resize(image, (size, size), interpolation=interpolation)
    return out[..., None] if out.ndim == 2 else out
