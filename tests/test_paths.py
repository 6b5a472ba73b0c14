"""Data, cache and presets are found the same way from any folder, and from a wheel install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hybridmednet import paths
from hybridmednet.config.schema import MedMNISTSource
from hybridmednet.data.sources import build_table
from hybridmednet.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def test_data_root_does_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.DATA_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    if (REPO.parent / "shared" / "data").is_dir():  # a source checkout beside the shared data
        assert paths.default_data_root() == (REPO.parent / "shared" / "data").resolve()
    monkeypatch.setattr(paths, "source_checkout", lambda: None)  # an installed package
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    assert paths.default_data_root() == (tmp_path / "cache" / "data").resolve()
    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path / "mine"))
    assert paths.default_data_root() == (tmp_path / "mine").resolve()


def test_a_missing_npz_names_the_variable_to_set(tmp_path):
    source = MedMNISTSource(kind="medmnist", root=str(tmp_path), flag="bloodmnist", download=False)
    with pytest.raises(DataError, match=r"bloodmnist\.npz: file not found; set HYBRIDMEDNET_DATA to the folder"):
        build_table(source)


def test_presets_resolve_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "dermamnist" in paths.list_presets()
    assert paths.resolve_config_path("dermamnist") == paths.preset_dir() / "dermamnist.yaml"
    assert paths.resolve_config_path("no_such_preset") == Path("no_such_preset")


@pytest.mark.slow
def test_a_non_editable_install_ships_the_presets(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    code = ("import hybridmednet.paths as p; print(p.preset_dir()); print(','.join(p.list_presets())); "
            "print(p.source_checkout())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    preset_dir, names, checkout = out.stdout.strip().splitlines()
    assert Path(preset_dir).is_relative_to(target) and "dermamnist" in names.split(",") and checkout == "None"
