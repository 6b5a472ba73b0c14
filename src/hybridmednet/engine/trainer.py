"""The training loop: data -> model -> AdamW/cosine -> EMA -> validation -> checkpoints.

Checkpoints are chosen on validation only (the raw weights or their EMA, whichever scores
better on the monitored metric); the test split is never read here. ``last`` holds everything
needed to resume bit-for-bit: weights, EMA, optimizer, schedule position, RNG states and the
early-stopping state, and the data order and augmentations are functions of (seed, epoch).
"""

from __future__ import annotations

import csv
import logging
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from hybridmednet.config.loader import config_differences, save_config
from hybridmednet.config.schema import ExperimentConfig
from hybridmednet.data.dataset import ArrayDataset, EpochSampler, balanced_weights
from hybridmednet.data.leakage import summarize
from hybridmednet.data.pipeline import PreparedData, prepare_data
from hybridmednet.data.preprocess import default_mean_std, normalize_batch
from hybridmednet.data.taxonomy import fine_to_coarse
from hybridmednet.data.transforms import build_train_transform, next_strength, resolve_preset, scaled_extra
from hybridmednet.engine import checkpoint as ckpt
from hybridmednet.engine.ema import build_ema
from hybridmednet.engine.finetune import FreezeSchedule
from hybridmednet.engine.inference import predict_arrays
from hybridmednet.engine.mixing import mix_batch, mixed_loss
from hybridmednet.engine.optim import build_optimizer, build_scheduler, param_groups, steps_per_epoch_schedule
from hybridmednet.engine.run_dir import (
    RunDir,
    adapt_for_run,
    build_model_from_config,
    git_commit,
)
from hybridmednet.engine.runtime import (
    Runtime,
    broadcast_flag,
    make_runtime,
    seed_everything,
    to_channels_last,
)
from hybridmednet.errors import CheckpointError, ConfigError, TrainingDivergedError
from hybridmednet.losses import build_loss
from hybridmednet.losses.task import TaskLoss
from hybridmednet.metrics.classification import (
    multi_label_metrics,
    single_label_metrics,
)
from hybridmednet.output import as_output
from hybridmednet.utils.io import atomic_write, atomic_write_json, atomic_write_text

log = logging.getLogger("hybridmednet")


def setup_logging(run_dir: Path | None, *, quiet: bool = False, is_main: bool = True) -> None:
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    if not is_main:
        log.addHandler(logging.NullHandler())
        return
    if not quiet:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    np_state, (version, py_state, gauss) = np.random.get_state(), random.getstate()
    return ({"rng.torch": torch.get_rng_state()},
            {"python": [version, list(py_state), gauss],
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]})


def _set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))


# what train.monitor may name, by task (validation computes these; "auc" is mean_auc for multi-label)
MONITORS = {False: ("auc", "acc", "balanced_acc", "macro_f1", "loss"), True: ("auc", "mean_auc", "macro_f1", "loss")}


def check_monitor(monitor: str, multilabel: bool) -> None:
    """A monitor the task does not compute would never improve, so no best checkpoint would be written."""
    if monitor not in MONITORS[multilabel]:
        task = "multi-label" if multilabel else "single-label"
        raise ConfigError(f"train.monitor={monitor}: a {task} task does not compute it; choose one of "
                          f"{', '.join(MONITORS[multilabel])}")


def check_risk_groups(risk_groups: dict[str, list[str]] | None, class_names: list[str]) -> None:
    """eval.risk_groups must name classes of the data: checked before training, not at report time."""
    for group, members in (risk_groups or {}).items():
        unknown = [m for m in members if m not in class_names]
        if unknown:
            raise ConfigError(f"eval.risk_groups.{group}: {unknown} are not classes of the data; classes: "
                              f"{', '.join(class_names)}")


# keys that may differ on --resume: where the run lives, a longer schedule, settings read only after training
RESUME_MAY_CHANGE = ("output_dir", "train.epochs", "train.log_every", "tracking", "eval.n_bootstrap", "eval.subgroups",
                     "eval.sensitivity_target", "eval.conformal", "eval.risk_groups", "eval.risk_sensitivity")


def refuse_changed_config(saved: dict, cfg: ExperimentConfig, run_path: Path) -> None:
    """``--resume`` continues the run the checkpoint belongs to; a changed lr, augmentation, split
    or model would silently train a hybrid of two experiments, so it is refused, naming the keys."""
    try:  # the saved config through today's schema, so keys added since (with defaults) are no difference
        saved = ExperimentConfig.model_validate(saved).model_dump(mode="json")
    except ValueError:
        pass  # a config today's schema refuses: compare it as stored (every such key counts as changed)
    changed = [k for k in config_differences(saved, cfg.model_dump(mode="json"))
               if not k.startswith(RESUME_MAY_CHANGE)]
    if cfg.train.epochs < saved["train"]["epochs"]:
        changed.append("train.epochs (only a larger value may be given on --resume)")
    if changed:
        raise ConfigError(f"{run_path}: --resume with a config that differs from the run's in {', '.join(changed)}; "
                          "resume with the run's own config (its config.yaml), or start a new run with --set name=<new>")


class Trainer:
    """Train one experiment. ``stop_after_epoch`` simulates an interruption (used by tests).
    ``on_epoch_end(epoch, val_score)`` is called on rank 0 after each epoch's validation (epoch
    1-based, the monitored score of the better of raw / EMA); it may raise to stop the run (a
    tuner's pruning), after that epoch's checkpoints are written."""

    def __init__(self, cfg: ExperimentConfig, *, resume: bool = False, overwrite: bool = False,
                 device: str | None = None, quiet: bool = False, stop_after_epoch: int | None = None,
                 on_epoch_end=None):
        self.cfg = cfg
        self.on_epoch_end = on_epoch_end
        self.run = RunDir(cfg.run_dir)
        self.resume, self.overwrite, self.quiet = resume, overwrite, quiet
        self.stop_after_epoch = stop_after_epoch
        self.rt: Runtime = make_runtime(cfg.train, device=device)

    # ------------------------------------------------------------------ setup
    def _check_run_dir(self) -> None:
        has_ckpt = (self.run.checkpoints / "last.json").exists()
        if self.resume and not has_ckpt:
            raise CheckpointError(f"{self.run.path}: nothing to resume (no checkpoints/last.json); drop --resume")
        if has_ckpt and not (self.resume or self.overwrite):
            raise CheckpointError(f"{self.run.path}: already holds a trained run; pass --resume to continue it, "
                                  "--overwrite to replace it, or --set name=<new name>")

    def _write_data_summary(self, data: PreparedData) -> None:
        summary = {"source": data.source, "class_names": data.class_names, "multilabel": data.multilabel,
                   "class_counts": data.class_counts(), "n": {k: len(v) for k, v in data.splits.items()},
                   "leakage": data.audit, "skipped_images": len(data.skipped)}
        if data.clinical_spec is not None:  # how many cases carry clinical input: a silent mismatch shows here
            summary["clinical_records"] = {k: int(v.clinical["clinical_present"].sum()) for k, v in data.splits.items()}
            low = [k for k, v in data.splits.items() if len(v) and summary["clinical_records"][k] < 0.5 * len(v)]
            if low:
                log.warning(f"data.clinical: under half of the {low} cases have a metadata record "
                            f"({summary['clinical_records']} of {summary['n']}); check data.clinical.table.id_template")
        atomic_write_json(self.run.path / "data_summary.json", summary)
        if data.skipped:
            atomic_write_text(self.run.path / "skipped_images.txt", "".join(f"{i}\t{r}\n" for i, r in data.skipped))
            log.info(f"skipped {len(data.skipped)} unreadable image(s); listed in {self.run.path / 'skipped_images.txt'}")
        log.info(f"data: {summary['n']} from {data.source}; leakage audit: {summarize(data.audit)}")

    def _loader(self, data: PreparedData) -> DataLoader:
        d, train = self.cfg.data, data.splits["train"]
        transform = build_train_transform(d.augment, d.image_size, d.channels, self.cfg.seed, d.augment_extra,
                                         d.spatial_dims)
        distill = self.cfg.train.distill
        self.dataset = ArrayDataset(train.images, train.targets, transform, seed=self.cfg.seed, extras=train.clinical,
                                    return_index=distill is not None and distill.teacher_view != "augmented")
        weights = balanced_weights(train.targets) if d.balanced_sampling else None
        self.sampler = EpochSampler(len(train), seed=self.cfg.seed, weights=weights,
                                    rank=self.rt.rank, world_size=self.rt.world_size)
        return DataLoader(self.dataset, batch_size=d.batch_size, sampler=self.sampler, num_workers=d.num_workers,
                          drop_last=len(self.sampler) > d.batch_size, persistent_workers=False,
                          worker_init_fn=self.dataset.init_worker if d.num_workers else None)

    def _mean_std(self, model: nn.Module) -> tuple[list[float], list[float]]:
        d = self.cfg.data
        pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
        if self.cfg.model.pretrained and not d.mean and len(pretrained_cfg.get("mean", ())) == d.channels:
            return list(pretrained_cfg["mean"]), list(pretrained_cfg["std"])
        return default_mean_std(d.channels, d.mean, d.std)

    # ------------------------------------------------------------------ main
    def fit(self) -> dict:
        cfg, rt = self.cfg, self.rt
        if rt.is_main:
            self._check_run_dir()
        setup_logging(self.run.path, quiet=self.quiet, is_main=rt.is_main)
        seed_everything(cfg.seed)
        started = time.perf_counter()
        # test is decoded only for the leakage audit and class counts; a resumed run keeps the
        # clinical inputs it was fitted with, whatever the metadata file says now
        resumed_spec = None
        if self.resume:
            last = ckpt.read_meta(self.run.checkpoints, "last")
            refuse_changed_config(last["config"], cfg, self.run.path)
            resumed_spec = last.get("clinical_spec")
        data = prepare_data(cfg.data, clinical_spec=resumed_spec)
        check_monitor(cfg.train.monitor, data.multilabel)
        check_risk_groups(cfg.eval.risk_groups, data.class_names)
        if rt.is_main:
            save_config(cfg, self.run.config_file)
            self._write_data_summary(data)
        self.data = data
        loader = self._loader(data)

        self.fine_to_coarse, self.coarse_names = None, None
        if cfg.data.taxonomy:
            self.fine_to_coarse, self.coarse_names = fine_to_coarse(cfg.data.taxonomy, data.class_names)
        seed_everything(cfg.seed)
        raw = build_model_from_config(cfg, len(data.class_names), num_coarse=len(self.coarse_names or []) or None,
                                      clinical_spec=data.clinical_spec)
        raw, self.masks = adapt_for_run(raw, cfg, {len(data.class_names), len(self.coarse_names or [])}, for_training=True)
        if cfg.train.prune:
            from hybridmednet.engine.compress.prune import sparsity

            log.info(f"pruned ({cfg.train.prune.method}, {cfg.train.prune.amount:.0%}): "
                     f"{sum(p.numel() for p in raw.parameters()) / 1e6:.3f}M parameters, weight sparsity {sparsity(raw):.1%}")
        if cfg.train.qat:
            log.info("quantization-aware fine-tuning: fake int8 on every conv/linear weight and input")
        raw = raw.to(rt.device)
        if rt.channels_last:
            raw = to_channels_last(raw)
        self.mean, self.std = self._mean_std(raw)
        model = raw
        if rt.distributed:
            model = nn.parallel.DistributedDataParallel(raw, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        t = cfg.train
        self.distill = None
        if t.distill is not None:
            from hybridmednet.engine.distill import build_distillation, check_same_teachers

            self.distill = build_distillation(t.distill, raw, data, rt, self.mean, self.std, cfg.data.channels,
                                              cfg.data.eval_batch_size)
            if self.resume:
                check_same_teachers(last.get("distill_teachers"), self.distill.teacher.record(), self.run.path)
            log.info(f"distillation from {len(self.distill.teacher.runs)} teacher run(s) "
                     f"({', '.join(r['model'] for r in self.distill.teacher.record())}): "
                     f"{', '.join(f'{n} x{w:g}' for n, w in zip(self.distill.names, self.distill.weights))}"
                     + (", learned weights" if t.distill.learned_weights else ""))
        self.loss_fn = build_loss(t.loss, multilabel=data.multilabel, label_smoothing=t.label_smoothing,
                                  class_counts=data.class_counts()["train"], **t.loss_kwargs).to(rt.device)
        self.task_loss = TaskLoss(self.loss_fn, self.fine_to_coarse, t.coarse_loss_weight, t.consistency_weight,
                                  learned_aux_weight=t.loss_weighting == "uncertainty").to(rt.device)
        optimizer = build_optimizer(raw, t.lr, t.weight_decay, rt.device, t.backbone_lr_scale, name=t.optimizer,
                                    momentum=t.momentum, nesterov=t.nesterov)
        if self.task_loss.weighting is not None:  # the learned log-variances train with the model, without decay
            optimizer.add_param_group({"params": list(self.task_loss.weighting.parameters()), "weight_decay": 0.0})
        if self.distill is not None:  # adapters, projection heads, learned weights: trained with the student
            for group in param_groups(self.distill, t.weight_decay):
                if group["params"]:
                    optimizer.add_param_group(group)
        self.freeze = None
        if t.freeze_backbone_epochs:
            if rt.distributed:
                raise ConfigError("train.freeze_backbone_epochs is not supported under DDP (requires_grad cannot "
                                  "change after wrapping); use train.backbone_lr_scale instead")
            self.freeze = FreezeSchedule(raw, t.freeze_backbone_epochs)
        steps_per_epoch = -(-len(loader) // t.accumulation_steps)
        scheduler = build_scheduler(optimizer, t.epochs * steps_per_epoch, int(t.warmup_epochs * steps_per_epoch), t.min_lr_ratio,
                                    name=t.schedule, steps_per_epoch=steps_per_epoch, step_epochs=t.step_epochs,
                                    gamma=t.step_gamma, restart_epochs=t.restart_epochs,
                                    plateau_patience=t.plateau_patience, plateau_factor=t.plateau_factor)
        self.per_step_schedule = steps_per_epoch_schedule(scheduler)
        if not self.per_step_schedule and rt.distributed:
            raise ConfigError("train.schedule=plateau is not supported under DDP (only rank 0 sees the val score); "
                              "use cosine, step, cosine_restarts or onecycle")
        ema = build_ema(raw, t.ema_decay) if t.ema else None
        scaler = torch.amp.GradScaler(rt.device.type) if rt.use_scaler else None
        state = {"epoch": 0, "step": 0, "best_score": -float("inf"), "best_epoch": -1, "bad_epochs": 0}
        if cfg.data.adaptive_augment is not None:
            if rt.distributed:
                raise ConfigError("data.adaptive_augment is not supported under DDP (only rank 0 sees the val trend)")
            state |= {"aug_strength": cfg.data.adaptive_augment.start, "last_train_loss": None}
        if self.resume:
            state = self._restore(raw, ema, optimizer, scheduler, scaler)
            log.info(f"resumed from epoch {state['epoch']} (best {t.monitor} {state['best_score']:.4f} at epoch {state['best_epoch']})")
        n_params = sum(p.numel() for p in raw.parameters())
        log.info(f"model {cfg.model.name}: {n_params / 1e6:.2f}M parameters; device {rt.device}, "
                 f"precision {rt.amp_dtype or 'fp32'}, channels_last {rt.channels_last}, world {rt.world_size}, "
                 f"augment {resolve_preset(cfg.data.augment, cfg.data.image_size)}")

        from hybridmednet.engine.tracking import build_tracker

        tracker = build_tracker(cfg, self.run.path) if rt.is_main else None
        throughput = []
        self._diverged: str | None = None
        try:
            for epoch in range(state["epoch"], t.epochs):
                epoch_start = time.perf_counter()
                train_loss, img_s = self._train_epoch(model, raw, loader, optimizer, scheduler, ema, scaler, state, epoch)
                throughput.append(img_s)
                stop = False
                if rt.is_main:
                    row = self._validate_and_select(raw, ema, state, epoch, train_loss, img_s, optimizer)
                    row |= self._distill_row() | {f"weight_{n}": round(w, 4) for n, w in self.task_loss.learned_weights().items()}
                    if "aug_strength" in state:
                        row["aug_strength"] = round(state["aug_strength"], 4)
                        state["aug_strength"] = next_strength(state["aug_strength"], cfg.data.adaptive_augment,
                                                              improved=row["selected"] != "", train_loss=train_loss,
                                                              previous_train_loss=state["last_train_loss"])
                        state["last_train_loss"] = train_loss
                    if self._skipped_steps:
                        row["skipped_steps"] = self._skipped_steps
                    row["epoch_s"] = round(time.perf_counter() - epoch_start, 2)
                    self._append_csv(row)
                    if tracker is not None:
                        tracker.log_epoch(row)
                    state["epoch"] = epoch + 1
                    if not self.per_step_schedule:  # reduce-on-plateau: once per epoch on the val score, saved with it
                        scheduler.step(self._last_score)
                    self._save_last(raw, ema, optimizer, scheduler, scaler, state)
                    if self.on_epoch_end is not None:
                        self.on_epoch_end(epoch + 1, self._last_score)
                    stop = t.early_stopping_patience is not None and state["bad_epochs"] >= t.early_stopping_patience
                    if stop:
                        log.info(f"early stopping: no {t.monitor} improvement on val for {state['bad_epochs']} epochs")
                    if self._diverged is not None:
                        self._stop_diverged(state, epoch)
                        stop = True
                state["epoch"] = epoch + 1
                if broadcast_flag(stop, rt) or (self.stop_after_epoch is not None and epoch + 1 >= self.stop_after_epoch):
                    break
        except BaseException:
            if tracker is not None:  # an interrupted or pruned run is marked so in the tracker
                tracker.abort()
            raise
        summary = {"best_epoch": state["best_epoch"], "best_val_score": state["best_score"], "monitor": t.monitor,
                   "epochs_run": state["epoch"], "wall_s": round(time.perf_counter() - started, 1),
                   "train_img_s_median": float(np.median(throughput)) if throughput else None,
                   "parameters": n_params, "world_size": rt.world_size,
                   "diverged": self._diverged}  # why training stopped early on non-finite values, else None
        if self.distill is not None:
            summary["distill"] = {"teachers": self.distill.teacher.record(), "methods": self.distill.names,
                                  "weights": self.distill.weights, "learned_weights": self.distill.learned()}
        if rt.is_main:
            atomic_write_json(self.run.path / "train_summary.json", summary)
            if tracker is not None:
                tracker.finish(summary)
        if rt.distributed:
            torch.distributed.barrier()
        return summary

    # ------------------------------------------------------------------ epoch
    def _train_epoch(self, model, raw, loader, optimizer, scheduler, ema, scaler, state, epoch) -> tuple[float, float]:
        t, rt = self.cfg.train, self.rt
        self.sampler.set_epoch(epoch)
        if "aug_strength" in state:  # adaptive augmentation: this epoch's strength, rebuilt before seeding
            d = self.cfg.data
            self.dataset.transform = build_train_transform(d.augment, d.image_size, d.channels, self.cfg.seed,
                                                           scaled_extra(d.augment_extra, state["aug_strength"]), d.spatial_dims)
        self.dataset.set_epoch(epoch)
        if hasattr(self.loss_fn, "set_epoch"):  # epoch-dependent losses (LDAM's deferred re-weighting)
            self.loss_fn.set_epoch(epoch)
        model.train()
        if self.freeze is not None:
            self.freeze.on_epoch_start(epoch)  # after train(): frozen BatchNorm stays in eval mode
        accum = t.accumulation_steps
        total_loss, seen, n_batches = 0.0, 0, len(loader)
        self._distill_sums: dict[str, float] = {}
        self._skipped_steps = 0
        bar = None
        if rt.is_main and not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False, dynamic_ncols=True)
        start = time.perf_counter()
        for i, (images, targets, *extras) in enumerate(loader):
            index = extras.pop() if self.dataset.return_index else None
            x = normalize_batch(images.to(rt.device, non_blocking=True), self.mean, self.std, channels_last=rt.channels_last)
            y = targets.to(rt.device, non_blocking=True)
            clinical = {k: v.to(rt.device, non_blocking=True) for k, v in extras[0].items()} if extras else {}
            mixed = None
            if t.mix is not None:
                x, mixed = mix_batch(x, y, t.mix)
            sync = (i + 1) % accum == 0 or i + 1 == n_batches
            if i % accum == 0:  # BatchNorm statistics as they were before this update's forward passes
                buffers = [b.detach().clone() for b in raw.buffers()]
            context = model.no_sync() if rt.distributed and not sync else nullcontext()
            with context:
                with rt.autocast(), (self.distill.capture() if self.distill is not None else nullcontext()):
                    out = as_output(model(x, **clinical))
                aux = raw.aux_losses(out, y) if hasattr(raw, "aux_losses") else None
                if not aux and self.task_loss.weighting is not None:  # known at the first batch
                    raise ConfigError(f"train.loss_weighting=uncertainty weighs the task loss against the model's "
                                      f"auxiliary terms, and model {self.cfg.model.name!r} gives none; use a prototype "
                                      "or MoE head (model.kwargs.head) or train.loss_weighting=fixed")
                loss = mixed_loss(self.task_loss, out, y, mixed, aux)
                if self.distill is not None:
                    with rt.autocast():
                        loss, parts = self.distill(loss, out, x, y, clinical, index)
                    for name, value in parts.items():
                        self._distill_sums[name] = self._distill_sums.get(name, 0.0) + value * len(y)
                scaled = loss / accum
                (scaler.scale(scaled) if scaler else scaled).backward()
            if sync:
                if self._optimizer_step(raw, optimizer, scaler):
                    state["nonfinite_run"] = 0
                    state["updates"] = state.get("updates", 0) + 1
                    if self.masks is not None:  # pruned weights stay zero through fine-tuning
                        self.masks.apply(raw)
                    if ema is not None:
                        ema.update_parameters(raw)
                else:  # a skipped update leaves no trace: the forward passes' BatchNorm statistics are undone too
                    with torch.no_grad():
                        for b, saved in zip(raw.buffers(), buffers):
                            b.copy_(saved)
                    self._skipped_steps += 1
                    state["nonfinite_run"] = state.get("nonfinite_run", 0) + 1
                    log.warning(f"epoch {epoch + 1} step {state['step'] + 1}: non-finite loss or gradients; "
                                f"update skipped ({state['nonfinite_run']} in a row)")
                if self.per_step_schedule:  # the schedule keeps its planned length through skipped updates
                    scheduler.step()
                state["step"] += 1
                if state.get("nonfinite_run", 0) > t.nonfinite_tolerance:
                    self._diverged = f"{state['nonfinite_run']} non-finite steps in a row (train.nonfinite_tolerance={t.nonfinite_tolerance})"
                    break
            value = float(loss.detach())
            if np.isfinite(value):  # a skipped batch's NaN would poison the epoch's mean loss
                total_loss += value * len(y)
                seen += len(y)
            if bar is not None:
                bar.update(1)
                if i % t.log_every == 0:
                    bar.set_postfix(loss=f"{total_loss / seen:.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        self._distill_seen = max(seen, 1)
        return total_loss / max(seen, 1), seen * rt.world_size / max(elapsed, 1e-9)

    def _distill_row(self) -> dict:
        """The epoch's mean distillation terms (and learned weights) for metrics.csv."""
        if self.distill is None:
            return {}
        row = {f"train_{n}": round(v / self._distill_seen, 5) for n, v in self._distill_sums.items()}
        return row | {f"weight_{n}": round(w, 4) for n, w in self.distill.learned().items()}

    def _stop_diverged(self, state: dict, epoch: int) -> None:
        """Stop a run whose training diverged; its val-chosen checkpoint (from before) stands."""
        advice = "lower train.lr, set train.grad_clip (e.g. 1.0), or train with train.precision=fp32"
        if state["best_epoch"] < 1 or not state.get("updates"):  # nothing trained worth keeping
            raise TrainingDivergedError(f"{self.run.path}: training diverged in epoch {epoch + 1} ({self._diverged}) "
                                        f"before any val-chosen checkpoint of a trained model was kept; {advice}")
        log.warning(f"training diverged in epoch {epoch + 1} ({self._diverged}); stopping. The val-chosen checkpoint "
                    f"of epoch {state['best_epoch']} is kept; to train further, {advice}")

    def _optimizer_step(self, raw, optimizer, scaler) -> bool:
        """One update; False (and no update) when the gradients are not finite. Under DDP every
        rank holds the same all-reduced gradients, so all ranks skip together."""
        clip = self.cfg.train.grad_clip
        if self.rt.distributed:  # parameters outside DDP's module: average their grads here
            outside = [*(self.distill.parameters() if self.distill is not None else []),
                       *(self.task_loss.weighting.parameters() if self.task_loss.weighting is not None else [])]
            for p in outside:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.rt.world_size
        if scaler is not None:
            if clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(raw.parameters(), clip)
            scaler.step(optimizer)  # fp16: the scaler skips non-finite steps itself and rescales
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            return True
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = nn.utils.clip_grad_norm_(raw.parameters(), clip) if clip else nn.utils.get_total_norm(grads)
        finite = bool(torch.isfinite(norm))  # one NaN or inf gradient makes the norm non-finite
        if finite:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return finite

    # ------------------------------------------------------------------ validation
    def _score(self, model) -> tuple[float, dict]:
        val, data = self.data.splits["val"], self.data
        probs, loss = predict_arrays(model, val.images, mean=self.mean, std=self.std, runtime=self.rt,
                                     multilabel=data.multilabel, batch_size=self.cfg.data.eval_batch_size,
                                     targets=val.targets, loss_fn=self.loss_fn, extras=val.clinical)
        if not np.isfinite(probs).all():  # the weights themselves went non-finite: nothing to score
            self._diverged = "non-finite val probabilities"
            return -float("inf"), {"loss": loss}
        if data.multilabel:
            metrics = multi_label_metrics(probs, val.targets, data.class_names)
            metrics["auc"] = metrics["mean_auc"]
        else:
            metrics = single_label_metrics(probs, val.targets, data.class_names)
        metrics["loss"] = loss
        monitor = self.cfg.train.monitor
        value = metrics.get("mean_auc" if monitor == "mean_auc" else monitor)
        score = -value if monitor == "loss" else value
        return (-float("inf") if score is None or np.isnan(score) else float(score)), metrics

    def _validate_and_select(self, raw, ema, state, epoch, train_loss, img_s, optimizer) -> dict:
        use_ema = self.cfg.eval.use_ema
        candidates = []
        if use_ema is not True or ema is None:
            candidates.append(("raw", raw))
        if ema is not None and use_ema is not False:
            candidates.append(("ema", ema.module))
        scored = [(name, module, *self._score(module)) for name, module in candidates]
        name, module, score, metrics = max(scored, key=lambda s: s[2])
        self._last_score = score
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0)
            self._save_best(module, name, metrics, epoch + 1)
        else:
            state["bad_epochs"] += 1
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": round(train_loss, 5),
               "train_img_s": round(img_s, 1)}
        for variant, _, _, m in scored:
            for key in ("loss", "acc", "balanced_acc", "macro_f1", "auc"):
                if key in m and m[key] is not None:
                    row[f"val_{key}" if variant == "raw" else f"val_{variant}_{key}"] = round(float(m[key]), 5)
        row["selected"] = name if improved else ""
        log.info(f"epoch {epoch + 1}/{self.cfg.train.epochs} loss {train_loss:.4f} "
                 + " ".join(f"{v}:{self.cfg.train.monitor}={s:.4f}" for v, _, s, _ in scored)
                 + f" acc={metrics.get('acc', float('nan')):.4f} {img_s:.0f} img/s" + (" *" if improved else ""))
        return row

    def _append_csv(self, row: dict) -> None:
        path = self.run.path / "metrics.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < row["epoch"]]  # drop rows a resume replays
        rows.append(row)
        fields = list(dict.fromkeys(k for r in rows for k in r))

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(path, write)

    # ------------------------------------------------------------------ checkpoints
    def _meta(self) -> dict:
        d = self.cfg.data
        return {"config": self.cfg.model_dump(mode="json"), "class_names": self.data.class_names,
                "coarse_names": self.coarse_names, "fine_to_coarse": self.fine_to_coarse,
                "clinical_spec": self.data.clinical_spec,
                "multilabel": self.data.multilabel, "git_commit": git_commit(), "torch": torch.__version__,
                "preprocessing": {"image_size": d.image_size, "channels": d.channels, "resize": d.resize,
                                  "spatial_dims": d.spatial_dims, "volume": d.volume.model_dump(mode="json"),
                                  "mean": self.mean, "std": self.std, "input": "uint8 RGB/grey, /255, (x-mean)/std"},
                "distill_teachers": self.distill.teacher.record() if self.distill is not None else None}

    def _save_best(self, module: nn.Module, variant: str, metrics: dict, epoch: int) -> None:
        meta = dict(self._meta(), variant=variant, val_metrics={k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
        ckpt.save_checkpoint(self.run.checkpoints, "best", module.state_dict(), meta, epoch)

    def _save_last(self, raw, ema, optimizer, scheduler, scaler, state) -> None:
        tensors = {f"model.{k}": v for k, v in raw.state_dict().items()}
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        if self.distill is not None:
            tensors.update({f"distill.{k}": v for k, v in self.distill.state_dict().items()})
        if self.task_loss.weighting is not None:
            tensors.update({f"weighting.{k}": v for k, v in self.task_loss.weighting.state_dict().items()})
        optim_tensors, optim_meta = ckpt.flatten_optimizer(optimizer.state_dict())
        rng_tensors, rng_meta = _rng_state()
        tensors.update(optim_tensors)
        tensors.update(rng_tensors)
        meta = dict(self._meta(), state=state, optimizer=optim_meta, scheduler=scheduler.state_dict(), rng=rng_meta,
                    scaler=scaler.state_dict() if scaler is not None else None)
        ckpt.save_checkpoint(self.run.checkpoints, "last", tensors, meta, state["epoch"])

    def _restore(self, raw, ema, optimizer, scheduler, scaler) -> dict:
        tensors, meta = ckpt.load_checkpoint(self.run.checkpoints, "last")

        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        raw.load_state_dict(part("model."))
        if ema is not None:
            ema.load_state_dict(part("ema."))
        if self.distill is not None:
            self.distill.load_state_dict(part("distill."))
        if self.task_loss.weighting is not None:
            self.task_loss.weighting.load_state_dict(part("weighting."))
        optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["optimizer"]))
        ckpt.match_parameter_layout(optimizer)
        scheduler.load_state_dict(meta["scheduler"])
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        _set_rng_state(tensors, meta["rng"])
        return dict(meta["state"])


def train(cfg: ExperimentConfig, **kwargs) -> dict:
    return Trainer(cfg, **kwargs).fit()


def read_metrics_csv(run_dir: Path) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


__all__ = ["Trainer", "read_metrics_csv", "train"]
