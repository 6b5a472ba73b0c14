"""Where HybridMedNet looks for data, presets and its caches, independent of the current folder.

- data: ``$HYBRIDMEDNET_DATA``; else, in a source checkout, ``<checkout>/../shared/data`` (the
  layout of this project's development machines); else ``<cache>/data``, where official MedMNIST
  files are downloaded (as the ``medmnist`` package keeps them under ``~/.medmnist``). Never a
  path relative to wherever the user stands: ``torchrun ... --config x.yaml`` from another
  folder finds the same files.
- cache: ``$HYBRIDMEDNET_CACHE``, else ``~/.cache/hybridmednet`` (decoded images, text embeddings).
- presets: the YAML files shipped inside the package (``hybridmednet/presets``), so a wheel
  install has them too.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DATA_ROOT_ENV = "HYBRIDMEDNET_DATA"
CACHE_ENV = "HYBRIDMEDNET_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "hybridmednet")).expanduser()


def source_checkout() -> Path | None:
    """The repository root when the package runs from a source checkout (``src/`` layout)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() and (root / "src" / "hybridmednet").is_dir() else None


def default_data_root() -> Path:
    """Where ``{data_root}`` points (see the module docstring)."""
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser().resolve()
    checkout = source_checkout()
    if checkout is not None and (checkout.parent / "shared" / "data").is_dir():
        return (checkout.parent / "shared" / "data").resolve()
    return (cache_dir() / "data").resolve()


def data_root_hint() -> str:
    """One phrase for error messages about missing data files."""
    return (f"set {DATA_ROOT_ENV} to the folder holding the data (now {default_data_root()}"
            f"{', from ' + DATA_ROOT_ENV if os.environ.get(DATA_ROOT_ENV) else ''})")


def preset_dir() -> Path:
    return Path(str(resources.files("hybridmednet") / "presets"))


def list_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def resolve_config_path(value: str | Path) -> Path:
    """A path, or a preset name such as ``dermamnist`` (``hybridmednet/presets/<name>.yaml``)."""
    path = Path(value)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    preset = preset_dir() / f"{value}.yaml"
    return preset if preset.exists() else path
