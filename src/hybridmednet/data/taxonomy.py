"""Coarse labels from a taxonomy in config (e.g. HAM10000 malignant {mel, bcc, akiec} vs benign)."""

from __future__ import annotations

from hybridmednet.errors import ConfigError


def fine_to_coarse(taxonomy: dict[str, list[str]], class_names: list[str]) -> tuple[list[int], list[str]]:
    """Map each fine class index to its coarse group index; every class in exactly one group."""
    coarse_names = list(taxonomy)
    owner: dict[str, str] = {}
    for coarse, members in taxonomy.items():
        for name in members:
            if name not in class_names:
                raise ConfigError(f"data.taxonomy.{coarse}: {name!r} is not a class; classes are {class_names}")
            if name in owner:
                raise ConfigError(f"data.taxonomy: {name!r} is in both {owner[name]!r} and {coarse!r}")
            owner[name] = coarse
    missing = [c for c in class_names if c not in owner]
    if missing:
        raise ConfigError(f"data.taxonomy: classes {missing} belong to no coarse group; every class needs exactly one")
    return [coarse_names.index(owner[c]) for c in class_names], coarse_names
