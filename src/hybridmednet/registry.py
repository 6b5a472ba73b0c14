"""One small generic registry that every family of components registers through.

Models, heads, fusions, losses, data sources, image readers and CAM target resolvers each keep
a :class:`Registry`; registering a name twice is an error (a silent overwrite would change what a
config builds depending on import order), an unknown name is a :class:`ConfigError` that names
the config key and the valid choices, and config validation reads its choices from here, so the
two never drift.

A registered component declares its options in its signature (typed keyword arguments with
defaults, ``Literal`` for choices): :meth:`Registry.check_options` validates a config's free
``kwargs`` against it before anything is built, so ``model.kwargs.fusion: adaptve`` is a
one-line error naming the valid values instead of a silently different model.
"""

from __future__ import annotations

import fnmatch
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from hybridmednet.errors import ConfigError

T = TypeVar("T")

# keyword arguments the framework passes to every model; a config may not set them through kwargs
MODEL_ARGS = frozenset({"num_classes", "in_chans", "drop_rate", "num_coarse"})


class Registry(Generic[T]):
    """``name -> component`` with decorator registration.

    ``kind`` says what is registered ("model", "loss" ...) and ``config_key`` where a config names
    one (``model.name``), for error messages. ``framework_args``: keyword arguments the framework
    passes itself (``num_classes``, ``in_features`` ...), which a config's options may not set.
    """

    def __init__(self, kind: str, config_key: str | None = None, *, case_insensitive: bool = False,
                 framework_args: frozenset[str] | set[str] = frozenset()):
        self.kind, self.config_key = kind, config_key or kind
        self.case_insensitive = case_insensitive
        self.framework_args = frozenset(framework_args)
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def _key(self, name: str) -> str:
        return name.lower() if self.case_insensitive else name

    def register(self, *names: str, **info: Any) -> Callable[[T], T]:
        """Decorator: register the component under ``names`` (default: its ``__name__``)."""

        def wrap(item: T) -> T:
            for name in names or (item.__name__,):
                key = self._key(name)
                if key in self._items:
                    raise ValueError(f"{self.kind} {name!r} is registered twice")
                self._items[key] = item
                self._info[key] = dict(info)
            return item

        return wrap

    def get(self, name: str) -> T:
        key = self._key(name)
        if key not in self._items:
            raise ConfigError(f"{self.config_key}: unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self._items[key]

    def info(self, name: str) -> dict[str, Any]:
        return self._info.get(self._key(name), {})

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def items(self) -> Iterable[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self.names())

    def check_options(self, name: str, options: dict[str, Any], where: str) -> dict[str, Any]:
        """Validate ``options`` (a config's ``kwargs`` for component ``name``) against the keyword
        arguments it declares (its ``options`` info, a class, or else the builder itself); returns
        them coerced to the declared types."""
        declares = self.info(name).get("options") or self.get(name)
        return check_options(declares, options, where, f"{self.kind} {name!r}", self.framework_args)


def _signature(fn: Callable) -> inspect.Signature:
    return inspect.signature(fn.__init__ if inspect.isclass(fn) else fn)


def declared_options(fn: Callable, framework_args: frozenset[str] = frozenset()) -> dict[str, inspect.Parameter]:
    """The keyword options a builder (function or class) declares, minus the framework's own."""
    return {n: p for n, p in _signature(fn).parameters.items()
            if n != "self" and n not in framework_args and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_options(fn: Callable, options: dict[str, Any], where: str, what: str,
                  framework_args: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One-line :class:`ConfigError` for an unknown key or a value of the wrong type or choice."""
    from pydantic import TypeAdapter, ValidationError

    declared = declared_options(fn, framework_args)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in _signature(fn).parameters.values())
    hints = _hints(fn)
    out = {}
    for key, value in (options or {}).items():
        if key not in declared:
            if key in framework_args:
                raise ConfigError(f"{where}.{key}: set by the framework, not by {where}; remove it")
            if takes_any:  # e.g. timm models: options are checked by timm itself
                out[key] = value
                continue
            raise ConfigError(f"{where}.{key}: {what} has no option {key!r}; its options: "
                              f"{', '.join(declared) or 'none'}")
        annotation = hints.get(key, Any)
        try:
            out[key] = TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None
            detail = f"choose one of {', '.join(map(str, choices))}" if choices else exc.errors()[0]["msg"]
            raise ConfigError(f"{where}.{key}: {value!r} is not valid for {what}; {detail}") from None
    return out


def _hints(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to unchecked values
        return {}
