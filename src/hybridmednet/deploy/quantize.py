"""int8 quantization of an exported ONNX model with ONNX Runtime's quantizer.

* ``dynamic``: int8 weights; activations quantized on the fly per batch (no calibration data).
* ``static``: int8 weights (per channel) and activations, QDQ format, activation ranges
  calibrated on training images (never val or test), so nothing is tuned on held-out data.

The exported model's metadata (preprocessing, classes) is carried over to the int8 file, so the
torch-free runtime runs it unchanged. The model is pre-processed first (shape inference and
graph optimisation, ONNX Runtime's recommended ``quant_pre_process``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from hybridmednet.deploy.metadata import KEY
from hybridmednet.errors import ExportError

MODES = ("dynamic", "static")


class _ImageReader:
    """Feeds normalised calibration batches to ONNX Runtime's calibrator."""

    def __init__(self, inputs: np.ndarray, input_name: str, batch_size: int = 32):
        self.chunks = [inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size)]
        self.input_name = input_name
        self.rewind()

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self.batches = iter(self.chunks)


def _copy_metadata(src: Path, dst: Path) -> None:
    import onnx

    source = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    proto = onnx.load(str(dst))
    del proto.metadata_props[:]
    if KEY in source:
        entry = proto.metadata_props.add()
        entry.key, entry.value = KEY, source[KEY]
    onnx.save(proto, str(dst))


def quantize_onnx(src: str | Path, dst: str | Path, mode: str = "static", *, calibration: np.ndarray | None = None,
                  per_channel: bool = True) -> dict:
    """Quantize ``src`` to ``dst``. ``calibration``: normalised float32 ``(N, C, S, S)`` inputs
    (needed for ``static``)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    from hybridmednet.deploy.onnx_runtime import OnnxClassifier

    if mode not in MODES:
        raise ExportError(f"quantization mode {mode!r}: choose one of {MODES}")
    if mode == "static" and (calibration is None or len(calibration) == 0):
        raise ExportError("static quantization needs calibration images (training images, normalised)")
    src, dst = Path(src), Path(dst)
    input_name = OnnxClassifier(src).metadata.input_name
    with tempfile.TemporaryDirectory(dir=dst.parent) as work:
        pre, out = Path(work) / "pre.onnx", Path(work) / "int8.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
        else:
            quantize_static(str(pre), str(out), _ImageReader(calibration, input_name), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        _copy_metadata(src, out)
        os.replace(out, dst)
    return {"path": str(dst), "mode": mode, "size_mb": dst.stat().st_size / 1e6,
            "calibration_images": 0 if calibration is None else len(calibration)}


def calibration_inputs(run_path: str | Path, n: int = 512, seed: int = 0) -> np.ndarray:
    """``n`` training images (a seeded random subset), normalised as the export expects."""
    from hybridmednet.data.pipeline import prepare_data
    from hybridmednet.deploy.onnx_runtime import OnnxClassifier
    from hybridmednet.engine.run_dir import RunDir

    cfg = RunDir(Path(run_path)).config()
    train = prepare_data(cfg.data, splits_wanted=("train",)).splits["train"]
    pick = np.random.default_rng(seed).permutation(len(train.images))[:n]
    clf = OnnxClassifier(Path(run_path) / "export" / "model.onnx")
    return clf.normalize(train.images[np.sort(pick)])


def quantize_run(run_path: str | Path, mode: str = "static", *, n_calibration: int = 512, out: str | Path | None = None,
                 per_channel: bool = True) -> dict:
    """``RUN/export/model.onnx`` (exported first if missing or stale) -> ``RUN/export/model.int8-<mode>.onnx``."""
    from hybridmednet.engine.run_dir import refuse_multimodal

    refuse_multimodal(run_path, "quantize")
    from hybridmednet.deploy.export import current_onnx

    run_path = Path(run_path)
    src = current_onnx(run_path)  # re-exported if missing or made from an earlier checkpoint
    calibration = calibration_inputs(run_path, n_calibration) if mode == "static" else None
    dst = Path(out) if out else run_path / "export" / f"model.int8-{mode}.onnx"
    return quantize_onnx(src, dst, mode, calibration=calibration, per_channel=per_channel)
