"""The generic registry: duplicates refused, unknown names and options explained, and every family
registered through it."""

from __future__ import annotations

from typing import Literal

import pytest

from hybridmednet.config.loader import load_config
from hybridmednet.errors import ConfigError
from hybridmednet.registry import Registry, check_options
from tests.conftest import tiny_config


def test_duplicates_are_an_error_and_unknown_names_list_the_choices():
    reg: Registry = Registry("widget", "model.widget")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a")(object)
    with pytest.raises(ConfigError, match=r"model\.widget: unknown widget 'b'; choose one of a"):
        reg.get("b")
    assert list(reg) == ["a"] and "a" in reg and "b" not in reg


def test_options_are_checked_against_the_declared_signature():
    def builder(num_classes: int, width: int = 8, mode: Literal["x", "y"] = "x", sizes: tuple[int, ...] = (1,)):
        return None

    assert check_options(builder, {"width": "16", "sizes": [2, 3]}, "model.kwargs", "model 'm'") == {
        "width": 16, "sizes": (2, 3)}  # YAML lists become the declared tuples
    with pytest.raises(ConfigError, match=r"model\.kwargs\.mode: 'z' is not valid for model 'm'; choose one of x, y"):
        check_options(builder, {"mode": "z"}, "model.kwargs", "model 'm'")
    with pytest.raises(ConfigError, match=r"model\.kwargs\.depth: model 'm' has no option 'depth'; its options: "
                                          r"num_classes, width, mode, sizes"):
        check_options(builder, {"depth": 3}, "model.kwargs", "model 'm'")
    with pytest.raises(ConfigError, match="set by the framework"):
        check_options(builder, {"num_classes": 3}, "model.kwargs", "model 'm'", frozenset({"num_classes"}))


@pytest.fixture
def raw(tmp_path):
    return tiny_config(tmp_path, tmp_path / "runs")


@pytest.mark.parametrize("override, message", [
    ("model.kwargs.fusion=adaptve", r"model\.kwargs\.fusion: 'adaptve' is not valid .* choose one of adaptive, sum, global, local"),
    ("model.kwargs.head=mpl", r"model\.kwargs\.head: unknown head 'mpl'; choose one of .*mlp"),
    ("model.kwargs.head_kwargs={hiden_dim: 64}", r"model\.kwargs\.head_kwargs\.hiden_dim: head 'linear' has no option"),
])
def test_a_typo_in_model_options_fails_at_config_time(raw, override, message):
    raw["model"] = {"name": "hybridmednet_small28"}
    with pytest.raises(ConfigError, match=message):
        load_config(raw=raw, overrides=[override])


def test_loss_and_fusion_names_and_options_fail_at_config_time(raw):
    with pytest.raises(ConfigError, match=r"train\.loss: unknown loss 'focla'; choose auto or one of bce, ce, class_balanced"):
        load_config(raw=raw, overrides=["train.loss=focla"])
    with pytest.raises(ConfigError, match=r"train\.loss_kwargs\.gama: loss 'focal' has no option 'gama'"):
        load_config(raw=raw, overrides=["train.loss=focal", "train.loss_kwargs={gama: 1}"])
    with pytest.raises(ConfigError, match=r"train\.loss_kwargs\.base: 'dice' is not valid"):
        load_config(raw=raw, overrides=["train.loss=class_balanced", "train.loss_kwargs={base: dice}"])
    assert load_config(raw=raw, overrides=["train.loss=focal", "train.loss_kwargs={gamma: 1}"]).train.loss == "focal"


def test_single_branch_ablations_build_only_their_branch():
    from hybridmednet.models import create_model
    from hybridmednet.models.profile import count_parameters

    full = create_model("hybridmednet_small28", 3, 3, fusion="sum")
    global_only = create_model("hybridmednet_small28", 3, 3, fusion="global")
    local_only = create_model("hybridmednet_small28", 3, 3, fusion="local")
    assert global_only.stem.local_branch is None and local_only.stem.global_branch is None
    assert count_parameters(global_only) < count_parameters(full) and count_parameters(local_only) < count_parameters(full)
    for model in (global_only, local_only):  # every parameter takes part (DDP's unused-parameter check)
        import torch

        model(torch.zeros(2, 3, 28, 28)).logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
