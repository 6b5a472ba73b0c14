"""Predict from an exported ONNX file without torch or timm: numpy, pillow, OpenCV (the same resize
as training, ``data.resize``) and onnxruntime.

    from hybridmednet.deploy.onnx_runtime import OnnxClassifier
    clf = OnnxClassifier("runs/demo/export/model.onnx")
    probs = clf.predict_arrays(images_uint8)          # (N, H, W, C) uint8 at the model's size

or ``hybridmednet predict --backend onnx MODEL.onnx|RUN images...`` /
``python -m hybridmednet.deploy.onnx_runtime MODEL.onnx images... --out preds.csv``.

Everything the model needs to know about its input comes from the file's metadata
(``hybridmednet export`` writes it), so a wrongly sized or normalised input cannot happen here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hybridmednet.deploy.metadata import ExportMetadata, read_onnx_metadata
from hybridmednet.errors import DataError, HybridMedNetError
from hybridmednet.utils.probability import predictive_entropy, probabilities


def normalize_uint8(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` -> float32 ``(N, C, H, W)`` (volumes ``(N, D, H, W, C)`` -> ``(N, C, D, H, W)``):
    /255, then (x - mean) / std, exactly as training's ``data.preprocess.normalize_batch`` (which
    works on torch tensors)."""
    x = np.moveaxis(images, -1, 1).astype(np.float32) / 255.0
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = np.asarray(mean, np.float32).reshape(shape)
    s = np.asarray(std, np.float32).reshape(shape)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def resolve_onnx_path(target: str | Path) -> Path:
    """An ``.onnx`` file, or a run directory holding ``export/model.onnx``."""
    path = Path(target)
    if path.is_dir():
        path = path / "export" / "model.onnx"
        if not path.exists():
            raise DataError(f"{target}: no export/model.onnx; run `hybridmednet export {target}` first")
    if not path.exists():
        raise DataError(f"{path}: no such ONNX file")
    return path


class OnnxClassifier:
    """An exported classifier in an onnxruntime session. ``threads`` caps intra-op threads
    (default: onnxruntime's choice, one per physical core)."""

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        self.path = resolve_onnx_path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DataError(f"{self.path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        self.metadata: ExportMetadata = read_onnx_metadata(self.path, self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.clinical_inputs:
            raise DataError(f"{self.path}: a multimodal model (inputs {[self.metadata.input_name, *self.metadata.clinical_inputs]}); "
                            "this runtime feeds images only: use `hybridmednet predict RUN table.csv` (PyTorch), which "
                            "builds the clinical inputs, or an onnxruntime session with those inputs")

    @property
    def class_names(self) -> list[str]:
        return self.metadata.class_names

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, S, S, C)`` -> float32 ``(N, C, S, S)`` (volumes: ``(N, S, S, S, 1)``), as
        training's ``normalize_batch``."""
        p = self.metadata.preprocessing
        expected = (p["image_size"],) * p.get("spatial_dims", 2) + (p["channels"],)
        if images.shape[1:] != expected:
            raise DataError(f"images of shape {images.shape[1:]} given; {self.path.name} takes (N, "
                            f"{', '.join(map(str, expected))}) uint8 (use load_inputs / predict_files to resize)")
        return normalize_uint8(images, p["mean"], p["std"])

    def logits(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        m = self.metadata
        parts = [self.session.run([m.output_name], {m.input_name: self.normalize(images[i:i + batch_size])})[0]
                 for i in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(m.class_names)), np.float32)

    def predict_arrays(self, images: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """Probabilities ``(N, C)``; temperature-scaled when the export carries a temperature."""
        temperature = self.metadata.temperature if (calibrated and self.metadata.temperature) else 1.0
        return probabilities(self.logits(images), self.metadata.multilabel, temperature)

    def predict_files(self, inputs: list[str], out_csv: str | Path, *, skip_bad: bool = False,
                      path_column: str = "path", abstain: bool = False) -> dict:
        """The same CSV as ``hybridmednet predict`` with the PyTorch backend."""
        from hybridmednet.data.inputs import (
            expand_inputs,
            load_inputs,
            write_predictions_csv,
        )

        m = self.metadata
        if abstain and m.abstain_threshold is None:
            raise DataError(f"{self.path}: exported without an abstention threshold; run `hybridmednet report RUN`, "
                            "then export again")
        images, kept, failed = load_inputs(expand_inputs(inputs, path_column, m.preprocessing.get("spatial_dims", 2)),
                                            m.preprocessing, skip_bad=skip_bad)
        probs = self.predict_arrays(images)
        uncertainty = predictive_entropy(probs, multilabel=m.multilabel)
        threshold = m.abstain_threshold if abstain else None
        result = write_predictions_csv(out_csv, kept, probs, uncertainty, m.class_names, m.multilabel,
                                       threshold=threshold, failed=failed)
        return {**result, "backend": "onnx"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridmednet.deploy.onnx_runtime",
                                     description="Predict images with an exported ONNX model (no torch needed).")
    parser.add_argument("model", help="model.onnx, or a run directory with export/model.onnx")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--out", default="predictions.csv")
    parser.add_argument("--path-column", default="path")
    parser.add_argument("--skip-bad", action="store_true")
    parser.add_argument("--abstain", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        clf = OnnxClassifier(args.model, threads=args.threads)
        print(json.dumps(clf.predict_files(args.inputs, args.out, skip_bad=args.skip_bad,
                                           path_column=args.path_column, abstain=args.abstain)))
    except HybridMedNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
