"""Models: a registry of HybridMedNet's own networks, and any timm model by name.

Importing this package registers every family: ``small_cnn`` (the fast default),
``hybridmednet_*`` (the native architecture), ``*_fpn`` (timm backbones with an FPN neck) and
``vision_mamba_*``; for volumes ``small_cnn_3d`` (the 3D default), ``resnet3d_18/34`` (MONAI) and
``acs_small_cnn`` / ``i3d_small_cnn`` (2D small_cnn converted, optionally from 2D weights). Families that need timm import it only when a model is built.
"""

from hybridmednet.models import (  # noqa: F401  (register)
    backbone_fpn,
    cnn3d,
    converted3d,
    hybridmednet,
    resnet3d,
    small_cnn,
    vision_mamba,
)
from hybridmednet.models._factory import create_model
from hybridmednet.models._registry import is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
