"""Logits -> probabilities -> uncertainty in numpy only.

One home for these, so the PyTorch prediction path, the report and the torch-free ONNX runtime
(``hybridmednet.deploy.onnx_runtime``) compute the same numbers.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def probabilities(logits: np.ndarray, multilabel: bool, temperature: float = 1.0) -> np.ndarray:
    """Softmax (sigmoid for multi-label) of ``logits / temperature`` as float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return sigmoid(z) if multilabel else softmax(z)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    p = np.clip(p, 1e-300, 1.0)
    return -np.sum(p * np.log(p), axis=axis)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    return _entropy(np.stack([p, 1 - p], axis=-1))


def predictive_entropy(probs, *, multilabel: bool = False) -> np.ndarray:
    """(N,) entropy of the predictive distribution, normalised to [0, 1].

    Single-label: H(p) / log C (1 = uniform). Multi-label: mean over labels of the binary
    entropy / log 2. Normalising makes values comparable across tasks with different C.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if multilabel:
        return _binary_entropy(probs).mean(axis=1) / np.log(2)
    c = probs.shape[1]
    return _entropy(probs, axis=1) / np.log(c) if c > 1 else np.zeros(len(probs))
