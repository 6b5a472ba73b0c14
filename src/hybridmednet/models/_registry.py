"""Model registry: ``@register_model`` on a builder makes it available to ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from hybridmednet.registry import MODEL_ARGS, Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "model.name", framework_args=MODEL_ARGS)


def register_model(fn: Callable[..., nn.Module] | None = None, *, image_size_arg: str | None = None,
                   options: type | None = None):
    """Register a builder under its function name. ``image_size_arg`` names the builder keyword that
    receives the training image size, for models whose shape depends on it (patch grids);
    ``options`` is the class whose constructor declares the options ``model.kwargs`` may set (the
    builder's own signature when it takes no ``**kwargs``)."""
    wrap = MODELS.register(image_size_arg=image_size_arg, options=options)
    return wrap(fn) if fn is not None else wrap


def image_size_arg(name: str) -> str | None:
    return MODELS.info(name).get("image_size_arg")


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def is_model(name: str) -> bool:
    return name in MODELS


def model_builder(name: str) -> Callable[..., nn.Module]:
    return MODELS.get(name)
