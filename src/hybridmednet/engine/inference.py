"""The one inference path: uint8 images -> normalised batches -> probabilities.

Plain prediction, flip test-time augmentation and Monte-Carlo dropout all build their batches
with :func:`batches` and turn logits into probabilities with :func:`logits_to_probs`, so a
caller (training's validation, evaluate, ensembles, the report, predict, and the commands still
to come) cannot drift from the preprocessing the model was trained with. Callers holding a
trained run use :class:`hybridmednet.engine.run.Run`, which passes its own preprocessing here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hybridmednet.data.preprocess import normalize_batch
from hybridmednet.errors import ConfigError
from hybridmednet.output import as_output
from hybridmednet.utils.probability import predictive_entropy

__all__ = ["FLIPS", "batch_extras", "batches", "logits_to_probs", "mc_dropout_predict", "predict_arrays", "tta_predict"]

FLIPS = {"none": (), "h": (-1,), "v": (-2,), "hv": (-2, -1)}  # last axes: 2D (H, W), 3D (D, H, W)


def batch_extras(extras: dict[str, np.ndarray] | None, start: int, size: int, device) -> dict[str, torch.Tensor]:
    """Rows ``start:start+size`` of each clinical input, as tensors on ``device``."""
    return {k: torch.from_numpy(np.ascontiguousarray(v[start:start + size])).to(device) for k, v in (extras or {}).items()}


def batches(images: np.ndarray, mean, std, runtime, batch_size: int, extras=None):
    """``(start, x, clinical)``: normalised ``(B, C, H, W)`` (volumes ``(B, C, D, H, W)``) tensors on
    the runtime's device (in its memory format) and the batch's clinical inputs (empty for
    image-only models)."""
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images[start:start + batch_size], -1, 1)))
        x = normalize_batch(chunk.to(runtime.device), mean, std, channels_last=runtime.channels_last)
        yield start, x, batch_extras(extras, start, batch_size, runtime.device)


def logits_to_probs(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def _logits(model: nn.Module, x: torch.Tensor, runtime, clinical) -> torch.Tensor:
    with runtime.autocast():
        return as_output(model(x, **(clinical or {}))).logits.float()


def _probs(model: nn.Module, x: torch.Tensor, runtime, multilabel: bool, clinical=None) -> np.ndarray:
    return logits_to_probs(_logits(model, x, runtime, clinical), multilabel).cpu().double().numpy()


def _stack(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 0))


class _keep_modes:
    """Eval mode inside, every module's train/eval mode restored on exit (inference must not leave
    a model changed; code inside may switch modules, e.g. dropout for MC sampling). Only what
    differs is touched: a served model is already in eval mode, and setting every module's mode
    twice per call costs milliseconds, more than a small model's batch-1 forward."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.modes = [(m, m.training) for m in model.modules()]

    def __enter__(self):
        if any(mode for _, mode in self.modes):
            self.model.eval()
        return self

    def __exit__(self, *exc):
        for module, mode in self.modes:
            if module.training != mode:
                module.training = mode


@torch.no_grad()
def predict_arrays(model: nn.Module, images: np.ndarray, *, mean, std, runtime, multilabel: bool,
                   batch_size: int = 512, targets: np.ndarray | None = None, loss_fn: nn.Module | None = None,
                   extras: dict[str, np.ndarray] | None = None):
    """Return ``(probs (N, C) float64, mean loss or None)`` for ``images`` (N, H, W, C) uint8 in
    eval mode. ``extras``: per-sample clinical inputs of a multimodal model, sliced like the images."""
    probs, total_loss = [], 0.0
    with _keep_modes(model):
        for start, x, clinical in batches(images, mean, std, runtime, batch_size, extras):
            logits = _logits(model, x, runtime, clinical)
            if loss_fn is not None and targets is not None:
                y = torch.as_tensor(targets[start:start + batch_size], device=logits.device)
                total_loss += float(loss_fn(logits, y)) * len(x)
            probs.append(logits_to_probs(logits, multilabel).cpu().double().numpy())
    loss = total_loss / max(len(images), 1) if loss_fn is not None and targets is not None else None
    return _stack(probs), loss


class _Moments:
    """Running sums over stochastic passes: mean, std and mean entropy without storing samples."""

    def __init__(self, multilabel: bool):
        self.multilabel, self.k = multilabel, 0
        self.s = self.s2 = self.h = 0.0

    def add(self, p: np.ndarray) -> None:
        self.k += 1
        self.s = self.s + p
        self.s2 = self.s2 + p * p
        self.h = self.h + predictive_entropy(p, multilabel=self.multilabel)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = self.s / self.k
        std = np.sqrt(np.maximum(self.s2 / self.k - mean * mean, 0.0))
        mi = np.maximum(predictive_entropy(mean, multilabel=self.multilabel) - self.h / self.k, 0.0)
        return mean, std, mi


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, images_uint8: np.ndarray, *, mean, std, runtime, multilabel: bool,
                       n_samples: int = 20, batch_size: int = 256, uncertainty: str = "std",
                       seed: int | None = 0, extras=None) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo dropout: ``n_samples`` passes with only the Dropout modules in train mode.

    BatchNorm (and everything else) stays in eval mode, so running statistics are neither used
    per-batch nor updated; every module's original mode is restored afterwards. Only
    ``nn.Dropout*`` modules count: dropout applied functionally (e.g. ``F.dropout`` in timm
    ResNet heads) or stochastic depth is not sampled, and a model without a Dropout module with
    p > 0 raises :class:`ConfigError`. ``seed`` fixes the dropout masks (global RNG untouched).

    Returns ``(mean_probs (N, C), u)``: ``uncertainty="std"`` -> u is the per-class std over passes
    (N, C); ``"mi"`` -> u is the mutual information (N,) (epistemic part of the predictive
    entropy), normalised like :func:`predictive_entropy`.
    """
    if uncertainty not in ("std", "mi"):
        raise ConfigError(f"uncertainty must be 'std' or 'mi', got {uncertainty!r}")
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    if not drops:
        raise ConfigError(
            f"MC dropout needs an nn.Dropout module with p > 0; {type(model).__name__} has none "
            "(set model.drop_rate > 0; timm ResNets apply drop_rate functionally, which MC dropout cannot sample)"
        )
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    means, us = [], []
    with _keep_modes(model), torch.random.fork_rng(devices=devices, enabled=seed is not None):
        model.eval()
        for m in drops:
            m.train(True)
        if seed is not None:
            torch.manual_seed(seed)
        for _, x, clinical in batches(images_uint8, mean, std, runtime, batch_size, extras):
            acc = _Moments(multilabel)
            for _ in range(n_samples):
                acc.add(_probs(model, x, runtime, multilabel, clinical))
            m_, s_, mi_ = acc.result()
            means.append(m_)
            us.append(s_ if uncertainty == "std" else mi_)
    return _stack(means), _stack(us)


@torch.no_grad()
def tta_predict(model: nn.Module, images_uint8: np.ndarray, *, mean, std, runtime, multilabel: bool,
                flips=("none", "h", "v", "hv"), batch_size: int = 256, extras=None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic flip test-time augmentation: ``(mean_probs (N, C), std over flips (N, C))``.

    Probabilities (not logits) are averaged. Vertical flips suit orientation-free images
    (dermoscopy, histology, blood cells); for chest X-rays pass ``flips=("none", "h")`` or less.
    The model runs in eval mode; every module's original mode is restored.
    """
    bad = [f for f in flips if f not in FLIPS]
    if bad or not flips:
        raise ConfigError(f"flips must be a non-empty subset of {sorted(FLIPS)}, got {list(flips)}")
    means, stds = [], []
    with _keep_modes(model):
        for _, x, clinical in batches(images_uint8, mean, std, runtime, batch_size, extras):
            acc = _Moments(multilabel)
            for f in flips:
                acc.add(_probs(model, torch.flip(x, FLIPS[f]) if FLIPS[f] else x, runtime, multilabel, clinical))
            m_, s_, _ = acc.result()
            means.append(m_)
            stds.append(s_)
    return _stack(means), _stack(stds)
