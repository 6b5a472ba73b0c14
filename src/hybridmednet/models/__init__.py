"""Models: a registry of HybridMedNet's own networks, and any timm model by name."""

from hybridmednet.models import small_cnn  # noqa: F401  (registers its models)
from hybridmednet.models._factory import create_model
from hybridmednet.models._registry import is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
