"""Quantization-aware fine-tuning (QAT) for the int8 ONNX deployment path.

``train.qat: true`` (with ``model.init_checkpoint``) fine-tunes a trained model with fake
quantization that mimics ONNX Runtime's static int8 scheme (``deploy/quantize.py``): per-channel
symmetric int8 weights and per-tensor affine uint8 activations at the input of every convolution
and linear layer, with straight-through gradients (``torch.ao.quantization.FakeQuantize``). The
weights learn to tolerate int8 rounding. For deployment the fake-quant modules are removed again
(the fine-tuned fp32 weights stay), the model is exported, and static quantization calibrates
the activation ranges on training images as usual.

Observers update only in training mode, so validation images never shape the ranges.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

QUANTIZED = (nn.Conv2d, nn.Linear)


def _fake_quantize(per_channel: bool) -> nn.Module:
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )

    class TrainOnlyFakeQuantize(FakeQuantize):
        def train(self, mode: bool = True):
            super().train(mode)
            (self.enable_observer if mode else self.disable_observer)()
            return self

    if per_channel:
        return TrainOnlyFakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-127, quant_max=127,
                                     dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return TrainOnlyFakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                 dtype=torch.quint8, qscheme=torch.per_tensor_affine)


class _WeightFakeQuant(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.fake_quant = fq = _fake_quantize(per_channel=True)
        # Ranges from the weight itself, so the module works at once, whatever mode it is used in.
        with torch.no_grad():
            fq.activation_post_process(weight.detach())
            scale, zero_point = fq.calculate_qparams()
            fq.scale.resize_(scale.shape).copy_(scale)
            fq.zero_point.resize_(zero_point.shape).copy_(zero_point)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.fake_quant(weight)


def _quantize_input(module: nn.Module, args: tuple):
    x = args[0]
    return (module.input_fake_quant(x.float()).to(x.dtype), *args[1:])


def enable_fake_quant(model: nn.Module) -> nn.Module:
    """Add fake quantization to every conv/linear layer (in place)."""
    for module in [m for m in model.modules() if isinstance(m, QUANTIZED)]:
        parametrize.register_parametrization(module, "weight", _WeightFakeQuant(module.weight))
        module.add_module("input_fake_quant", _fake_quantize(per_channel=False))
        module._qat_hook = module.register_forward_pre_hook(_quantize_input)
    return model


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """Remove it again, keeping the fine-tuned fp32 weights (in place)."""
    for module in [m for m in model.modules() if isinstance(m, QUANTIZED)]:
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        if hasattr(module, "_qat_hook"):
            module._qat_hook.remove()
            del module._qat_hook
            del module.input_fake_quant
    return model
