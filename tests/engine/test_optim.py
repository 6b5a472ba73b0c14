"""AdamW parameter groups and the per-step warm-up + cosine schedule."""

import math

import pytest
import torch
from torch import nn

from hybridmednet.engine.optim import build_optimizer, build_scheduler, param_groups, warmup_cosine


def test_warmup_is_linear_then_cosine_to_the_floor():
    f = warmup_cosine(total_steps=110, warmup_steps=10, min_ratio=0.01)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way through the cosine
    assert f(110) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    g = warmup_cosine(100, 0, 0.0)
    assert g(0) == 1.0 and g(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_no_weight_decay_on_biases_and_norms_and_the_scheduler_steps_the_lr():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    decay, no_decay = param_groups(model, 0.05)
    assert {p.ndim for p in decay["params"]} == {2, 4} and {p.ndim for p in no_decay["params"]} == {1}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    optimizer = build_optimizer(model, 0.1, 0.05, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, total_steps=20, warmup_steps=4, min_ratio=0.0)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1]) and seen[5] < seen[4] <= 0.1


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_every_optimizer_trains_and_keeps_norms_undecayed(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    optimizer = build_optimizer(model, 0.05, 0.05, torch.device("cpu"), name=name, momentum=0.9, nesterov=True)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    if name == "sgd":
        assert optimizer.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("name", ["cosine", "step", "cosine_restarts", "onecycle"])
def test_step_schedules_follow_their_shape(name):
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, 0.1, 0.0, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, total_steps=100, warmup_steps=10, min_ratio=0.01, name=name,
                                steps_per_epoch=10, step_epochs=3, gamma=0.5, restart_epochs=3)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < lrs[9] or name == "onecycle" and lrs[0] < max(lrs)  # warm-up rises
    if name == "step":
        assert lrs[10] == pytest.approx(0.1) and lrs[40] == pytest.approx(0.05) and lrs[70] == pytest.approx(0.025)
    if name == "cosine_restarts":
        assert lrs[39] < 0.02 and lrs[40] == pytest.approx(0.1)  # a restart at the start of each 30-step cycle
    if name in ("cosine", "onecycle"):
        assert lrs[-1] < 0.01


def test_plateau_lowers_the_lr_after_patience_epochs_without_improvement():
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, 0.1, 0.0, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, 100, 0, 0.01, name="plateau", plateau_patience=1, plateau_factor=0.5)
    for score in (0.5, 0.6, 0.6, 0.6):
        scheduler.step(score)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
