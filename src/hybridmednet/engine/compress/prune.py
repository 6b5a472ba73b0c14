"""Pruning a trained model, then fine-tuning it with the normal engine.

A pruned run is an ordinary run whose config names the run it starts from
(``model.init_checkpoint``) and how to prune (``train.prune``):

* ``magnitude``: global unstructured magnitude pruning (``torch.nn.utils.prune``) of every conv
  and linear weight; the zero mask is re-applied after each optimizer step, so sparsity holds
  through fine-tuning. Shapes do not change: dense kernels (PyTorch, ONNX Runtime on CPU) do the
  same work on zeros, so this saves no time; only sparse kernels or compression benefit.
* ``channel``: structured pruning of whole channels by L1 magnitude (``torch-pruning``'s
  dependency graph keeps residual and concatenated channels consistent). Tensors shrink, so
  FLOPs and latency really drop. The classifier outputs are never pruned.

Which channels go depends on the starting weights, but how many go in each layer does not
(``pruning_ratio`` per layer, not global), so :func:`prepare_model` rebuilds a channel-pruned
architecture from the run's own config, pruning a randomly initialised model, before its
fine-tuned weights are loaded: the run does not need its starting run to load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hybridmednet.errors import CheckpointError, ConfigError

PRUNABLE = (nn.Conv2d, nn.Linear)


class WeightMasks:
    """Zero masks for pruned weights, re-applied after every optimizer step."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all conv and linear weights."""
    weights = [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
    total = sum(w.numel() for w in weights)
    return float(sum((w == 0).sum() for w in weights)) / max(total, 1)


def magnitude_prune(model: nn.Module, amount: float) -> WeightMasks:
    """Global L1 unstructured pruning of ``amount`` of all conv/linear weights, made permanent."""
    from torch.nn.utils import prune

    modules = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]
    prune.global_unstructured(modules, pruning_method=prune.L1Unstructured, amount=amount)
    by_module = {id(m): name for name, m in model.named_modules()}
    masks = {}
    for module, _ in modules:
        masks[f"{by_module[id(module)]}.weight"] = module.weight_mask.detach().clone()
        prune.remove(module, "weight")
    return WeightMasks(masks)


def _classifier_layers(model: nn.Module, num_outputs: set[int]) -> list[nn.Module]:
    """Layers whose outputs are class scores (fine and coarse heads): never pruned."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features in num_outputs]


def channel_prune(model: nn.Module, amount: float, image_size: int, in_chans: int, num_outputs: set[int]) -> nn.Module:
    try:
        import torch_pruning as tp
    except ImportError:
        raise ConfigError("train.prune.method=channel needs torch-pruning: pip install torch-pruning (it comes with the deploy extra)") from None
    from hybridmednet.output import LogitsOnly

    example = torch.zeros(1, in_chans, image_size, image_size)
    wrapper = LogitsOnly(model).eval()
    try:
        pruner = tp.pruner.MetaPruner(wrapper, example, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=amount, global_pruning=False, ignored_layers=_classifier_layers(model, num_outputs))
        pruner.step()
    except Exception as exc:  # noqa: BLE001 - an unsupported graph becomes one clear error
        raise ConfigError(f"train.prune.method=channel: torch-pruning cannot prune this model "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); use method=magnitude") from None
    return model


def load_init_checkpoint(model: nn.Module, run_path: str | Path) -> None:
    from hybridmednet.engine.checkpoint import load_checkpoint

    tensors, _ = load_checkpoint(Path(run_path) / "checkpoints", "best")
    if hasattr(model, "adapt_init_weights"):  # models that start from another architecture's weights (2D -> 3D)
        tensors = model.adapt_init_weights(tensors)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"model.init_checkpoint={run_path}: its weights do not fit this model "
                              f"({str(exc).splitlines()[0][:200]}); use the same model.name and kwargs") from None


def prepare_model(model: nn.Module, cfg, num_outputs: set[int], *, for_training: bool) -> tuple[nn.Module, WeightMasks | None]:
    """Load ``model.init_checkpoint`` and apply ``train.prune``. For training this returns the
    masks to keep re-applying; to rebuild a trained pruned run (``for_training=False``) only the
    architecture matters, so the starting weights are never read."""
    prune_cfg = cfg.train.prune
    if cfg.model.init_checkpoint and for_training:
        load_init_checkpoint(model, cfg.model.init_checkpoint)
    if prune_cfg is None:
        return model, None
    if prune_cfg.method == "channel":
        return channel_prune(model, prune_cfg.amount, cfg.data.image_size, cfg.data.channels, num_outputs), None
    return model, (magnitude_prune(model, prune_cfg.amount) if for_training else None)
