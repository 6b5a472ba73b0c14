"""A run directory ``runs/<name>/`` and how to rebuild a trained model from it.

Layout: ``config.yaml`` (resolved), ``train.log``, ``metrics.csv`` (per epoch),
``data_summary.json`` (class counts, leakage audit), ``skipped_images.txt``,
``checkpoints/{best,last}.json`` + safetensors, ``train_summary.json``, ``metrics.json``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from hybridmednet.config.loader import load_config
from hybridmednet.config.schema import ExperimentConfig
from hybridmednet.errors import CheckpointError


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    def checkpoint_sha256(self, tag: str = "best") -> str:
        """The sha256 of the weights a checkpoint tag names (read from its JSON, without loading)."""
        from hybridmednet.engine.checkpoint import read_meta

        return read_meta(self.checkpoints, tag)["weights_sha256"]

    def config(self) -> ExperimentConfig:
        if not self.config_file.exists():
            raise CheckpointError(f"{self.path}: not a run directory (no config.yaml); pass runs/<name>")
        return load_config(self.config_file)


def recorded_checkpoint(record: dict | None) -> str | None:
    """The checkpoint sha256 a derived record (metrics entry, calibration, export metadata) names."""
    record = record or {}
    return record.get("checkpoint_sha256") or (record.get("checkpoint") or {}).get("checkpoint_sha256")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_model_from_config(cfg: ExperimentConfig, num_classes: int, *, pretrained: bool | None = None,
                            num_coarse: int | None = None, clinical_spec: dict | None = None) -> nn.Module:
    """``num_coarse`` (from a taxonomy) turns on a model's coarse head; models without one refuse it.
    A multimodal config (``model.multimodal``) wraps the image model with the clinical encoder and
    fusion; ``clinical_spec`` is the clinical inputs' fitted description (data or checkpoint)."""
    from hybridmednet.errors import ConfigError
    from hybridmednet.models import create_model

    m = cfg.model
    if m.multimodal is not None:
        from hybridmednet.models.multimodal import build_multimodal

        if num_coarse:
            raise ConfigError("data.taxonomy (coarse head) is not supported with model.multimodal; remove one of them")
        if clinical_spec is None:
            raise ConfigError("model.multimodal: the clinical inputs' spec is missing (data.clinical, or the checkpoint's)")
        views = m.multimodal.views
        size = views.size if views else cfg.data.image_size  # with views, the backbone reads views, not the input
        image_cfg = cfg.model_copy(update={"model": m.model_copy(update={"multimodal": None}),
                                           "data": cfg.data.model_copy(update={"image_size": size})})
        image = None if m.multimodal.fusion == "clinical_only" else build_model_from_config(
            image_cfg, num_classes, pretrained=pretrained)
        lesion = (build_model_from_config(image_cfg, num_classes, pretrained=pretrained)
                  if views and views.strategy in ("global_local", "dual_expert") else None)
        return build_multimodal(image, num_classes, clinical_spec, m.multimodal, image_size=size,
                                in_chans=cfg.data.channels, drop_rate=m.drop_rate, lesion_model=lesion)
    use_pretrained = m.pretrained if pretrained is None else pretrained
    extra = {"num_coarse": num_coarse} if num_coarse else {}
    try:
        return create_model(m.name, num_classes, cfg.data.channels, pretrained=use_pretrained,
                            pretrained_file=m.pretrained_file if use_pretrained else None, drop_rate=m.drop_rate,
                            small_stem=m.small_stem, image_size=cfg.data.image_size, **m.kwargs, **extra)
    except TypeError as exc:
        if num_coarse and "num_coarse" in str(exc):
            raise ConfigError(f"data.taxonomy needs a model with a coarse head (hybridmednet_*); {m.name!r} has none") from None
        raise


def adapt_for_run(model: nn.Module, cfg: ExperimentConfig, num_outputs: set[int], *, for_training: bool):
    """Apply what a run does to a freshly built model: start from ``model.init_checkpoint``, prune
    (``train.prune``), add fake quantization (``train.qat``). Returns ``(model, masks)``: the zero
    masks a magnitude-pruned run re-applies after every optimizer step (training only).

    Rebuilding a trained run (``for_training=False``) needs only the architecture, which the run's
    own config determines: a channel-pruned run is re-pruned at random initialisation (the channel
    counts per layer do not depend on the weights), so it loads without its starting run."""
    masks = None
    if cfg.model.init_checkpoint or cfg.train.prune:
        from hybridmednet.engine.compress.prune import prepare_model

        model, masks = prepare_model(model, cfg, num_outputs, for_training=for_training)
    if cfg.train.qat:
        from hybridmednet.engine.compress.qat import enable_fake_quant

        enable_fake_quant(model)
    return model, masks


def strip_training_transforms(model: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    """After loading a QAT run's weights, remove the fake quantization (a plain model remains)."""
    if cfg.train.qat:
        from hybridmednet.engine.compress.qat import strip_fake_quant

        strip_fake_quant(model)
    return model


def refuse_multimodal(run_path: str | Path, what: str) -> None:
    """Commands that feed images only (explain, quantize, benchmark) say so for multimodal runs."""
    from hybridmednet.errors import DataError

    run = RunDir(Path(run_path))
    if run.config_file.exists() and run.config().model.multimodal is not None:
        raise DataError(f"{run.path}: a multimodal (image + clinical) run; `{what}` supports image-only models. "
                        "Use evaluate / predict / export, which pass the clinical inputs")
