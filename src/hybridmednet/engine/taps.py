"""Named intermediate outputs of a model: forward hooks on modules named as in
``model.named_modules()`` (distillation's feature maps, few-shot embeddings)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from hybridmednet.errors import ConfigError
from hybridmednet.output import ModelOutput, as_output


def layer_names(model: nn.Module, depth: int = 2) -> list[str]:
    """Module names a layer option may use, to depth ``depth`` (for error messages)."""
    return [n for n, _ in model.named_modules() if n and n.count(".") < depth]


class FeatureTaps:
    """Forward hooks keeping the outputs of named modules while :meth:`capture` is active."""

    def __init__(self, model: nn.Module, names: set[str], where: str):
        modules = dict(model.named_modules())
        unknown = sorted(n for n in names if n not in modules)
        if unknown:
            raise ConfigError(f"{where}: no layer {', '.join(map(repr, unknown))} in {type(model).__name__}; its layers: "
                              f"{', '.join(layer_names(model))}")
        self.outputs: dict[str, torch.Tensor] = {}
        self.active = False
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in sorted(names)]

    def _hook(self, name: str):
        def keep(module, inputs, output):
            if self.active:
                self.outputs[name] = output
        return keep

    @contextmanager
    def capture(self):
        self.outputs, self.active = {}, True
        try:
            yield self.outputs
        finally:
            self.active = False

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def last_spatial_layer(model: nn.Module, example: torch.Tensor, extras: dict | None = None) -> str:
    """The last direct child (in forward order) whose output is a feature map with H, W > 1."""
    order: list[tuple[str, tuple]] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append((n, tuple(o.shape)))
                                       if isinstance(o, torch.Tensor) else None)
               for n, m in model.named_children()]
    try:
        probe(model, example, extras)
    finally:
        for handle in handles:
            handle.remove()
    spatial = [n for n, shape in order if len(shape) == 4 and shape[2] > 1 and shape[3] > 1]
    if not spatial:
        raise ConfigError(f"{type(model).__name__}: no child module returns a spatial feature map; name the layer "
                          f"(student_layer / teacher_layer) from: {', '.join(layer_names(model))}")
    return spatial[-1]


def spatial_stages(model: nn.Module, example: torch.Tensor, extras: dict | None = None, count: int = 3) -> list[str]:
    """The ``count`` deepest resolutions of a model's feature maps, shallow to deep: for each, the
    last module (to depth 2, in forward order) whose output is a map of that size (H, W > 1)."""
    order: list[tuple[str, tuple]] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append((n, tuple(o.shape)))
                                       if isinstance(o, torch.Tensor) else None)
               for n, m in model.named_modules() if n and n.count(".") < 2]
    try:
        probe(model, example, extras)
    finally:
        for handle in handles:
            handle.remove()
    last: dict[tuple, str] = {}
    for name, shape in order:
        if len(shape) == 4 and shape[2] > 1 and shape[3] > 1:
            last.pop(shape[2:], None)  # re-inserted: dict order is then the order each size last appears
            last[shape[2:]] = name
    stages = list(last.values())
    if len(stages) < count:
        raise ConfigError(f"{type(model).__name__}: {len(stages)} feature-map resolutions, {count} wanted; lower "
                          f"levels or name the layers (student_layers / teacher_layers) from: {', '.join(layer_names(model))}")
    return stages[-count:]


def probe(model: nn.Module, example: torch.Tensor, extras: dict | None) -> ModelOutput:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return as_output(model(example, **(extras or {})))
    finally:
        model.train(was_training)


def pooled(x: torch.Tensor) -> torch.Tensor:
    """Global average of a feature map (B, C, H, W) -> (B, C); other shapes flattened."""
    return x.float().mean(dim=(2, 3)) if x.ndim == 4 else x.float().flatten(1)
