"""The ONNX runtime predicts without torch, and agrees with the PyTorch backend."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import pytest

from hybridmednet.cli.main import main as cli
from hybridmednet.deploy.export import export_run

pytest.importorskip("onnxruntime")

# Importing torch, timm or torchvision raises, as on a machine where they are not installed.
BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "timm", "torchvision"):
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
""")


def read_rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_runtime_runs_where_torch_cannot_be_imported(trained_run, sample_images, tmp_path):
    export_run(trained_run, "onnx")
    torch_csv, onnx_csv = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    assert cli(["predict", str(trained_run), *sample_images, "--out", str(torch_csv)]) == 0
    code = BLOCK_TORCH + textwrap.dedent(f"""
        from hybridmednet.deploy.onnx_runtime import main
        code = main([{str(trained_run / "export" / "model.onnx")!r}, *{sample_images!r}, "--out", {str(onnx_csv)!r}])
        assert "torch" not in sys.modules and "timm" not in sys.modules
        raise SystemExit(code)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = read_rows(torch_csv), read_rows(onnx_csv)
    assert [r["path"] for r in a] == [r["path"] for r in b] and len(a) == 5
    for ra, rb in zip(a, b):
        assert ra["predicted"] == rb["predicted"]
        for key in ra:
            if key.startswith("prob_") or key == "uncertainty":
                assert abs(float(ra[key]) - float(rb[key])) < 1e-4, key


def test_cli_export_then_predict_with_the_onnx_backend(trained_run, sample_images, tmp_path, capsys):
    assert cli(["export", str(trained_run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert '"max_abs_diff"' in capsys.readouterr().out
    out = tmp_path / "p.csv"
    assert cli(["predict", str(tmp_path / "m.onnx"), *sample_images, "--backend", "onnx", "--out", str(out)]) == 0
    assert len(read_rows(out)) == 5


def test_missing_export_and_unreadable_images_are_clear_errors(trained_run, tmp_path, capsys):
    assert cli(["predict", str(tmp_path), "x.png", "--backend", "onnx"]) == 2
    assert "hybridmednet export" in capsys.readouterr().err
    export_run(trained_run, "onnx")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert cli(["predict", str(trained_run), str(bad), "--backend", "onnx"]) == 2
    assert "bad.png" in capsys.readouterr().err
    out = tmp_path / "p.csv"
    assert cli(["predict", str(trained_run), str(bad), "--backend", "onnx", "--skip-bad", "--out", str(out)]) == 0
    assert read_rows(out)[0]["error"]
