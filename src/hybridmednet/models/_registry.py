"""Model registry: ``@register_model`` on a builder makes it available to ``create_model``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_IMAGE_SIZE_ARG: dict[str, str] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, image_size_arg: str | None = None):
    """Register a builder under its function name. ``image_size_arg`` names the builder keyword that
    receives the training image size, for models whose shape depends on it (patch grids)."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if builder.__name__ in _MODELS:
            raise ValueError(f"model {builder.__name__!r} is registered twice")
        _MODELS[builder.__name__] = builder
        if image_size_arg:
            _IMAGE_SIZE_ARG[builder.__name__] = image_size_arg
        return builder

    return wrap(fn) if fn is not None else wrap


def image_size_arg(name: str) -> str | None:
    return _IMAGE_SIZE_ARG.get(name)


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    return name in _MODELS


def model_builder(name: str) -> Callable[..., nn.Module]:
    return _MODELS[name]
