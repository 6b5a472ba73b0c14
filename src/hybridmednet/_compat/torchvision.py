"""Make ``import torchvision`` (and so ``import timm``) work when torchvision's compiled ops
cannot load.

PyPI's torchvision wheels are CUDA builds. Installed next to a CPU-only torch, their ``_C``
extension fails to load, and ``torchvision/_meta_registrations.py`` then dies on
``register_fake("torchvision::nms")`` with "operator torchvision::nms does not exist": the
whole package (and timm, which imports it) becomes unimportable although nothing
HybridMedNet uses needs those ops.

:func:`prepare_torchvision` (run when ``hybridmednet`` is imported) imports nothing: it puts
a one-shot finder on ``sys.meta_path`` that, when torchvision is first imported, detects that
case without importing torchvision and declares the schemas of the two ops registered
unconditionally (``nms``, ``qnms``) with no kernel. So importing ``hybridmednet`` costs no torch
import, and the torch-free ONNX runtime (``hybridmednet.deploy.onnx_runtime``) works where torch
is absent. :func:`ensure_torchvision` is the fallback: it imports
torchvision normally and, only if that fails with exactly this error, declares those schemas
and imports again. On a machine with a working torchvision nothing is changed.
Calling ``torchvision.ops.nms`` afterwards raises torch's "could not run ... backend" error,
which is honest: the op really is unavailable on that install.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import re
import sys
import types
from pathlib import Path

_MISSING_OP = "operator torchvision::"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the torch.library fragment alive for the life of the process
patched = False  # True when the shim had to declare the op schemas


def _declare_missing_ops() -> None:
    global _library, patched
    if patched:
        return
    import torch

    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _library.define(schema)
    patched = True


def cuda_build_on_cpu_torch() -> bool:
    """True when torchvision is a CUDA build and torch is not: its ``_C`` can never load.

    Reads ``torchvision/version.py`` as text so the check costs no torchvision import.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        match = re.search(r"^__version__\s*=\s*['\"][^'\"]*\+cu\d+", version_file.read_text(), re.MULTILINE)
    except OSError:
        return False
    if match is None:
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.version.cuda is None


class _FixOnFirstImport(importlib.abc.MetaPathFinder):
    """Applies the fix just before torchvision is first imported, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            if cuda_build_on_cpu_torch():
                _declare_missing_ops()
        # the normal finders import the module


def prepare_torchvision() -> None:
    """Import-free: arrange for the fix to run when torchvision is first imported."""
    if "torchvision" in sys.modules or any(isinstance(f, _FixOnFirstImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _FixOnFirstImport())


def _purge(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def ensure_torchvision() -> types.ModuleType | None:
    """Import torchvision, declaring missing compiled-op schemas if needed.

    Returns the module, or ``None`` when torchvision is not installed at all.
    """
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError as exc:
        if exc.name == "torchvision":
            return None
        raise
    except RuntimeError as exc:
        if _MISSING_OP not in str(exc):
            raise
    _purge("torchvision")
    _declare_missing_ops()
    return importlib.import_module("torchvision")
