"""Model registry: ``@register_model`` on a builder makes it available to ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from hybridmednet.registry import MODEL_ARGS, Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "model.name", framework_args=MODEL_ARGS)


def register_model(fn: Callable[..., nn.Module] | None = None, *, image_size_arg: str | None = None,
                   options: type | None = None, spatial_dims: int = 2):
    """Register a builder under its function name. ``image_size_arg`` names the builder keyword that
    receives the training image size, for models whose shape depends on it (patch grids);
    ``options`` is the class whose constructor declares the options ``model.kwargs`` may set (the
    builder's own signature when it takes no ``**kwargs``); ``spatial_dims`` 3 marks a volume model
    (input ``(B, C, D, H, W)``), which needs ``data.spatial_dims=3``."""
    wrap = MODELS.register(image_size_arg=image_size_arg, options=options, spatial_dims=spatial_dims)
    return wrap(fn) if fn is not None else wrap


def image_size_arg(name: str) -> str | None:
    return MODELS.info(name).get("image_size_arg")


def list_models(pattern: str = "*", spatial_dims: int | None = None) -> list[str]:
    """Registered names matching ``pattern``; ``spatial_dims`` 2 or 3 keeps image or volume models."""
    return [n for n in MODELS.names(pattern) if spatial_dims is None or model_spatial_dims(n) == spatial_dims]


def model_spatial_dims(name: str) -> int:
    """3 for volume models, 2 for image models (timm models, not registered here, are 2D)."""
    return MODELS.info(name).get("spatial_dims", 2) if name in MODELS else 2


def is_model(name: str) -> bool:
    return name in MODELS


def model_builder(name: str) -> Callable[..., nn.Module]:
    return MODELS.get(name)
