"""What an exported model carries besides its weights: how to preprocess an image (size, resize
mode, channels, mean/std), the class names, single- or multi-label, the checkpoint it came from
and, when ``hybridmednet report`` calibrated that checkpoint, its temperature and abstention
threshold. Stored as ONNX ``metadata_props`` (TorchScript: an extra file), all under one JSON key
so a reader needs nothing but ``json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hybridmednet.errors import DataError

KEY = "hybridmednet"
FORMAT_VERSION = 1
PREPROCESSING_KEYS = ("image_size", "resize", "channels", "mean", "std")
VOLUME_KEYS = ("spatial_dims", "volume")  # 3D runs: the grid and intensity options (absent before 3D existed)


@dataclass(frozen=True)
class ExportMetadata:
    class_names: list[str]
    multilabel: bool
    preprocessing: dict
    model_name: str
    checkpoint_sha256: str
    temperature: float | None = None
    abstain_threshold: float | None = None
    input_name: str = "input"
    output_name: str = "logits"
    format_version: int = FORMAT_VERSION
    # Multimodal models: the clinical inputs' fitted spec (columns, vocabulary / encoder, feature
    # statistics) and the extra graph inputs after the image, in order.
    clinical_spec: dict | None = None
    clinical_inputs: list[str] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str | Path) -> ExportMetadata:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}: metadata key {KEY!r} is not valid JSON ({exc})") from None
        missing = [k for k in ("class_names", "multilabel", "preprocessing", "model_name", "checkpoint_sha256")
                   if k not in data]
        missing += [f"preprocessing.{k}" for k in PREPROCESSING_KEYS if k not in data.get("preprocessing", {})]
        if missing:
            raise DataError(f"{source}: metadata lacks {', '.join(missing)}; re-export with `hybridmednet export RUN`")
        if data.get("format_version", 1) > FORMAT_VERSION:
            raise DataError(f"{source}: metadata format {data['format_version']} is newer than this hybridmednet "
                            f"understands ({FORMAT_VERSION}); upgrade hybridmednet")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def build_metadata(meta: dict, model_name: str, calibration: dict | None) -> ExportMetadata:
    """From a checkpoint's JSON (``meta``) and, optionally, the run's matching calibration."""
    prep = {k: meta["preprocessing"][k] for k in PREPROCESSING_KEYS}
    if meta["preprocessing"].get("spatial_dims", 2) == 3:
        prep |= {k: meta["preprocessing"][k] for k in VOLUME_KEYS}
    return ExportMetadata(class_names=list(meta["class_names"]), multilabel=bool(meta["multilabel"]), preprocessing=prep,
                          model_name=model_name, checkpoint_sha256=meta["weights_sha256"],
                          temperature=calibration["temperature"] if calibration else None,
                          abstain_threshold=calibration["abstain_threshold"] if calibration else None,
                          clinical_spec=meta.get("clinical_spec"), clinical_inputs=_clinical_inputs(meta))


def _clinical_inputs(meta: dict) -> list[str] | None:
    if not meta.get("clinical_spec"):
        return None
    from hybridmednet.models.multimodal import clinical_input_names

    return clinical_input_names(meta["clinical_spec"])


def read_onnx_metadata(path: str | Path, props: dict[str, str]) -> ExportMetadata:
    """``props``: the session's custom metadata map (``session.get_modelmeta().custom_metadata_map``)."""
    if KEY not in props:
        raise DataError(f"{path}: no {KEY!r} metadata (keys: {sorted(props) or 'none'}); this ONNX file was not "
                        "written by `hybridmednet export`, so its preprocessing and classes are unknown")
    return ExportMetadata.from_json(props[KEY], path)
