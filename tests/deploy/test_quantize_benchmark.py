"""int8 models run and stay close to fp32; the benchmark measures every backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridmednet.cli.main import main as cli
from hybridmednet.deploy.evaluate import evaluate_onnx
from hybridmednet.deploy.export import export_run
from hybridmednet.deploy.onnx_runtime import OnnxClassifier
from hybridmednet.deploy.quantize import quantize_onnx, quantize_run
from hybridmednet.errors import ExportError

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_model_runs_keeps_metadata_and_agrees_with_fp32(trained_run, mode):
    report = quantize_run(trained_run, mode, n_calibration=32)
    fp32, int8 = OnnxClassifier(trained_run / "export" / "model.onnx"), OnnxClassifier(report["path"])
    assert int8.metadata == fp32.metadata
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    a, b = fp32.predict_arrays(images), int8.predict_arrays(images)
    assert np.abs(a - b).max() < 0.15  # int8 noise, not a different model
    metrics = evaluate_onnx(trained_run, report["path"], "test", n_bootstrap=20)
    assert 0 <= metrics["metrics"]["acc"] <= 1 and metrics["n"] == 30


def test_static_quantization_needs_calibration_images(trained_run, tmp_path):
    export_run(trained_run, "onnx")
    with pytest.raises(ExportError, match="calibration"):
        quantize_onnx(trained_run / "export" / "model.onnx", tmp_path / "q.onnx", "static")
    with pytest.raises(ExportError, match="choose one of"):
        quantize_onnx(trained_run / "export" / "model.onnx", tmp_path / "q.onnx", "int4")


def test_benchmark_measures_eager_and_onnx_in_separate_processes(trained_run, capsys):
    export_run(trained_run, "onnx")
    assert cli(["benchmark", str(trained_run), "--iters", "20", "--threads", "1",
                "--onnx", str(trained_run / "export" / "model.onnx")]) == 0
    result = json.loads((trained_run / "benchmark.json").read_text())
    eager, onnx = result["rows"]
    assert eager["backend"] == "eager_fp32" and eager["torch_imported"]
    assert onnx["backend"] == "onnx:model" and not onnx["torch_imported"]  # the ONNX process never loads torch
    for row in result["rows"]:
        assert 0 < row["latency_ms_p50"] <= row["latency_ms_p95"] and row["throughput_b64_img_s"] > 0
        assert row["peak_rss_mb"] > 0 and row["size_mb"] > 0
    assert result["params_m"] > 0 and result["gflops"] > 0
    assert onnx["peak_rss_mb"] < eager["peak_rss_mb"]  # each backend's own memory, not the parent's
    assert "eager_fp32" in capsys.readouterr().out
