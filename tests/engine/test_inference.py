"""The one inference path: plain prediction, MC dropout and flip TTA on tiny hand-made models."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from hybridmednet.engine.inference import mc_dropout_predict, predict_arrays, tta_predict
from hybridmednet.engine.runtime import Runtime
from hybridmednet.errors import ConfigError

RT = Runtime(torch.device("cpu"), None, False, False)
NORM = {"mean": [0.5] * 3, "std": [0.5] * 3, "runtime": RT}


def _images(n=12, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _dropout_model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Dropout(0.5), nn.Linear(6, 3))
    m[1].running_mean.fill_(0.3)
    m[1].running_var.fill_(2.0)
    m[6].weight.data.mul_(10)  # logits large enough for dropout to move the probabilities
    return m


def test_mc_dropout_samples_vary_and_modes_are_restored():
    model = _dropout_model()
    model.train()
    bn_before = {k: v.clone() for k, v in model[1].state_dict().items()}
    seen = {}
    model[1].register_forward_hook(lambda mod, i, o: seen.__setitem__("bn", mod.training))
    model[5].register_forward_hook(lambda mod, i, o: seen.__setitem__("drop", mod.training))
    rng_before = torch.get_rng_state()
    mean, std = mc_dropout_predict(model, _images(), **NORM, multilabel=False, n_samples=8, batch_size=6)
    assert seen == {"bn": False, "drop": True}
    for k, v in model[1].state_dict().items():
        assert torch.equal(v, bn_before[k]), k  # running stats neither used per-batch nor updated
    assert all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert mean.shape == std.shape == (12, 3)
    np.testing.assert_allclose(mean.sum(1), 1.0, atol=1e-6)
    assert std.min() >= 0 and std.max() > 0.01
    again, mi = mc_dropout_predict(model, _images(), **NORM, multilabel=False, n_samples=8, batch_size=6,
                                   uncertainty="mi")
    np.testing.assert_array_equal(mean, again)  # fixed seed -> same masks
    assert mi.shape == (12,) and np.all((mi >= 0) & (mi <= 1)) and mi.max() > 0


def test_a_model_in_eval_mode_stays_in_eval_mode_after_mc_dropout_and_plain_prediction():
    model = _dropout_model().eval()
    mc_dropout_predict(model, _images(), **NORM, multilabel=False, n_samples=2)  # switches dropout on inside
    assert not any(m.training for m in model.modules())
    model[5].train()  # a mixed model: only the dropout trains
    probs, _ = predict_arrays(model, _images(), **NORM, multilabel=False)
    assert probs.shape == (12, 3) and [m.training for m in model.modules()] == [False] * 6 + [True, False]


def test_mc_dropout_mean_approaches_deterministic_prediction():
    model = _dropout_model()
    model[5].p = 0.02  # light dropout: the MC mean stays close to the eval-mode output
    plain, _ = predict_arrays(model, _images(), **NORM, multilabel=True)
    mean, std = mc_dropout_predict(model, _images(), **NORM, multilabel=True, n_samples=30)
    assert std.max() > 0
    np.testing.assert_allclose(mean, plain, atol=0.02)


def test_mc_dropout_needs_dropout():
    no_drop = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ConfigError, match="Dropout"):
        mc_dropout_predict(no_drop, _images(), **NORM, multilabel=False)
    zero = _dropout_model()
    zero[5].p = 0.0
    with pytest.raises(ConfigError, match="p > 0"):
        mc_dropout_predict(zero, _images(), **NORM, multilabel=False)


def test_tta_equals_plain_for_flip_invariant_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    plain, _ = predict_arrays(model, _images(), **NORM, multilabel=False)
    mean, std = tta_predict(model, _images(), **NORM, multilabel=False, batch_size=5)
    np.testing.assert_allclose(mean, plain, atol=1e-6)
    assert std.max() < 1e-6


def test_tta_averages_the_flipped_predictions():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2), nn.BatchNorm1d(2))
    model.train()
    x = _images()
    mean, std = tta_predict(model, x, **NORM, multilabel=True, flips=("none", "h", "v"))
    assert all(m.training for m in model.modules())
    p = [predict_arrays(model, im, **NORM, multilabel=True)[0] for im in (x, x[:, :, ::-1], x[:, ::-1])]
    np.testing.assert_allclose(mean, np.mean(p, axis=0), atol=1e-6)
    np.testing.assert_allclose(std, np.std(p, axis=0), atol=1e-6)
    assert std.max() > 1e-3
    with pytest.raises(ConfigError):
        tta_predict(model, x, **NORM, multilabel=True, flips=("rot90",))
