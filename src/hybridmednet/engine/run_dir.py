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

    def config(self) -> ExperimentConfig:
        if not self.config_file.exists():
            raise CheckpointError(f"{self.path}: not a run directory (no config.yaml); pass runs/<name>")
        return load_config(self.config_file)


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
        image = None if m.multimodal.fusion == "clinical_only" else build_model_from_config(
            cfg.model_copy(update={"model": m.model_copy(update={"multimodal": None})}), num_classes, pretrained=pretrained)
        return build_multimodal(image, num_classes, clinical_spec, m.multimodal, image_size=cfg.data.image_size,
                                in_chans=cfg.data.channels, drop_rate=m.drop_rate)
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
    masks a magnitude-pruned run re-applies after every optimizer step (training only)."""
    masks = None
    if cfg.model.init_checkpoint or cfg.train.prune:
        from hybridmednet.deploy.prune import prepare_model

        model, masks = prepare_model(model, cfg, num_outputs, for_training=for_training)
    if cfg.train.qat:
        from hybridmednet.deploy.qat import enable_fake_quant

        enable_fake_quant(model)
    return model, masks


def refuse_multimodal(run_path: str | Path, what: str) -> None:
    """Commands that feed images only (explain, quantize, benchmark) say so for multimodal runs."""
    from hybridmednet.errors import DataError

    run = RunDir(Path(run_path))
    if run.config_file.exists() and run.config().model.multimodal is not None:
        raise DataError(f"{run.path}: a multimodal (image + clinical) run; `{what}` supports image-only models. "
                        "Use evaluate / predict / export, which pass the clinical inputs")


def load_trained_model(run: RunDir | Path | str, tag: str = "best") -> tuple[nn.Module, dict, ExperimentConfig]:
    """The model as selected on validation, its checkpoint metadata, and the run's config."""
    from hybridmednet.engine.checkpoint import load_checkpoint

    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    cfg = run.config()
    tensors, meta = load_checkpoint(run.checkpoints, tag)
    num_coarse = len(meta["coarse_names"]) if meta.get("coarse_names") else None
    model = build_model_from_config(cfg, len(meta["class_names"]), pretrained=False, num_coarse=num_coarse,
                                    clinical_spec=meta.get("clinical_spec"))
    # A channel-pruned run's architecture is rebuilt from its starting run; a QAT run's checkpoints
    # hold the fake-quant parametrization, stripped after loading (the result is the plain model).
    model, _ = adapt_for_run(model, cfg, {len(meta["class_names"]), num_coarse or 0}, for_training=False)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{run.checkpoints / meta['weights']}: does not fit model {cfg.model.name!r} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if cfg.train.qat:
        from hybridmednet.deploy.qat import strip_fake_quant

        strip_fake_quant(model)
    model.eval()
    return model, meta, cfg
