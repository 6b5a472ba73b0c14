"""Losses: registry behaviour and hand-computed values for focal, class-balanced, hierarchical
consistency and uncertainty weighting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridmednet.errors import ConfigError
from hybridmednet.losses import (FocalLoss, HierarchicalConsistencyLoss, SigmoidFocalLoss, SmoothedBCE,
                                 UncertaintyWeightedLoss, aggregate_fine_to_coarse, build_loss, class_balanced_weights,
                                 list_losses, pos_weight_from_counts)


# ---------------------------------------------------------------------------- registry
def test_registry_names_and_auto_choice():
    assert list_losses() == ["bce", "ce", "class_balanced", "focal", "ldam", "logit_adjusted"]
    assert isinstance(build_loss("auto", multilabel=False), nn.CrossEntropyLoss)
    assert isinstance(build_loss("auto", multilabel=True), SmoothedBCE)
    assert isinstance(build_loss("focal", multilabel=False), FocalLoss)
    assert isinstance(build_loss("focal", multilabel=True), SigmoidFocalLoss)


def test_registry_errors_name_the_fix():
    with pytest.raises(ConfigError, match="unknown loss 'dice'; choose auto or one of bce, ce, class_balanced, focal"):
        build_loss("dice", multilabel=False)
    with pytest.raises(ConfigError, match="cannot train multi-label"):
        build_loss("ce", multilabel=True)
    with pytest.raises(ConfigError, match="needs class_counts"):
        build_loss("class_balanced", multilabel=False)


def test_every_builder_accepts_the_trainer_keywords():
    """The trainer passes class_counts to every loss; builders that do not need it ignore it."""
    # uniform logits over 2 classes: CE = ln 2 per sample; focal multiplies by (1 - 0.5)^2; the two
    # class-balanced weights sum to 2, so one sample of each class averages back to ln 2
    expected = {"ce": math.log(2), "focal": 0.25 * math.log(2), "class_balanced": math.log(2)}
    for name, value in expected.items():
        loss = build_loss(name, multilabel=False, label_smoothing=0.1, class_counts=[5, 3])
        assert loss(torch.zeros(2, 2), torch.tensor([0, 1])).item() == pytest.approx(value, rel=1e-6)
    bce = build_loss("bce", multilabel=True, class_counts=[5, 3], pos_weight=[2.0, 1.0])
    torch.testing.assert_close(bce.pos_weight, torch.tensor([2.0, 1.0]))


# ---------------------------------------------------------------------------- focal
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_with_gamma_0_and_alpha_1_equals_cross_entropy(smoothing):
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 5), torch.randint(0, 5, (8,))
    focal = FocalLoss(alpha=[1.0] * 5, gamma=0.0, label_smoothing=smoothing)
    expected = F.cross_entropy(logits, targets, label_smoothing=smoothing)
    torch.testing.assert_close(focal(logits, targets), expected)


def test_focal_scales_one_sample_by_exactly_one_minus_p_to_the_gamma():
    logits, target = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    p = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))  # 0.84379
    ce = -math.log(p)  # 0.16985
    assert FocalLoss(gamma=2.0)(logits, target).item() == pytest.approx((1 - p) ** 2 * ce, rel=1e-5)
    assert FocalLoss(gamma=2.0)(logits, target).item() == pytest.approx(0.0041443, rel=1e-4)
    # an easy example is down-weighted more than a hard one
    hard = torch.tensor([[0.0, 2.0, -1.0]])
    assert FocalLoss(gamma=2.0)(hard, target).item() / F.cross_entropy(hard, target).item() > (1 - p) ** 2


def test_focal_alpha_weights_the_target_class():
    logits, target = torch.tensor([[0.5, -0.5]]), torch.tensor([1])
    loss = FocalLoss(alpha=[0.25, 4.0], gamma=0.0)(logits, target)
    torch.testing.assert_close(loss, 4.0 * F.cross_entropy(logits, target))


def test_focal_accepts_soft_targets():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    onehot = F.one_hot(torch.tensor([0, 2, 1, 1]), 3).float()
    torch.testing.assert_close(FocalLoss(gamma=1.5)(logits, onehot), FocalLoss(gamma=1.5)(logits, onehot.argmax(1)))


def test_sigmoid_focal_matches_bce_at_gamma_0_and_the_modulating_factor_otherwise():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(SigmoidFocalLoss(gamma=0.0)(logits, targets), bce)
    one = torch.tensor([[1.0]])
    p = 1 / (1 + math.exp(-1.0))
    expected = 0.25 * (1 - p) ** 2 * -math.log(p)  # positive label: alpha_t = alpha
    assert SigmoidFocalLoss(alpha=0.25, gamma=2.0)(one, one).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- class weights
def test_class_balanced_weights_by_hand():
    # effective numbers: (1 - 0.99^100) / 0.01 = 63.39677 and (1 - 0.99^10) / 0.01 = 9.561792;
    # inverses 0.0157737 and 0.1045829 (sum 0.1203566), scaled to sum to 2:
    weights = class_balanced_weights([100, 10], beta=0.99)
    torch.testing.assert_close(weights, torch.tensor([0.262116, 1.737884]), atol=1e-5, rtol=0)
    assert weights.sum().item() == pytest.approx(2.0)
    torch.testing.assert_close(class_balanced_weights([100, 10], beta=0.0), torch.tensor([1.0, 1.0]))


def test_class_balanced_loss_is_a_per_sample_weighted_mean():
    logits, targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]), torch.tensor([0, 1, 0])
    weights = class_balanced_weights([100, 10], beta=0.99)
    per_sample = F.cross_entropy(logits, targets, reduction="none")
    expected = (weights[targets] * per_sample).mean()
    loss = build_loss("class_balanced", multilabel=False, class_counts=[100, 10], beta=0.99)
    torch.testing.assert_close(loss(logits, targets), expected)
    focal = build_loss("class_balanced", multilabel=False, class_counts=[100, 10], beta=0.99, base="focal", gamma=2.0)
    assert focal(logits, targets).item() < expected.item()  # focal factor < 1 on every sample


def test_class_balanced_multilabel_weights_each_label_column():
    logits, targets = torch.tensor([[0.3, -0.2]]), torch.tensor([[1.0, 0.0]])
    weights = class_balanced_weights([50, 5], beta=0.9)
    loss = build_loss("class_balanced", multilabel=True, class_counts=[50, 5], beta=0.9)
    expected = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights).mean()
    torch.testing.assert_close(loss(logits, targets), expected)


def test_pos_weight_is_negatives_over_positives():
    torch.testing.assert_close(pos_weight_from_counts([10, 50, 0], 100), torch.tensor([9.0, 1.0, 100.0]))
    with pytest.raises(ConfigError, match="exceed"):
        pos_weight_from_counts([120], 100)


# ---------------------------------------------------------------------------- hierarchy
def test_aggregate_sums_fine_probabilities_per_group():
    fine = torch.tensor([[0.2, 0.3, 0.5]]).log()
    torch.testing.assert_close(aggregate_fine_to_coarse(fine, [0, 0, 1]).exp(), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(aggregate_fine_to_coarse(fine, [1, 0, 1]).exp(), torch.tensor([[0.3, 0.7]]))


def test_hierarchical_consistency_is_zero_when_heads_agree_and_symmetric_kl_otherwise():
    loss = HierarchicalConsistencyLoss([0, 0, 1])
    fine = torch.tensor([[0.2, 0.3, 0.5]]).log()
    assert loss(fine, torch.tensor([[0.5, 0.5]]).log()).item() == pytest.approx(0.0, abs=1e-6)
    # coarse head says (0.8, 0.2): 0.3 * ln(0.8/0.5) + (-0.3) * ln(0.2/0.5) = 0.3 * ln 4
    disagree = loss(fine, torch.tensor([[0.8, 0.2]]).log())
    assert disagree.item() == pytest.approx(0.3 * math.log(4), rel=1e-5)
    torch.manual_seed(0)
    fine, coarse = torch.randn(6, 3, requires_grad=True), torch.randn(6, 2, requires_grad=True)
    value = loss(fine, coarse)
    value.backward()
    assert value.item() > 0 and fine.grad.abs().sum() > 0 and coarse.grad.abs().sum() > 0


def test_hierarchy_with_an_empty_coarse_group_is_rejected():
    with pytest.raises(ConfigError, match=r"groups \[1\]"):
        HierarchicalConsistencyLoss([0, 2, 2])


# ---------------------------------------------------------------------------- uncertainty weighting
def test_uncertainty_weighted_total_and_gradient_signs_by_hand():
    weighting = UncertaintyWeightedLoss(["fine", "coarse", "aux"])
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.0, math.log(2.0), 0.0]))
    total, weights = weighting({"fine": torch.tensor(3.0), "coarse": torch.tensor(4.0), "aux": torch.tensor(0.5)})
    # 1 * 3 + 0  +  0.5 * 4 + ln 2  +  1 * 0.5 + 0
    assert total.item() == pytest.approx(5.5 + math.log(2.0), rel=1e-6)
    assert {k: round(v.item(), 6) for k, v in weights.items()} == {"fine": 1.0, "coarse": 0.5, "aux": 1.0}
    total.backward()
    # d/ds = 1 - exp(-s) * L: negative (s grows, weight shrinks) when the loss is large
    torch.testing.assert_close(weighting.log_vars.grad, torch.tensor([1 - 3.0, 1 - 2.0, 1 - 0.5]))


def test_uncertainty_weighting_skips_missing_terms_and_rejects_unknown_ones():
    weighting = UncertaintyWeightedLoss(["a", "b"], init=1.0)
    total, weights = weighting({"b": torch.tensor(2.0)})
    assert total.item() == pytest.approx(2.0 * math.exp(-1.0) + 1.0)
    assert list(weights) == ["b"]
    with pytest.raises(ConfigError, match="unknown task"):
        weighting({"c": torch.tensor(1.0)})
