"""Per-sample uncertainty, selective prediction (abstention) and stochastic/TTA inference.

A clinical classifier should say "I don't know" on the cases it is least sure of and send them to
a human. The accuracy-coverage curve shows what that buys; :func:`choose_abstain_threshold` picks
the cut-off on the **validation** split (picking it on test would overstate the gain). Uncertainty
is "larger = less sure" everywhere; a sample is kept when ``uncertainty <= threshold``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hybridmednet.data.preprocess import normalize_batch
from hybridmednet.engine.inference import batch_extras, logits_to_probs
from hybridmednet.errors import ConfigError
from hybridmednet.models.output import as_output
from hybridmednet.utils.probability import predictive_entropy

__all__ = [
    "accuracy_coverage_curve",
    "choose_abstain_threshold",
    "correct_predictions",
    "max_prob_uncertainty",
    "mc_dropout_predict",
    "predictive_entropy",
    "tta_predict",
]

_FLIPS = {"none": (), "h": (3,), "v": (2,), "hv": (2, 3)}


def max_prob_uncertainty(probs, *, multilabel: bool = False) -> np.ndarray:
    """(N,) 1 - top-1 probability (multi-label: mean over labels of 1 - max(p, 1 - p))."""
    probs = np.asarray(probs, dtype=np.float64)
    if multilabel:
        return (1 - np.maximum(probs, 1 - probs)).mean(axis=1)
    return 1 - probs.max(axis=1)


def correct_predictions(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Single-label: argmax == target; multi-label ((N, C) targets): every label right at 0.5."""
    if targets.ndim == 2:
        return ((probs >= 0.5) == (targets > 0.5)).all(axis=1)
    return probs.argmax(axis=1) == targets


def _selective_curve(uncertainty, correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, coverage, accuracy), one point per distinct uncertainty value.

    Samples with equal uncertainty cannot be separated by a threshold, so a tie group is kept or
    dropped as a whole: points sit at the end of each tie group.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    if u.ndim != 1 or u.shape != c.shape or not len(u):
        raise ValueError(f"uncertainty and correct must be equal-length non-empty 1-D; got {u.shape}, {c.shape}")
    order = np.argsort(u, kind="stable")
    u, c = u[order], c[order]
    ends = np.append(np.flatnonzero(np.diff(u) > 0), len(u) - 1)
    kept = ends + 1
    return u[ends], kept / len(u), np.cumsum(c)[ends] / kept


def accuracy_coverage_curve(probs, targets, uncertainty) -> dict:
    """Accuracy on the kept samples as the most uncertain ones are dropped.

    Returns plain lists ``coverage`` (ascending), ``accuracy``, ``thresholds`` (keep
    ``uncertainty <= t`` to get that coverage) and ``aurc``: area under the risk (1 - accuracy)
    vs coverage curve, a right-Riemann sum over coverage levels, which equals the usual
    mean-of-risks definition when there are no ties. Lower AURC is better.
    Correct = argmax == target (single-label) or all labels right at 0.5 (multi-label).
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    thr, cov, acc = _selective_curve(uncertainty, correct_predictions(probs, targets))
    widths = np.diff(np.concatenate([[0.0], cov]))
    return {
        "coverage": cov.tolist(),
        "accuracy": acc.tolist(),
        "thresholds": thr.tolist(),
        "aurc": float(np.sum((1 - acc) * widths)),
    }


def choose_abstain_threshold(val_uncertainty, val_correct, target_accuracy: float | None = None,
                             target_coverage: float | None = None) -> float:
    """Uncertainty threshold chosen on validation; apply as ``keep = uncertainty <= threshold``.

    ``target_accuracy``: the largest threshold (most coverage) whose kept-sample accuracy on val is
    >= the target; ``-inf`` (abstain on everything) when no threshold reaches it.
    ``target_coverage``: the smallest threshold that keeps >= that fraction of val.
    Give exactly one target.
    """
    if (target_accuracy is None) == (target_coverage is None):
        raise ValueError("give exactly one of target_accuracy or target_coverage")
    thr, cov, acc = _selective_curve(val_uncertainty, val_correct)
    if target_accuracy is not None:
        ok = np.flatnonzero(acc >= target_accuracy - 1e-12)
        return float(thr[ok[-1]]) if len(ok) else float("-inf")
    if not 0 < target_coverage <= 1:
        raise ValueError(f"target_coverage must be in (0, 1], got {target_coverage}")
    return float(thr[np.flatnonzero(cov >= target_coverage - 1e-12)[0]])


def _batches(images: np.ndarray, mean, std, runtime, batch_size: int, extras=None):
    """``(x, clinical)``: normalised (B, C, H, W) tensors, exactly as :func:`predict_arrays` builds
    them, and the batch's clinical inputs (empty for image-only models)."""
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2)))
        x = normalize_batch(chunk.to(runtime.device), mean, std, channels_last=runtime.channels_last)
        yield x, batch_extras(extras, start, batch_size, runtime.device)


def _probs(model: nn.Module, x: torch.Tensor, runtime, multilabel: bool, clinical=None) -> np.ndarray:
    with runtime.autocast():
        logits = as_output(model(x, **(clinical or {}))).logits
    return logits_to_probs(logits.float(), multilabel).cpu().double().numpy()


def _stack(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 0))


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
    modes = {m: m.training for m in model.modules()}
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    means, us = [], []
    try:
        model.eval()
        for m in drops:
            m.train(True)
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for x, clinical in _batches(images_uint8, mean, std, runtime, batch_size, extras):
                acc = _Moments(multilabel)
                for _ in range(n_samples):
                    acc.add(_probs(model, x, runtime, multilabel, clinical))
                m_, s_, mi_ = acc.result()
                means.append(m_)
                us.append(s_ if uncertainty == "std" else mi_)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return _stack(means), _stack(us)


@torch.no_grad()
def tta_predict(model: nn.Module, images_uint8: np.ndarray, *, mean, std, runtime, multilabel: bool,
                flips=("none", "h", "v", "hv"), batch_size: int = 256, extras=None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic flip test-time augmentation: ``(mean_probs (N, C), std over flips (N, C))``.

    Probabilities (not logits) are averaged. Vertical flips suit orientation-free images
    (dermoscopy, histology, blood cells); for chest X-rays pass ``flips=("none", "h")`` or less.
    The model runs in eval mode; every module's original mode is restored.
    """
    bad = [f for f in flips if f not in _FLIPS]
    if bad or not flips:
        raise ConfigError(f"flips must be a non-empty subset of {sorted(_FLIPS)}, got {list(flips)}")
    modes = {m: m.training for m in model.modules()}
    means, stds = [], []
    try:
        model.eval()
        for x, clinical in _batches(images_uint8, mean, std, runtime, batch_size, extras):
            acc = _Moments(multilabel)
            for f in flips:
                acc.add(_probs(model, torch.flip(x, _FLIPS[f]) if _FLIPS[f] else x, runtime, multilabel, clinical))
            m_, s_, _ = acc.result()
            means.append(m_)
            stds.append(s_)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return _stack(means), _stack(stds)
