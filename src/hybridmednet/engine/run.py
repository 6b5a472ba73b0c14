"""``Run``: a trained run as every command uses it.

One object loads a run directory's config, its validation-selected checkpoint (rebuilt into a
model on the inference device), the preprocessing and clinical spec recorded with it, and the
calibration fitted for that very checkpoint. Evaluate, ensembles, the report, predict, explain,
export and benchmark all start from :meth:`Run.load` and predict through :meth:`Run.predict`
(the one inference path, :mod:`hybridmednet.engine.inference`), so they cannot disagree on
channels_last, precision, batch size or clinical inputs.

Every file derived from the checkpoint records ``checkpoint_sha256``; :meth:`Run.is_current`
tells a reader whether such a record still describes this checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hybridmednet.config.schema import ExperimentConfig
from hybridmednet.engine.inference import mc_dropout_predict, predict_arrays, tta_predict
from hybridmednet.engine.run_dir import (
    RunDir,
    adapt_for_run,
    build_model_from_config,
    recorded_checkpoint,
    strip_training_transforms,
)
from hybridmednet.engine.runtime import Runtime, make_runtime, to_channels_last
from hybridmednet.errors import CheckpointError, DataError

INFERENCE_PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class Run:
    dir: RunDir
    config: ExperimentConfig
    model: nn.Module
    meta: dict  # the checkpoint's JSON: class names, preprocessing, clinical spec, sha256 ...
    runtime: Runtime
    precision: str = "fp32"

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | RunDir, *, tag: str = "best", device: str | None = None,
             precision: str = "fp32") -> Run:
        """The model as selected on validation, on ``device``, in eval mode.

        ``precision``: inference runs in fp32 by default, whatever the training autocast was, so
        reported accuracy is the accuracy of the weights (``bf16`` or ``auto`` opt into the
        training autocast's speed)."""
        from hybridmednet.engine.checkpoint import load_checkpoint

        if precision not in INFERENCE_PRECISIONS:
            raise CheckpointError(f"inference precision {precision!r}: choose one of {', '.join(INFERENCE_PRECISIONS)}")
        run_dir = path if isinstance(path, RunDir) else RunDir(Path(path))
        cfg = run_dir.config()
        tensors, meta = load_checkpoint(run_dir.checkpoints, tag)
        num_coarse = len(meta["coarse_names"]) if meta.get("coarse_names") else None
        model = build_model_from_config(cfg, len(meta["class_names"]), pretrained=False, num_coarse=num_coarse,
                                        clinical_spec=meta.get("clinical_spec"))
        # a QAT run's checkpoints hold the fake-quant parametrization, stripped after loading
        model, _ = adapt_for_run(model, cfg, {len(meta["class_names"]), num_coarse or 0}, for_training=False)
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{run_dir.checkpoints / meta['weights']}: does not fit model {cfg.model.name!r} "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        strip_training_transforms(model, cfg)
        runtime = make_runtime(cfg.train.model_copy(update={"precision": precision}), device=device)
        model = model.to(runtime.device).eval()
        if runtime.channels_last:
            model = to_channels_last(model)
        return cls(run_dir, cfg, model, meta, runtime, precision)

    # ------------------------------------------------------------------ what the checkpoint says
    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def multilabel(self) -> bool:
        return bool(self.meta["multilabel"])

    @property
    def preprocessing(self) -> dict:
        return self.meta["preprocessing"]

    @property
    def clinical_spec(self) -> dict | None:
        return self.meta.get("clinical_spec")

    @property
    def checkpoint_sha256(self) -> str:
        return self.meta["weights_sha256"]

    @cached_property
    def calibration(self) -> dict | None:
        """``calibration.json`` (temperature and abstention threshold, fitted on val by ``report``),
        only if it was fitted for this very checkpoint."""
        path = self.path / "calibration.json"
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        return record if self.is_current(record) else None

    def provenance(self) -> dict:
        """What every derived file records about the checkpoint it came from."""
        return {"checkpoint_sha256": self.checkpoint_sha256, "epoch": self.meta["epoch"],
                "variant": self.meta.get("variant"), "selected_on": f"val {self.config.train.monitor}",
                "inference_precision": str(self.runtime.amp_dtype or "fp32").replace("torch.", "")}

    def is_current(self, record: dict | None) -> bool:
        """Whether a derived record (``metrics.json`` entry, calibration, export metadata ...) was
        computed from this checkpoint."""
        return recorded_checkpoint(record) == self.checkpoint_sha256

    # ------------------------------------------------------------------ data and inference
    def prepare(self, splits=("test",), *, data_cfg=None):
        """The run's data (or ``data_cfg``) with the checkpoint's clinical spec, class-checked."""
        from hybridmednet.data.pipeline import prepare_data

        data = prepare_data(data_cfg or self.config.data, splits_wanted=tuple(splits), clinical_spec=self.clinical_spec)
        if data.class_names != self.class_names:
            raise DataError(f"{data.source}: classes {data.class_names} differ from the model's {self.class_names}")
        return data

    def _norm(self) -> dict:
        return {"mean": self.preprocessing["mean"], "std": self.preprocessing["std"], "runtime": self.runtime,
                "multilabel": self.multilabel, "batch_size": self.config.data.eval_batch_size}

    def predict(self, images: np.ndarray, extras: dict | None = None, *, flips=("none",)) -> np.ndarray:
        """Probabilities ``(N, C)`` (uncalibrated) for uint8 ``(N, H, W, C)`` images at the run's size;
        ``flips`` other than ``("none",)``: the mean over flips (test-time augmentation)."""
        if tuple(flips) == ("none",):
            return predict_arrays(self.model, images, extras=extras, **self._norm())[0]
        return tta_predict(self.model, images, flips=tuple(flips), extras=extras, **self._norm())[0]

    def mc_dropout(self, images: np.ndarray, extras: dict | None = None, *, n_samples: int = 10,
                   uncertainty: str = "mi") -> tuple[np.ndarray, np.ndarray]:
        return mc_dropout_predict(self.model, images, n_samples=n_samples, uncertainty=uncertainty, extras=extras,
                                  **self._norm())

    def has_dropout(self) -> bool:
        return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in self.model.modules())

    def cpu_float_model(self) -> nn.Module:
        """The model in fp32, contiguous, on the CPU: what export, Grad-CAM and eager timing need."""
        return self.model.float().to(torch.device("cpu"), memory_format=torch.contiguous_format).eval()
