"""Load a YAML config, apply ``--set a.b=value`` overrides, validate, and explain errors.

Pydantic's error list is turned into one line per problem that names the dotted key and, for
an unknown key, the keys that are valid at that level.
"""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hybridmednet.config.schema import ExperimentConfig
from hybridmednet.errors import ConfigError
from hybridmednet.paths import list_presets


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=30"`` -> (["train", "epochs"], 30); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.epochs=30")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                dotted = ".".join(path[: i + 1])
                raise ConfigError(f"override {text!r}: {dotted} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _model_at(loc: tuple, root: type[BaseModel] = ExperimentConfig) -> tuple[type[BaseModel] | None, list[str]]:
    """Walk ``loc`` through the schema; return the model class reached and the dotted key parts
    (discriminator tags such as ``'medmnist'`` in ``data.source.medmnist.flag`` are dropped)."""
    model: Any = root
    parts: list[str] = []
    for item in loc:
        if isinstance(model, list):
            model = next((m for m in model if _tag(m) == item), None)
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            parts.append(str(item))
            model = None
            continue
        if item in model.model_fields:
            parts.append(str(item))
            model = _unwrap(model.model_fields[item].annotation)
        else:
            parts.append(str(item))
            return model, parts
        if isinstance(model, list) and len(model) == 1:
            model = model[0]
    return (model if isinstance(model, type) else None), parts


# keys that moved, so an old config gets told where to put them
MOVED_KEYS = {"data.source.text_column": "data.clinical.text_column (the text the model reads, with data.clinical.table)"}


def _unwrap(annotation: Any) -> Any:
    """Reduce ``Optional[X]``, ``Annotated[Union[A, B], ...]`` to a model class or list of them."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(args[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # Union[A, B] and A | B
        models = [a for a in (_unwrap(x) for x in args) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models or None
    return annotation


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    return typing.get_args(field.annotation)[0] if field is not None else None


def explain(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        loc = item["loc"]
        if item["type"] == "extra_forbidden":
            model, parts = _model_at(loc[:-1])
            parts.append(str(loc[-1]))
            valid = ", ".join(model.model_fields) if model else "?"
            moved = MOVED_KEYS.get(".".join(parts))
            lines.append(f"unknown config key '{'.'.join(parts)}'; "
                         + (f"it is now {moved}" if moved else f"valid keys here: {valid}"))
            continue
        _, parts = _model_at(loc)
        key = ".".join(parts) or "<root>"
        given = item.get("input")
        hint = f" (got {given!r})" if not isinstance(given, dict) else ""
        lines.append(f"config key '{key}': {item['msg']}{hint}")
    return f"{source}: " + "; ".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *, raw: dict | None = None) -> ExperimentConfig:
    """Read YAML at ``path`` (or take ``raw``), apply overrides, and validate."""
    source = str(path) if path is not None else "<config>"
    if raw is None:
        if path is None:
            raise ConfigError("no config given: pass --config <file.yaml> or a preset name")
        if Path(path).is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file; give a YAML file, a preset name "
                              f"({', '.join(list_presets())}), or train straight from a data folder with --data {path}")
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found; give a YAML file or a preset name "
                              f"({', '.join(list_presets())})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (data, model, train ...)")
    merged = apply_overrides(raw, overrides or [])
    try:
        config = ExperimentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(explain(exc, source)) from None
    try:
        check_components(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def check_components(config: ExperimentConfig) -> None:
    """Names and free-form options of registered components, checked against their registries
    before any data is read: the model and its ``model.kwargs`` (head and head options too), the
    loss and ``train.loss_kwargs``, the distillers and their options, and the multimodal fusion."""
    from hybridmednet.losses import check_loss
    from hybridmednet.models._factory import check_model_dims, check_model_options

    check_model_options(config.model.name, config.model.kwargs)
    check_model_dims(config.model.name, config.data.spatial_dims)
    check_loss(config.train.loss, config.train.loss_kwargs)
    if config.data.augment_extra:
        from hybridmednet.data.transforms import extra_op
        from hybridmednet.data.volume_transforms import extra_op_3d

        for op in config.data.augment_extra:
            (extra_op_3d if config.data.spatial_dims == 3 else extra_op)(op.name, op.p, op.options)
    if config.train.distill is not None:
        from hybridmednet.losses.distill import check_distiller

        for i, method in enumerate(config.train.distill.methods):
            check_distiller(method.name, method.options, f"train.distill.methods[{i}]")
    if config.model.multimodal is not None:
        from hybridmednet.layers.modality_fusion import FUSIONS, STAGE_FUSIONS

        fusion = config.model.multimodal.fusion
        if fusion not in FUSIONS and fusion not in STAGE_FUSIONS:
            raise ConfigError(f"model.multimodal.fusion: unknown fusion {fusion!r}; choose one of "
                              f"{', '.join(FUSIONS.names())}, or {', '.join(STAGE_FUSIONS)} (over several image stages)")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_differences(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two dumped configs (``model_dump(mode="json")``)."""
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def save_config(config: ExperimentConfig, path: Path) -> None:
    from hybridmednet.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
