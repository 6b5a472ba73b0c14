"""``hybridmednet export RUN --format onnx|torchscript``: the validation-selected checkpoint as a
deployable file with its preprocessing and class names embedded, checked against PyTorch.

The file takes a float32 ``(batch, C, S, S)`` input (volumes ``(batch, C, S, S, S)``) normalised
with the embedded mean/std (batch is dynamic) and, for multimodal models, the clinical inputs named in the metadata; it returns
``logits``. After writing, the export is run on fresh inputs at two batch
sizes and compared with the PyTorch model; above ``tolerance`` (max abs logit difference) the
export fails and no file is left behind. Files are written to a temporary name and moved into
place only after the check passes, so an older export is never half-overwritten.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from hybridmednet.deploy.metadata import KEY, ExportMetadata, build_metadata
from hybridmednet.deploy.onnx_runtime import normalize_uint8
from hybridmednet.errors import ExportError
from hybridmednet.output import LogitsOnly

FORMATS = {"onnx": ".onnx", "torchscript": ".ts"}
DEFAULT_TOLERANCE = 1e-3


def parity_inputs(metadata: ExportMetadata, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Graph input name -> array: random uint8 images normalised exactly as deployment will
    (realistic value ranges) and, for multimodal models, random clinical inputs of the right kind
    (some cases without clinical input)."""
    p = metadata.preprocessing
    rng = np.random.default_rng(seed)
    spatial = (p["image_size"],) * p.get("spatial_dims", 2)
    images = rng.integers(0, 256, (batch, *spatial, p["channels"]), dtype=np.uint8)
    inputs = {metadata.input_name: normalize_uint8(images, p["mean"], p["std"])}
    if metadata.clinical_spec:
        from hybridmednet.models.multimodal import example_clinical_inputs

        inputs |= example_clinical_inputs(metadata.clinical_spec, batch, tokens=3 + seed, rng=rng)
    return inputs


def _dynamic_axes(names: list[str]) -> dict[str, dict[int, str]]:
    """Batch is dynamic everywhere; so is the token count of text inputs."""
    token_axis = {"token_ids": 1, "text_mask": 1, "text_states": 2}
    return {n: {0: "batch", **({token_axis[n]: "tokens"} if n in token_axis else {})} for n in names}


def _torch_logits(module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return module(*(torch.from_numpy(v) for v in inputs.values())).float().numpy()


def write_onnx(module: torch.nn.Module, path: Path, metadata: ExportMetadata, opset: int = 17) -> None:
    """TorchScript-based exporter (the dynamo exporter needs onnxscript and is slower to run)."""
    import onnx

    for m in module.modules():  # a block that knows it cannot be traced faithfully says why
        reason = getattr(m, "not_exportable", None)
        if reason:
            raise ExportError(f"ONNX export of {metadata.model_name!r}: {type(m).__name__} {reason}")
    example = parity_inputs(metadata, 2, seed=0)
    names = list(example)
    with warnings.catch_warnings():  # legacy-exporter notice; shape checks trace to constants
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(module, tuple(torch.from_numpy(v) for v in example.values()), str(path), dynamo=False,
                              opset_version=opset, input_names=names, output_names=[metadata.output_name],
                              dynamic_axes=_dynamic_axes(names) | {metadata.output_name: {0: "batch"}})
        except Exception as exc:
            raise ExportError(f"ONNX export of {metadata.model_name!r} failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}") from exc
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = KEY, metadata.to_json()
    onnx.save(proto, str(path))


def onnx_logits(path: Path, inputs: dict[str, np.ndarray], metadata: ExportMetadata) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}  # an input the graph ignores (metadata-only: the image) is dropped
    return session.run([metadata.output_name], {k: v for k, v in inputs.items() if k in wanted})[0]


def write_torchscript(module: torch.nn.Module, path: Path, metadata: ExportMetadata, opset: int | None = None) -> None:
    """Traced (not scripted): every registered model is traceable; ``opset`` is ONNX-only."""
    example = tuple(torch.from_numpy(v) for v in parity_inputs(metadata, 2, seed=0).values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            traced = torch.jit.trace(module, example, check_trace=False)
        except Exception as exc:
            raise ExportError(f"TorchScript trace of {metadata.model_name!r} failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}") from exc
        torch.jit.save(traced, str(path), _extra_files={f"{KEY}.json": metadata.to_json()})


def load_torchscript(path: str | Path, extra_files: dict | None = None) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch.jit is deprecated upstream but still the portable C++ format
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files if extra_files is not None else {})


def torchscript_logits(path: Path, inputs: dict[str, np.ndarray], metadata: ExportMetadata) -> np.ndarray:
    return _torch_logits(load_torchscript(path), inputs)


def read_torchscript_metadata(path: str | Path) -> ExportMetadata:
    extra = {f"{KEY}.json": ""}
    load_torchscript(path, extra)
    return ExportMetadata.from_json(extra[f"{KEY}.json"], path)


WRITERS = {"onnx": (write_onnx, onnx_logits), "torchscript": (write_torchscript, torchscript_logits)}


def export_module(module: torch.nn.Module, metadata: ExportMetadata, out: str | Path, fmt: str = "onnx", *,
                  tolerance: float = DEFAULT_TOLERANCE, opset: int = 17) -> dict:
    """Export ``module`` (eval mode, fp32, CPU) to ``out`` and verify it; returns the parity report."""
    if fmt not in WRITERS:
        raise ExportError(f"--format {fmt!r}: choose one of {sorted(WRITERS)}")
    write, run = WRITERS[fmt]
    module = LogitsOnly(module.float().cpu().to(memory_format=torch.contiguous_format)).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(module, tmp, metadata, opset)
        diffs = []
        for batch, seed in ((1, 1), (5, 2)):  # a batch size other than the traced one: dynamic batch works
            x = parity_inputs(metadata, batch, seed)
            diffs.append(float(np.abs(run(tmp, x, metadata) - _torch_logits(module, x)).max()))
        max_diff = max(diffs)
        if not np.isfinite(max_diff) or max_diff > tolerance:
            raise ExportError(f"{fmt} export of {metadata.model_name!r} does not match PyTorch: max abs logit "
                              f"difference {max_diff:.3g} > tolerance {tolerance:g}; nothing was written to {out}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "format": fmt, "max_abs_diff": max_diff, "tolerance": tolerance,
            "size_mb": out.stat().st_size / 1e6, **({"opset": opset} if fmt == "onnx" else {})}


def export_run(run_path: str | Path, fmt: str = "onnx", out: str | Path | None = None, *,
               tolerance: float = DEFAULT_TOLERANCE, opset: int = 17) -> dict:
    """Export a run's validation-selected checkpoint (default ``RUN/export/model.<ext>``)."""
    from hybridmednet.engine.run import Run

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {sorted(FORMATS)}")
    run = Run.load(run_path, device="cpu")
    metadata = build_metadata(run.meta, run.config.model.name, run.calibration)
    out = Path(out) if out else run.path / "export" / f"model{FORMATS[fmt]}"
    report = export_module(run.cpu_float_model(), metadata, out, fmt, tolerance=tolerance, opset=opset)
    report["metadata"] = json.loads(metadata.to_json())
    return report


def onnx_checkpoint_sha256(path: str | Path) -> str | None:
    """The checkpoint an exported (or quantized) ONNX file was made from, read from its metadata."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props[KEY]).get("checkpoint_sha256") if KEY in props else None


def current_onnx(run_path: str | Path) -> Path:
    """``RUN/export/model.onnx`` made from the run's current best checkpoint: exported now when it
    is missing or was exported from an earlier checkpoint (``train --overwrite`` / ``--resume``)."""
    from hybridmednet.engine.run_dir import RunDir

    run_dir = RunDir(Path(run_path))
    path = run_dir.path / "export" / "model.onnx"
    if not path.exists() or onnx_checkpoint_sha256(path) != run_dir.checkpoint_sha256():
        export_run(run_dir.path, "onnx")
    return path


def require_current_onnx(path: str | Path, run_path: str | Path) -> None:
    """Refuse an ONNX file made from another checkpoint than the run's current best one."""
    from hybridmednet.engine.run_dir import RunDir

    expected, found = RunDir(Path(run_path)).checkpoint_sha256(), onnx_checkpoint_sha256(path)
    if found != expected:
        raise ExportError(f"{path}: made from checkpoint {str(found)[:12]}, but {run_path}'s best checkpoint is now "
                          f"{expected[:12]}; re-run `hybridmednet export {run_path}` (and `quantize` for int8 files)")
