"""Fine-tuning a pretrained backbone: smaller learning rates for it, and freezing it at first.

A pretrained backbone holds features worth keeping; the new layers on top (classifier, coarse
head, FPN neck) start from random weights. Two standard remedies, usable together:

* :func:`param_groups_with_lr`: AdamW parameter groups in which the backbone learns at
  ``base_lr * backbone_lr_scale`` (discriminative / differential learning rates);
* :class:`FreezeSchedule`: the backbone does not train at all for the first epochs (its
  BatchNorm statistics frozen too), so the random head cannot wreck it, then it is released.

What counts as "new" (:func:`new_module_names`): a model with a ``backbone`` sub-module (the
``*_fpn`` family) has everything outside it new; otherwise a timm model's classifier
(``get_classifier()``) plus any top-level module named ``head``, ``coarse_head``, ``neck``,
``classifier``, ``fc`` or ``head_dist`` (HybridMedNet's heads, timm's classifiers). Names are
matched whole, not as substrings: ``conv_head`` in EfficientNet and ``mlp.fc1`` in ViT are
pretrained layers.
"""

from __future__ import annotations

from torch import nn

NEW_MODULE_NAMES = ("head", "coarse_head", "neck", "classifier", "fc", "head_dist")


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / torch.compile wrappers."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return _unwrap(inner)
    return model


def new_module_names(model: nn.Module) -> set[str]:
    """Qualified names of the modules that hold the model's new (not pretrained) layers."""
    model = _unwrap(model)
    children = dict(model.named_children())
    if isinstance(children.get("backbone"), nn.Module):
        return {name for name in children if name != "backbone"}
    names = {name for name in children if name in NEW_MODULE_NAMES}
    if hasattr(model, "get_classifier"):
        classifiers = model.get_classifier()
        classifiers = classifiers if isinstance(classifiers, (tuple, list)) else (classifiers,)
        ids = {id(m) for m in classifiers if isinstance(m, nn.Module)}
        names |= {name for name, module in model.named_modules() if id(module) in ids and name}
    return names


def _is_under(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def split_backbone_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(backbone_params, head_params)``: every parameter in exactly one list, in model order."""
    model = _unwrap(model)
    new = new_module_names(model)
    backbone, head = [], []
    for name, param in model.named_parameters():
        (head if _is_under(name, new) else backbone).append(param)
    return backbone, head


def _no_decay_names(model: nn.Module) -> set[str]:
    """timm's convention: a model may list parameters to exempt (position embeddings ...)."""
    hook = getattr(model, "no_weight_decay", None)
    return set(hook()) if callable(hook) else set()


def param_groups_with_lr(model: nn.Module, base_lr: float, backbone_lr_scale: float = 0.1,
                         weight_decay: float = 0.05) -> list[dict]:
    """AdamW parameter groups: backbone at ``base_lr * backbone_lr_scale``, new layers at ``base_lr``.

    Each part is split into decayed weights and undecayed 1-D parameters (biases, norms), plus
    any the model exempts (``no_weight_decay()`` names, a ``_no_weight_decay`` attribute such as
    Mamba's ``A_log`` and ``D``). Groups carry ``"name"`` (``backbone``, ``backbone_no_decay``,
    ``head``, ``head_no_decay``) and their own ``"lr"``; empty groups are left out. Frozen
    parameters are included on purpose: AdamW skips parameters without gradients, so a backbone
    released by :class:`FreezeSchedule` starts training with no new optimizer.
    """
    model = _unwrap(model)
    new = new_module_names(model)
    exempt = _no_decay_names(model)
    groups = {key: [] for key in ("backbone", "backbone_no_decay", "head", "head_no_decay")}
    for name, param in model.named_parameters():
        part = "head" if _is_under(name, new) else "backbone"
        no_decay = param.ndim <= 1 or name in exempt or getattr(param, "_no_weight_decay", False)
        groups[part + "_no_decay" if no_decay else part].append(param)
    lrs = {"backbone": base_lr * backbone_lr_scale, "head": base_lr}
    return [{"name": key, "params": params, "lr": lrs[key.split("_")[0]],
             "weight_decay": 0.0 if key.endswith("no_decay") else weight_decay}
            for key, params in groups.items() if params]


class FreezeSchedule:
    """Backbone frozen (no gradients, BatchNorm in eval mode) for the first ``freeze_epochs``.

    Call :meth:`on_epoch_start` at the start of every epoch, after ``model.train()`` (which
    would put the frozen BatchNorm layers back into training mode). Parameters that were
    already frozen before the schedule was made stay frozen when the backbone is released.
    """

    def __init__(self, model: nn.Module, freeze_epochs: int):
        self.model = _unwrap(model)
        self.freeze_epochs = freeze_epochs
        new = new_module_names(self.model)
        self._params = [p for name, p in self.model.named_parameters() if not _is_under(name, new) and p.requires_grad]
        self._norms = [m for name, m in self.model.named_modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and not _is_under(name, new)]
        self.frozen = False

    def on_epoch_start(self, epoch: int) -> bool:
        """Freeze or release the backbone for ``epoch`` (0-based); returns whether it is frozen."""
        self.frozen = epoch < self.freeze_epochs
        for param in self._params:
            param.requires_grad_(not self.frozen)
        for norm in self._norms:
            norm.train(self.model.training and not self.frozen)
        return self.frozen
