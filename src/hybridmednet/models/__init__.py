"""Models: a registry of HybridMedNet's own networks, and any timm model by name.

Importing this package registers every family: ``small_cnn`` (the fast default),
``hybridmednet_*`` (the native architecture), ``*_fpn`` (timm backbones with an FPN neck) and
``vision_mamba_*``. Families that need timm import it only when a model is built.
"""

from hybridmednet.models import backbone_fpn, hybridmednet, small_cnn, vision_mamba  # noqa: F401  (register)
from hybridmednet.models._factory import create_model
from hybridmednet.models._registry import is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
