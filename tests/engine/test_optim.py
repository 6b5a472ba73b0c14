"""AdamW parameter groups and the per-step warm-up + cosine schedule."""

import math

import pytest
import torch

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
