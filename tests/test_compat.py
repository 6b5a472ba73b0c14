"""The torchvision shim: ``import timm`` must work next to a CUDA torchvision on a CPU torch,
and a healthy torchvision must be left alone."""

import subprocess
import sys

from hybridmednet._compat import torchvision as shim


def test_timm_imports_after_hybridmednet():
    code = "import hybridmednet, timm, torchvision; m = timm.create_model('resnet18', num_classes=2); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_detection_reads_the_version_file(tmp_path, monkeypatch):
    import importlib.machinery

    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    spec = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    spec.submodule_search_locations = [str(pkg)]
    monkeypatch.setattr(shim.importlib.util, "find_spec", lambda name: spec)
    import torch

    (pkg / "version.py").write_text("__version__ = '0.28.0+cu130'\n")
    assert shim.cuda_build_on_cpu_torch() is (torch.version.cuda is None)
    (pkg / "version.py").write_text("__version__ = '0.28.0+cpu'\n")
    assert shim.cuda_build_on_cpu_torch() is False
    (pkg / "version.py").write_text("__version__ = '0.28.0'\n")
    assert shim.cuda_build_on_cpu_torch() is False


def test_no_torchvision_is_not_an_error(monkeypatch):
    monkeypatch.setattr(shim.importlib.util, "find_spec", lambda name: None)
    assert shim.cuda_build_on_cpu_torch() is False


def test_the_venv_imports_timm_before_hybridmednet():
    """A user's own script or notebook in the venv that ``scripts/setup.sh`` made: ``import timm``
    first must work (the setup's start-up hook), not only after ``import hybridmednet``."""
    out = subprocess.run([sys.executable, "-c", "import timm, torchvision; print('ok')"], capture_output=True,
                         text=True, timeout=120, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-1500:]
