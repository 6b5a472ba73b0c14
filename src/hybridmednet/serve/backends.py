"""What the service runs: a trained run through PyTorch (``Run``, the inference path every
command uses) or its exported ONNX file through onnxruntime (never importing torch).

Both give raw probabilities for a batch of uint8 images at the model's size; :func:`describe`
turns them into the response (temperature scaling, uncertainty, abstention, conformal set, risk
groups, out-of-distribution score) from the run's ``calibration.json``, used only when it was
fitted for the very checkpoint being served.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from hybridmednet.errors import DataError


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class Backend:
    kind = ""
    name: str
    path: Path
    class_names: list[str]
    multilabel: bool
    preprocessing: dict
    checkpoint_sha256: str
    calibration: dict | None
    clinical_spec: dict | None = None
    clinical_cfg = None

    def probs(self, images: np.ndarray, extras: dict | None = None) -> np.ndarray:
        raise NotImplementedError

    @functools.cached_property
    def conformal(self):
        """The run's conformal sets, fitted once (not per request)."""
        from hybridmednet.engine.predict import fitted_conformal

        return fitted_conformal(self.calibration)

    def info(self) -> dict:
        """``GET /v1/models``: what a caller needs to know before sending a case."""
        metrics = (_read_json(self.path / "metrics.json") or {}).get("test") if self.path.is_dir() else None
        if metrics and metrics.get("checkpoint_sha256") not in (None, self.checkpoint_sha256):
            metrics = None  # scored from another checkpoint: not this model's numbers
        summary = _read_json(self.path / "data_summary.json") or {}
        intended = {"use": "research and decision support under clinical supervision; not a certified medical device",
                    "trained_on": summary.get("source"), "training_cases": (summary.get("n") or {}).get("train"),
                    "limits": [f"input {self.preprocessing['image_size']} px ({self.preprocessing['channels']} channel(s)); "
                               "fine detail is lost at small sizes",
                               "performance on other scanners, sites and populations is unknown until measured "
                               "(`hybridmednet evaluate RUN --data OTHER`)",
                               "the full model card is in the run's report (`hybridmednet report RUN`)"]}
        return {"name": self.name, "backend": self.kind, "classes": self.class_names, "multilabel": self.multilabel,
                "preprocessing": self.preprocessing, "checkpoint_sha256": self.checkpoint_sha256,
                "calibrated": self.calibration is not None,
                "clinical_inputs": list(self.clinical_spec["columns"]) if self.clinical_spec else [],
                "test_metrics": {k: metrics[k] for k in ("metrics", "ci95", "ci_method", "n") if k in metrics}
                if metrics else None,
                "intended_use": intended}


class TorchBackend(Backend):
    kind = "torch"

    def __init__(self, path: str | Path, name: str, device: str | None = None, threads: int | None = None):
        import torch

        from hybridmednet.engine.run import Run

        if threads:  # intra-op threads of this process (torch's setting is process-wide)
            torch.set_num_threads(threads)
        self.run = Run.load(path, device=device)
        self.name, self.path = name, self.run.path
        self.class_names, self.multilabel = self.run.class_names, self.run.multilabel
        self.preprocessing, self.checkpoint_sha256 = self.run.preprocessing, self.run.checkpoint_sha256
        self.calibration = self.run.calibration
        self.clinical_spec = self.run.clinical_spec
        self.clinical_cfg = self.run.config.data.clinical

    def probs(self, images: np.ndarray, extras: dict | None = None) -> np.ndarray:
        return self.run.predict(images, extras)

    def cam(self, image: np.ndarray, target: int) -> np.ndarray:
        """Grad-CAM of ``target`` for one image at the model's size, (H, W) in [0, 1]."""
        from hybridmednet.explain.cam import compute_cam

        model = self.run.model
        return compute_cam(model, np.array(image[None]), mean=self.preprocessing["mean"], std=self.preprocessing["std"],
                           target_classes=[target])[0]


class OnnxBackend(Backend):
    kind = "onnx"

    def __init__(self, path: str | Path, name: str, threads: int | None = None):
        from hybridmednet.deploy.onnx_runtime import OnnxClassifier, resolve_onnx_path

        target = Path(path)
        self.clf = OnnxClassifier(resolve_onnx_path(target), threads=threads)
        m = self.clf.metadata
        self.name, self.path = name, target if target.is_dir() else target.parent
        self.class_names, self.multilabel, self.preprocessing = m.class_names, m.multilabel, m.preprocessing
        self.checkpoint_sha256 = m.checkpoint_sha256
        best = _read_json(target / "checkpoints" / "best.json") if target.is_dir() else None
        if best is not None and best.get("weights_sha256") != m.checkpoint_sha256:
            raise DataError(f"{self.clf.path}: exported from checkpoint {str(m.checkpoint_sha256)[:12]}, but {target}'s "
                            f"best checkpoint is {best['weights_sha256'][:12]}; run `hybridmednet export {target}` again")
        record = _read_json(self.path / "calibration.json")
        self.calibration = record if record and record.get("checkpoint_sha256") == m.checkpoint_sha256 else None

    def probs(self, images: np.ndarray, extras: dict | None = None) -> np.ndarray:
        return self.clf.predict_arrays(images, calibrated=False)


def load_backend(path: str | Path, kind: str, *, name: str | None = None, device: str | None = None,
                 threads: int | None = None) -> Backend:
    name = name or Path(path).name.removesuffix(".onnx")
    if kind == "torch":
        return TorchBackend(path, name, device, threads)
    if kind == "onnx":
        return OnnxBackend(path, name, threads)
    raise DataError(f"backend {kind!r}: choose torch or onnx")


def describe(backend: Backend, raw: np.ndarray) -> list[dict]:
    """One response body per case from raw probabilities ``(N, C)``."""
    from hybridmednet.engine.predict import risk_group_columns, uncertainty_columns

    calibration, names = backend.calibration, backend.class_names
    probs, uncertainty = uncertainty_columns(raw, calibration, backend.multilabel)
    sets = backend.conformal.predict(probs) if backend.conformal is not None else None
    groups = risk_group_columns(calibration, raw, names)
    ood = (calibration or {}).get("ood")
    out = []
    for i, row in enumerate(probs):
        if backend.multilabel:
            label = [c for c, p in zip(names, row) if p >= 0.5]
        else:
            label = names[int(np.argmax(row))]
        body = {"probabilities": {c: float(p) for c, p in zip(names, row)}, "predicted": label,
                "uncertainty": float(uncertainty[i]), "calibrated": calibration is not None,
                "abstain": bool(uncertainty[i] > calibration["abstain_threshold"]) if calibration else None,
                "conformal_set": [c for c, inside in zip(names, sets[i]) if inside] if sets is not None else None,
                "risk_groups": {g: {"probability": float(groups[f"prob_{g}"][i]), "flag": groups[f"flag_{g}"][i] == "true"}
                                for g in (calibration or {}).get("risk_groups") or {}}}
        confidence = float(row.max())
        body["ood"] = {"score": 1.0 - confidence, "measure": "1 - max probability (temperature-scaled)",
                       "flag": bool(confidence < ood["threshold"]) if ood else None}
        out.append(body)
    return out
