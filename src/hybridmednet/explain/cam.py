"""Class activation maps (Grad-CAM and friends) for trained HybridMedNet models.

Built on pytorch-grad-cam (``pip install hybridmednet[report]``), imported lazily because
it takes seconds to import (it pulls matplotlib and torchvision). Images go through exactly
the training preprocessing (:func:`~hybridmednet.data.preprocess.normalize_batch`) and the
model runs in fp32 eval mode without autocast: gradients of half-precision activations are
noisy and BatchNorm/dropout must behave as at inference.

At 28 px the last stage of a CNN is a 4x4 map, so the CAM is coarse by construction; the
library upsamples it bilinearly to the image size. Every map is min-max scaled to [0, 1] per
image, so it shows *where* within an image, not *how much* across images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.explain.targets import find_target
from hybridmednet.output import LogitsOnly

CAM_METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "scorecam": "ScoreCAM",
               "eigencam": "EigenCAM"}
ATTENTION = "attention"  # uses the model's own ``forward_attention_maps(x) -> (N, h, w)``
METHODS = (*CAM_METHODS, ATTENTION)
MIN_OVERLAY_SIDE = 224  # tiny images (MedMNIST's 28 px) are upscaled so the overlay is visible


def _grad_cam():
    from hybridmednet._compat.torchvision import ensure_torchvision

    ensure_torchvision()  # pytorch_grad_cam imports torchvision
    try:
        import pytorch_grad_cam
    except ImportError as exc:
        raise ConfigError("explain: needs the grad-cam package; pip install 'hybridmednet[report]'") from exc
    return pytorch_grad_cam


def _targets(target_classes, n: int):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if target_classes is None:
        return None  # the library explains each image's top-scoring class
    classes = [int(target_classes)] * n if np.ndim(target_classes) == 0 else [int(c) for c in target_classes]
    if len(classes) != n:
        raise ConfigError(f"explain: {len(classes)} target classes for {n} images")
    return [ClassifierOutputTarget(c) for c in classes]


def _minmax(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return (maps - low) / np.maximum(high - low, 1e-7)


def compute_cam(model: nn.Module, images_uint8: np.ndarray, *, mean, std, method: str = "gradcam",
                target_classes: int | Sequence[int] | None = None) -> np.ndarray:
    """CAMs ``(N, H, W)`` float32 in [0, 1] for ``uint8`` images ``(N, H, W, C)`` (volumes
    ``(N, D, H, W, 1)`` give ``(N, D, H, W)``: pytorch-grad-cam handles 3D activations).

    ``target_classes``: one class index for all images, one per image, or ``None`` for each
    image's predicted class. ``method``: one of :data:`METHODS`.
    """
    from hybridmednet.data.preprocess import normalize_batch

    if method not in METHODS:
        raise ConfigError(f"explain: unknown method {method!r}; choose from {', '.join(METHODS)}")
    images = np.asarray(images_uint8)
    if images.ndim not in (4, 5) or images.dtype != np.uint8:
        raise ConfigError(f"explain: expected uint8 images (N, H, W, C) or volumes (N, D, H, W, C), "
                          f"got {images.dtype} {images.shape}")
    param = next(model.parameters())
    x = normalize_batch(torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1))).to(param.device), mean, std)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), torch.autocast(param.device.type, enabled=False):
            if method == ATTENTION:
                if x.ndim == 5:
                    raise ConfigError("explain: method 'attention' is 2D only; use gradcam for volumes")
                return _attention(model, x)
            return _library_cam(model, x, method, target_classes)
    finally:
        model.train(was_training)


def _library_cam(model, x, method, target_classes) -> np.ndarray:
    cam_cls = getattr(_grad_cam(), CAM_METHODS[method])
    target = find_target(model, tuple(x.shape[1:]))
    # pytorch-grad-cam reads a logits tensor; our models return ModelOutput (LogitsOnly unwraps it)
    cam = cam_cls(model=LogitsOnly(model).eval(), target_layers=[target.layer], reshape_transform=target.reshape_transform)
    try:
        maps = cam(input_tensor=x, targets=_targets(target_classes, len(x)))
        h, w = cam.activations_and_grads.activations[0].shape[-2:]
        if min(h, w) < 2 and x.ndim == 4:  # a 1-pixel map min-max scales to all zeros: say why instead
            raise ConfigError(f"explain: {type(model).__name__}'s target layer ({target.family}) is {h}x{w} at "
                              f"{x.shape[-1]} px, so a CAM has no spatial detail; use larger images "
                              "(or model.small_stem for ResNets) or a model that downsamples less")
    finally:
        cam.activations_and_grads.release()  # remove the hooks: the model is the caller's
    return np.clip(np.nan_to_num(maps.astype(np.float32)), 0.0, 1.0)


def _attention(model, x) -> np.ndarray:
    if not callable(getattr(model, "forward_attention_maps", None)):
        raise ConfigError(f"explain: method 'attention' needs a model with forward_attention_maps(x); "
                          f"{type(model).__name__} has no attention maps; use one of {', '.join(CAM_METHODS)}")
    with torch.no_grad():
        maps = model.forward_attention_maps(x).float()
    maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _minmax(maps.cpu().numpy()).astype(np.float32)


def overlay(image_uint8: np.ndarray, cam: np.ndarray, *, image_weight: float = 0.5) -> np.ndarray:
    """Heat map (jet) blended over the image: ``uint8`` RGB at the image's size.

    Grey images are repeated to RGB; a CAM of another size is resized bilinearly to the image.
    """
    import cv2

    _grad_cam()
    from pytorch_grad_cam.utils.image import show_cam_on_image

    image = np.asarray(image_uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != image.shape[:2]:
        cam = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(image.astype(np.float32) / 255.0, np.clip(cam, 0, 1), use_rgb=True,
                             image_weight=image_weight)


def volume_montage(volume: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A volume ``(D, H, W, 1)`` and its CAM ``(D, H, W)`` as two 2D montages ``(H, 3W)``: the
    axial, coronal and sagittal slices through the CAM's peak voxel, side by side (image, and the
    overlay's input), so the 2D overlay code draws them."""
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    image = volume[..., 0]
    views = [(image[peak[0]], cam[peak[0]]), (image[:, peak[1]], cam[:, peak[1]]), (image[:, :, peak[2]], cam[:, :, peak[2]])]
    return (np.concatenate([v[0] for v in views], axis=1)[..., None],
            np.concatenate([v[1] for v in views], axis=1).astype(np.float32))


def _upscale(image: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour for pixels (keeps them honest), bilinear for the already-smooth CAM."""
    import cv2

    factor = math.ceil(MIN_OVERLAY_SIDE / min(image.shape[:2]))
    if factor <= 1:
        return image, cam
    size = (image.shape[1] * factor, image.shape[0] * factor)
    big = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
    big = big[..., None] if big.ndim == 2 else big
    return big, cv2.resize(cam, size, interpolation=cv2.INTER_LINEAR)


def explain_files(run_dir: str | Path, inputs: list[str], out_dir: str | Path, *, method: str = "gradcam",
                  target: int | str | None = None, device: str | None = None) -> list[dict]:
    """Overlays ``out_dir/<stem>_<method>.png`` for images, folders or CSVs, with the run's preprocessing.

    ``target``: class name or index to explain for every image; ``None`` explains each
    image's predicted class. Returns one ``{path, predicted, prob, target, overlay}`` per image.
    """
    from PIL import Image

    from hybridmednet.data.imageio import load_image
    from hybridmednet.data.inputs import expand_inputs
    from hybridmednet.data.resize import fit_to_square
    from hybridmednet.engine.run import Run
    from hybridmednet.engine.run_dir import refuse_multimodal

    refuse_multimodal(run_dir, "explain")
    run = Run.load(run_dir, device=device)
    prep, names = run.preprocessing, run.class_names
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if target not in names:
            raise ConfigError(f"explain: unknown target class {target!r}; classes: {', '.join(names)}")
        target = names.index(target)
    if target is not None and not 0 <= int(target) < len(names):
        raise ConfigError(f"explain: target {target} out of range; the model has {len(names)} classes")
    paths = expand_inputs(list(inputs))
    images = np.stack([fit_to_square(load_image(p, prep["channels"]), prep["image_size"], prep["resize"])
                       for p in paths])
    probs = run.predict(images)
    model = run.model.float().to(memory_format=torch.contiguous_format).eval()  # Grad-CAM hooks want fp32 NCHW
    predicted = probs.argmax(1)
    explained = predicted if target is None else np.full(len(paths), int(target))
    cams = np.concatenate([compute_cam(model, images[i:i + 16], mean=prep["mean"], std=prep["std"],
                                       method=method, target_classes=explained[i:i + 16])
                           for i in range(0, len(images), 16)])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for path, image, cam, pred, tgt, row in zip(paths, images, cams, predicted, explained, probs):
        stem = Path(path).name.split(".")[0]
        name, k = f"{stem}_{method}.png", 1
        while name in used:  # same file name in two folders: keep both
            name, k = f"{stem}-{k}_{method}.png", k + 1
        used.add(name)
        Image.fromarray(overlay(*_upscale(image, cam))).save(out_dir / name)
        results.append({"path": path, "predicted": names[int(pred)], "prob": float(row[pred]),
                        "target": names[int(tgt)], "overlay": str(out_dir / name)})
    return results
