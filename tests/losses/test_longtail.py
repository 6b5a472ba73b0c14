"""Long-tail losses and post-hoc logit adjustment."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hybridmednet.errors import ConfigError
from hybridmednet.losses import build_loss
from hybridmednet.metrics.adjustment import adjust, choose_tau, class_prior

COUNTS = [900, 90, 10]


def test_logit_adjusted_is_ce_on_prior_shifted_logits_and_tau_zero_is_ce():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    loss = build_loss("logit_adjusted", multilabel=False, class_counts=COUNTS, tau=1.0)
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    torch.testing.assert_close(loss(logits, y), F.cross_entropy(logits + prior.log(), y))
    plain = build_loss("logit_adjusted", multilabel=False, class_counts=COUNTS, tau=0.0)
    torch.testing.assert_close(plain(logits, y), F.cross_entropy(logits, y))
    # a rare-class target costs more than under CE at the same logits: training pushes its logit up
    rare = torch.tensor([2])
    assert loss(torch.zeros(1, 3), rare) > F.cross_entropy(torch.zeros(1, 3), rare)


def test_ldam_margins_grow_for_rare_classes_and_drw_switches_on():
    loss = build_loss("ldam", multilabel=False, class_counts=COUNTS, max_margin=0.5, drw_epoch=2)
    margins = loss.margins.tolist()
    assert margins[0] < margins[1] < margins[2] == pytest.approx(0.5)
    logits, y = torch.zeros(6, 3), torch.tensor([0, 0, 0, 0, 1, 2])
    loss.set_epoch(0)
    before = loss(logits, y)
    loss.set_epoch(2)
    after = loss(logits, y)
    assert before.item() != pytest.approx(after.item())  # class weights from epoch 2 on
    with pytest.raises(ConfigError, match="class_counts"):
        build_loss("ldam", multilabel=False, class_counts=None)
    with pytest.raises(ConfigError, match="single-label"):
        build_loss("logit_adjusted", multilabel=True, class_counts=COUNTS)


def test_posthoc_adjustment_is_chosen_on_val_and_helps_the_rare_class():
    rng = np.random.default_rng(0)
    prior = class_prior(COUNTS)
    # a model that over-predicts the head class: its probabilities are multiplied by the prior
    targets = rng.integers(0, 3, 600)
    clean = np.full((600, 3), 0.2)
    clean[np.arange(600), targets] = 0.6
    probs = adjust(clean, 1 / prior, 1.0)  # multiplies by the prior
    tau, scores = choose_tau(probs, targets, prior)
    assert tau > 0 and scores[tau] > scores[0.0]
    np.testing.assert_allclose(adjust(probs, prior, 0.0), probs / probs.sum(1, keepdims=True))
