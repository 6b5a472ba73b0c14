"""Test-split metrics (with bootstrap CIs) of an exported ONNX model, fp32 or int8: the numbers
that say what quantization or pruning cost, computed exactly like ``hybridmednet evaluate``."""

from __future__ import annotations

from pathlib import Path

from hybridmednet.errors import DataError


def evaluate_onnx(run_path: str | Path, onnx_path: str | Path, split: str = "test", *,
                  n_bootstrap: int | None = None) -> dict:
    from hybridmednet.data.pipeline import prepare_data
    from hybridmednet.deploy.export import require_current_onnx
    from hybridmednet.deploy.onnx_runtime import OnnxClassifier
    from hybridmednet.engine.run_dir import RunDir
    from hybridmednet.metrics import compute_metrics

    cfg = RunDir(Path(run_path)).config()
    require_current_onnx(onnx_path, run_path)
    clf = OnnxClassifier(onnx_path)
    data = prepare_data(cfg.data, splits_wanted=(split,))
    if data.class_names != clf.class_names:
        raise DataError(f"{onnx_path}: classes {clf.class_names} differ from the run's data {data.class_names}")
    part = data.splits[split]
    probs = clf.predict_arrays(part.images, calibrated=False)  # as `evaluate`: uncalibrated probabilities
    n_boot = cfg.eval.n_bootstrap if n_bootstrap is None else n_bootstrap
    result = compute_metrics(probs, part.targets, data.class_names, multilabel=data.multilabel,
                             n_bootstrap=n_boot, seed=cfg.seed)
    result.update(split=split, n=len(part), model_file=str(onnx_path), checkpoint_sha256=clf.metadata.checkpoint_sha256)
    return result
