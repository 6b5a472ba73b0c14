"""Fine-tuning helpers: which parameters are new, differential learning rates, and a backbone
frozen for the first epochs then released."""

import pytest
import torch
import torch.nn as nn

from hybridmednet.engine.finetune import FreezeSchedule, new_module_names, param_groups_with_lr, split_backbone_head
from hybridmednet.models import create_model


@pytest.mark.parametrize(("name", "kwargs", "new"), [
    ("resnet18", {}, {"fc"}),  # timm: get_classifier()
    ("efficientnet_lite0", {}, {"classifier"}),  # conv_head is pretrained: names match whole
    ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 16}, {"head"}),  # mlp.fc1 is not a head
    ("small_cnn", {}, {"head"}),
    ("hybridmednet_small28", {"num_coarse": 2}, {"head"}),  # the coarse head lives inside head
    ("resnet18_fpn", {"image_size": 32}, {"neck", "head"}),  # outside `backbone` is new
])
def test_new_modules(name, kwargs, new):
    model = create_model(name, num_classes=3, **kwargs)
    assert new <= new_module_names(model)
    backbone, head = split_backbone_head(model)
    assert len(backbone) + len(head) == len(list(model.parameters())) and backbone and head
    head_ids = {id(p) for p in head}
    assert all(id(p) not in head_ids for p in backbone)


def test_timm_classifier_is_the_head():
    model = create_model("resnet18", num_classes=3)
    _, head = split_backbone_head(model)
    assert {id(p) for p in head} == {id(p) for p in model.get_classifier().parameters()}


def test_param_groups_carry_names_lrs_and_decay():
    model = create_model("resnet18", num_classes=3)
    groups = param_groups_with_lr(model, base_lr=1e-3, backbone_lr_scale=0.1, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert by_name["backbone"]["lr"] == pytest.approx(1e-4) and by_name["head"]["lr"] == 1e-3
    assert by_name["backbone"]["weight_decay"] == 0.05 and by_name["backbone_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in by_name["backbone_no_decay"]["params"])
    assert [p.shape for p in by_name["head"]["params"]] == [model.fc.weight.shape]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(groups, lr=1e-3)  # group lrs override the default
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)  # schedules scale each group's own lr
    assert [g["lr"] for g in optimizer.param_groups if g["name"].startswith("backbone")] == pytest.approx([5e-5] * 2)


def test_model_exemptions_from_weight_decay():
    model = create_model("vision_mamba_tiny", num_classes=3, img_size=16, dim=16, depth=1)
    no_decay = {id(p) for g in param_groups_with_lr(model, 1e-3) if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.pos_embed) in no_decay
    assert id(model.blocks[0].mixer.forward_ssm.A_log) in no_decay  # 2-D, flagged _no_weight_decay


def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_freeze_then_release_the_backbone():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, image_size=32)
    optimizer = torch.optim.AdamW(param_groups_with_lr(model, base_lr=1e-2), lr=1e-2)
    schedule = FreezeSchedule(model, freeze_epochs=1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    backbone, head = split_backbone_head(model)
    before = [p.detach().clone() for p in backbone]
    conv_before = model.layer1[0].conv1.weight.detach().clone()
    stats_before = model.bn1.running_mean.clone()
    head_before = model.fc.weight.detach().clone()

    model.train()
    assert schedule.on_epoch_start(0)
    assert not any(p.requires_grad for p in backbone) and all(p.requires_grad for p in head)
    assert not model.bn1.training and model.fc.training
    train_step(model, optimizer, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, backbone))  # weights and BN statistics untouched
    assert torch.equal(model.bn1.running_mean, stats_before)
    assert not torch.equal(model.fc.weight, head_before)

    model.train()
    assert not schedule.on_epoch_start(1)
    assert all(p.requires_grad for p in backbone) and model.bn1.training
    train_step(model, optimizer, x, y)  # the same optimizer now updates the backbone
    assert not torch.equal(model.layer1[0].conv1.weight, conv_before)
    assert not torch.equal(model.bn1.running_mean, stats_before)


def test_release_keeps_parameters_frozen_by_the_user():
    model = create_model("small_cnn", num_classes=3)
    model.stem[0].weight.requires_grad_(False)
    schedule = FreezeSchedule(model, freeze_epochs=2)
    schedule.on_epoch_start(0)
    schedule.on_epoch_start(2)
    assert not model.stem[0].weight.requires_grad and model.stages[0].conv1[0].weight.requires_grad
