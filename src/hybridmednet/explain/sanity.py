"""Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A saliency map that barely changes when the trained weights are replaced by random ones
explains the architecture or the image (edges), not what the model learned. We compute the
maps with the trained model and with a deep copy whose every module with
``reset_parameters()`` has been re-initialised (seeded; BatchNorm statistics reset too), for
the *same* target classes (the trained model's predictions), and compare them per image by
Spearman rank correlation, as in the paper.

Threshold: ``passed = mean_spearman < 0.5``. Adebayo et al. report rank correlations near 0
for methods that pass and well above 0.5 for those that fail (e.g. guided backprop); 0.5
sits between the two and is, by the usual reading of rho, at most a "moderate" similarity.
Constant maps have no ranking. A trained map that is constant (e.g. an all-negative
Grad-CAM, clipped to 0) gives the test nothing to compare, so that image is left out
(``n_skipped``; none left -> ``passed`` is False). A randomised map that became constant has
lost all structure: it counts as correlation 0 (``n_random_constant``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from hybridmednet.data.preprocess import normalize_batch
from hybridmednet.explain.cam import compute_cam
from hybridmednet.output import as_output

PASS_THRESHOLD = 0.5


def randomize_parameters(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy with every resettable module re-initialised; the global RNG is left alone."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    return clone


def randomization_check(model: nn.Module, images: np.ndarray, *, mean, std, method: str = "gradcam",
                        seed: int = 0) -> dict:
    """``{mean_spearman, spearman (per compared image), n_skipped, n_random_constant, threshold, passed}``."""
    from scipy.stats import spearmanr

    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).to(next(model.parameters()).device)
    was_training = model.training
    with torch.no_grad():
        targets = as_output(model.eval()(normalize_batch(x, mean, std))).logits.argmax(1).cpu().numpy()
    model.train(was_training)
    trained = compute_cam(model, images, mean=mean, std=std, method=method, target_classes=targets)
    random_model = randomize_parameters(model, seed).eval()
    randomized = compute_cam(random_model, images, mean=mean, std=std, method=method, target_classes=targets)
    rhos, n_skipped, n_random_constant = [], 0, 0
    for a, b in zip(trained, randomized):
        if np.ptp(a) == 0:
            n_skipped += 1
        elif np.ptp(b) == 0:
            rhos.append(0.0)
            n_random_constant += 1
        else:
            rhos.append(float(spearmanr(a.ravel(), b.ravel())[0]))
    mean_rho = float(np.mean(rhos)) if rhos else float("nan")
    return {"mean_spearman": mean_rho, "spearman": rhos, "n_skipped": n_skipped,
            "n_random_constant": n_random_constant, "threshold": PASS_THRESHOLD,
            "passed": bool(mean_rho < PASS_THRESHOLD)}
