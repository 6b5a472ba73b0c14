"""Knowledge distillation inside the ordinary training loop (``train.distill``).

The teacher is one trained run (its val-selected checkpoint) or a seed ensemble of runs, loaded
through :class:`~hybridmednet.engine.run.Run`, frozen and in eval mode. It reads the student's
*augmented* batch (same flips and crops), resized to its own image size and renormalised with its
own mean/std, so both see the same view of each case; no teacher outputs are cached. The
distillers (``losses/distill``) read logits, named feature maps (forward hooks on the layers
their options name) and a pooled embedding (the model's ``ModelOutput.features`` where it has
one, else the global average of its last spatial feature map).

The result is an ordinary run: its checkpoints hold the student only, so evaluate, report,
export, quantize and serve work unchanged. The adapters and projection heads some distillers
learn live beside the student (in ``last`` for exact resume, never in ``best``). Each teacher's
checkpoint sha256 is recorded in the run's checkpoints; resuming with a changed teacher is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hybridmednet.config.schema import DistillConfig
from hybridmednet.engine.taps import FeatureTaps, last_spatial_layer, pooled, probe, spatial_stages
from hybridmednet.errors import CheckpointError, ConfigError, DataError
from hybridmednet.losses.distill import StudentView, TeacherView, build_distiller, distiller_needs
from hybridmednet.losses.weighting import UncertaintyWeightedLoss
from hybridmednet.output import ModelOutput, as_output


def _as_list(layers: str | list[str]) -> list[str]:
    return layers if isinstance(layers, list) else [layers]


def tap_shapes(model: nn.Module, example: torch.Tensor, names: set[str], extras: dict | None, where: str) -> dict:
    """Each named layer's output shape and the embedding size, from one forward pass."""
    taps = FeatureTaps(model, names, where)
    try:
        with taps.capture() as outputs:
            out = probe(model, example, extras)
        shapes = {n: tuple(v.shape) for n, v in outputs.items()}
    finally:
        taps.remove()
    return {"layers": shapes, "has_embedding": out.features is not None,
            "embedding_dim": out.features.shape[1] if out.features is not None else None}


class Teacher:
    """Frozen teacher run(s) as one callable: ``teacher(x_student) -> TeacherView``."""

    def __init__(self, cfg: DistillConfig, device: torch.device, *, class_names: list[str], channels: int,
                 clinical_spec: dict | None, multilabel: bool):
        from hybridmednet.engine.run import Run

        if multilabel:
            raise ConfigError("train.distill: distillation of multi-label data is not supported (the distillers "
                              "compare softmax distributions); drop train.distill")
        self.runs = []
        for path in cfg.teachers:
            if not (Path(path) / "checkpoints" / f"{cfg.checkpoint}.json").exists():
                raise ConfigError(f"train.distill.teacher: {path} holds no trained run (no checkpoints/"
                                  f"{cfg.checkpoint}.json); train the teacher first")
            run = Run.load(path, tag=cfg.checkpoint, device=str(device))
            if run.class_names != class_names:
                raise ConfigError(f"train.distill.teacher {path}: classes {run.class_names} differ from the "
                                  f"student's {class_names}")
            if run.preprocessing["channels"] != channels:
                raise ConfigError(f"train.distill.teacher {path}: reads {run.preprocessing['channels']}-channel images, "
                                  f"the student {channels}; set data.channels alike")
            if run.clinical_spec is not None and run.clinical_spec != clinical_spec:
                raise ConfigError(f"train.distill.teacher {path}: a multimodal teacher needs the student's own "
                                  "clinical inputs (data.clinical); they differ")
            for p in run.model.parameters():
                p.requires_grad_(False)
            self.runs.append(run)
        self.uses_clinical = self.runs[0].clinical_spec is not None
        self.taps: FeatureTaps | None = None

    @property
    def model(self) -> nn.Module:
        """The first member: its feature maps and embedding are the ensemble's."""
        return self.runs[0].model

    def view_of(self, run, x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
        """The student's normalised batch as this teacher's input: same pixels, its size and mean/std."""
        p = run.preprocessing
        if list(p["mean"]) != list(mean) or list(p["std"]) != list(std):
            shape = (1, -1, 1, 1)
            raw = x * x.new_tensor(std).view(shape) + x.new_tensor(mean).view(shape)
            x = (raw - x.new_tensor(p["mean"]).view(shape)) / x.new_tensor(p["std"]).view(shape)
        size = int(p["image_size"])
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, mean, std, clinical: dict) -> tuple[torch.Tensor, ModelOutput, dict]:
        logits, first, features = [], None, {}
        for i, run in enumerate(self.runs):
            extras = clinical if self.uses_clinical else {}
            if i == 0 and self.taps is not None:
                with self.taps.capture() as captured:
                    out = as_output(run.model(self.view_of(run, x, mean, std), **extras))
                features = dict(captured)
            else:
                out = as_output(run.model(self.view_of(run, x, mean, std), **extras))
            first = out if first is None else first
            logits.append(out.logits)
        return torch.stack(logits), first, features

    def record(self) -> list[dict]:
        return [{"path": str(r.path), "checkpoint_sha256": r.checkpoint_sha256, "model": r.config.model.name,
                 "image_size": r.preprocessing["image_size"]} for r in self.runs]


def check_same_teachers(saved: list[dict] | None, current: list[dict], run_path: Path) -> None:
    """``--resume`` with a teacher retrained (or replaced) since the run started would mix two
    experiments, exactly like a changed config."""
    before = [t["checkpoint_sha256"] for t in saved or []]
    now = [t["checkpoint_sha256"] for t in current]
    if before != now:
        raise CheckpointError(f"{run_path}: the distillation teacher changed since this run started (checkpoint sha256 "
                              f"{before} -> {now}); resume needs the same teacher, or start a new run")


class Distillation(nn.Module):
    """Task loss + distillers, with fixed weights or learned (uncertainty) weighting.

    With ``learned_weights`` each term is first scaled by its configured weight (so terms of very
    different sizes start comparable), then the learned log-variances balance them."""

    def __init__(self, cfg: DistillConfig, student: nn.Module, teacher: Teacher, example: torch.Tensor,
                 example_extras: dict | None, mean: list[float], std: list[float]):
        super().__init__()
        self.teacher, self.mean, self.std, self.task_weight = teacher, mean, std, cfg.task_weight
        t_example = teacher.view_of(teacher.runs[0], example, mean, std)
        t_extras = example_extras if teacher.uses_clinical else None
        defaults = {}
        plans, names = [], []
        for i, method in enumerate(cfg.methods):
            where = f"train.distill.methods[{i}] ({method.name})"
            needs = distiller_needs(method.name)
            options = dict(method.options)
            layers = {}
            if "features" in needs or "embedding" in needs:
                for side, model, ex, extras in (("student", student, example, example_extras),
                                                ("teacher", teacher.model, t_example, t_extras)):
                    if side not in defaults:  # one probe per model, only when a default is needed
                        defaults[side] = last_spatial_layer(model, ex, extras)
                    if "features" in needs:
                        options[f"{side}_layer"] = options.get(f"{side}_layer") or defaults[side]
                        layers[side] = options[f"{side}_layer"]
            if "stages" in needs:
                for side, model, ex, extras in (("student", student, example, example_extras),
                                                ("teacher", teacher.model, t_example, t_extras)):
                    named = options.get(f"{side}_layers")
                    options[f"{side}_layers"] = list(named or spatial_stages(model, ex, extras, options.get("levels", 3)))
                    layers[side] = options[f"{side}_layers"]
                if len(layers["student"]) != len(layers["teacher"]):
                    raise ConfigError(f"{where}: {len(layers['student'])} student layers and {len(layers['teacher'])} "
                                      "teacher layers; they are paired level by level, so name as many of each")
            plans.append((method, options, needs, layers, where))
            names.append(method.name if method.name not in names else f"{method.name}_{i}")
        self.names, self.weights = names, [m.weight for m, *_ in plans]
        student_layers = {n for p in plans if "student" in p[3] for n in _as_list(p[3]["student"])}
        teacher_layers = {n for p in plans if "teacher" in p[3] for n in _as_list(p[3]["teacher"])}
        self.embedding_layers = {"student": None, "teacher": None}
        if any("embedding" in p[2] for p in plans):
            self.embedding_layers = {"student": defaults.get("student"), "teacher": defaults.get("teacher")}
        s_info = tap_shapes(student, example, student_layers | {self.embedding_layers["student"]} - {None},
                            example_extras, "train.distill student_layer")
        t_info = tap_shapes(teacher.model, t_example, teacher_layers | {self.embedding_layers["teacher"]} - {None},
                            t_extras, "train.distill teacher_layer")
        if s_info["has_embedding"]:
            self.embedding_layers["student"] = None  # the model's own pooled embedding
        if t_info["has_embedding"]:
            self.embedding_layers["teacher"] = None

        def embedding_dim(info, layer):
            return info["embedding_dim"] if layer is None else info["layers"][layer][1]

        terms = []
        for method, options, needs, layers, where in plans:
            shapes = {"student_dim": embedding_dim(s_info, self.embedding_layers["student"]),
                      "teacher_dim": embedding_dim(t_info, self.embedding_layers["teacher"])}
            if layers:  # one channel count per layer for a distiller of several stages
                shapes |= {f"{side}_channels": [info["layers"][n][1] for n in layers[side]] if "stages" in needs
                           else info["layers"][layers[side]][1]
                           for side, info in (("student", s_info), ("teacher", t_info))}
            terms.append(build_distiller(method.name, options, shapes, where))
        self.terms = nn.ModuleList(terms)
        self.weighting = UncertaintyWeightedLoss(["task", *names]) if cfg.learned_weights else None
        self.student_taps = FeatureTaps(student, student_layers | {self.embedding_layers["student"]} - {None}, "student")
        teacher.taps = FeatureTaps(teacher.model, teacher_layers | {self.embedding_layers["teacher"]} - {None}, "teacher")

    def capture(self):
        """Wrap the student's training forward pass: its tapped feature maps are kept for the loss."""
        return self.student_taps.capture()

    def _embedding(self, out: ModelOutput, features: dict, side: str) -> torch.Tensor | None:
        layer = self.embedding_layers[side]
        if layer is None:
            return out.features
        return pooled(features[layer])

    def cache_clean(self, images, extras, runtime, batch_size: int) -> None:
        """``teacher_view: clean``: the teacher's logits and embedding on every (un-augmented)
        training image, computed once; :meth:`forward` then looks them up by sample index."""
        from hybridmednet.engine.inference import batches

        logits, embeddings = [], []
        extras = extras if self.teacher.uses_clinical else None
        for _, x, clinical in batches(images, self.mean, self.std, runtime, batch_size, extras):
            with runtime.autocast():
                member_logits, out, features = self.teacher(x, self.mean, self.std, clinical)
            logits.append(member_logits.float())
            emb = self._embedding(out, features, "teacher")
            embeddings.append(emb.float() if emb is not None else None)
        self._keep(torch.cat(logits, dim=1), embeddings)

    def cache_own_images(self, data, ids_cfg, runtime, batch_size: int) -> None:
        """``teacher_view: own_images``: each member reads its own data's images of the student's
        training cases (its size, resize and normalisation), computed once, in the student's order."""
        from hybridmednet.engine.inference import batches

        logits, embeddings = [], []
        for i, run in enumerate(self.teacher.runs):
            images = own_images(run, ids_cfg, data)
            member, member_emb = [], []
            p = run.preprocessing
            for _, x, _ in batches(images, p["mean"], p["std"], runtime, batch_size, None):
                with runtime.autocast(), torch.no_grad():
                    if i == 0 and self.teacher.taps is not None:
                        with self.teacher.taps.capture() as captured:
                            out = as_output(run.model(x))
                        emb = self._embedding(out, dict(captured), "teacher")
                        member_emb.append(emb.float() if emb is not None else None)
                    else:
                        out = as_output(run.model(x))
                member.append(out.logits.float())
            logits.append(torch.cat(member))
            embeddings = embeddings or member_emb
        self._keep(torch.stack(logits), embeddings)

    def _keep(self, member_logits: torch.Tensor, embeddings: list) -> None:
        """The cached teacher outputs: ``(M, N, C)`` member logits and the ``(N, D)`` embedding."""
        self.register_buffer("cached_logits", member_logits, persistent=False)
        self.cached_embedding = torch.cat(embeddings) if embeddings and embeddings[0] is not None else None

    def forward(self, task_loss: torch.Tensor, student_out: ModelOutput, x: torch.Tensor, targets: torch.Tensor,
                clinical: dict, index: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        s_features = dict(self.student_taps.outputs)
        student = StudentView(student_out.logits, s_features, self._embedding(student_out, s_features, "student"))
        if index is not None:  # teacher_view: clean or own_images
            index = index.to(self.cached_logits.device)
            embedding = self.cached_embedding[index] if self.cached_embedding is not None else None
            teacher = TeacherView(self.cached_logits[:, index], {}, embedding)
        else:
            member_logits, t_out, t_features = self.teacher(x, self.mean, self.std, clinical)
            teacher = TeacherView(member_logits, t_features, self._embedding(t_out, t_features, "teacher"))
        parts = {name: term(student, teacher, targets) for name, term in zip(self.names, self.terms)}
        if self.weighting is not None:
            scaled = {"task": task_loss * self.task_weight} | {n: w * parts[n] for n, w in zip(self.names, self.weights)}
            total, _ = self.weighting(scaled)
        else:
            total = self.task_weight * task_loss + sum(w * parts[n] for n, w in zip(self.names, self.weights))
        return total, {n: float(v.detach()) for n, v in parts.items()}

    def learned(self) -> dict[str, float]:
        """The current learned weights exp(-s) per term (empty with fixed weights)."""
        if self.weighting is None:
            return {}
        return {n: float(torch.exp(-s)) for n, s in zip(self.weighting.names, self.weighting.log_vars.detach())}


def own_images(run, ids_cfg, data) -> np.ndarray:
    """The teacher run's own images (its data config, size and resize) of the student's training
    cases, in the student's order. Refused: a student training case the teacher's data lacks, and
    a teacher trained on any of the student's val/test cases (its soft labels would carry them into
    the student's training)."""
    from hybridmednet.data.metadata import load_metadata_rows

    def teacher_ids(ids: list[str]) -> list[str | None]:
        if ids_cfg is None:
            return list(ids)
        return load_metadata_rows(ids_cfg, list(ids), [ids_cfg.column], key="train.distill.teacher_ids")[ids_cfg.column]

    own = run.prepare(("train", "val", "test"))
    where = {case: (name, k) for name, part in own.splits.items() for k, case in enumerate(part.ids)}
    train = data.splits["train"]
    held_ids = [i for name in ("val", "test") if name in data.splits for i in data.splits[name].ids]
    mapped = teacher_ids(list(train.ids) + held_ids)  # one read of the id map for every split
    wanted, held_out = mapped[:len(train.ids)], mapped[len(train.ids):]
    missing = [s for s, t in zip(train.ids, wanted) if t not in where]
    if missing:
        raise DataError(f"train.distill (teacher_view: own_images): {len(missing)} of the student's {len(wanted)} "
                        f"training cases have no image in the teacher's data ({own.source}), e.g. {missing[:3]}; "
                        "check train.distill.teacher_ids (or the teacher's data.max_samples_per_split)")
    leaked = sorted({t for t in held_out if t in where and where[t][0] == "train"})
    if leaked:
        raise ConfigError(f"train.distill.teacher {run.path}: trained on {len(leaked)} of the student's val/test cases "
                          f"(e.g. {leaked[:3]}); its soft labels would carry them into the student's training. Use a "
                          "teacher whose split keeps the student's val and test cases out of its training split")
    return np.stack([own.splits[name].images[k] for name, k in (where[t] for t in wanted)])


def build_distillation(cfg: DistillConfig, student: nn.Module, data, runtime, mean: list[float],
                       std: list[float], channels: int, batch_size: int = 256) -> Distillation:
    """The teacher and the distillers for this student, sized by one probe forward pass."""
    from hybridmednet.data.preprocess import normalize_batch

    if cfg.teacher_view != "augmented":
        spatial = [m.name for m in cfg.methods if {"features", "stages"} & set(distiller_needs(m.name))]
        if spatial:
            raise ConfigError(f"train.distill: {', '.join(spatial)} compare feature maps of the view both models see; "
                              f"with teacher_view: {cfg.teacher_view} the teacher never sees the student's augmented "
                              "view. Use teacher_view: augmented")
    teacher = Teacher(cfg, runtime.device, class_names=data.class_names, channels=channels,
                      clinical_spec=data.clinical_spec, multilabel=data.multilabel)
    if cfg.teacher_view == "own_images" and teacher.uses_clinical:
        raise ConfigError("train.distill.teacher_view own_images: the teacher is multimodal; its clinical inputs would "
                          "have to be joined to its own images as well (not supported): use clean or augmented")
    train = data.splits["train"]
    example = normalize_batch(torch.from_numpy(train.images[:2]).permute(0, 3, 1, 2).to(runtime.device), mean, std)
    extras = None
    if train.clinical:
        extras = {k: torch.as_tensor(v[:2]).to(runtime.device) for k, v in train.clinical.items()}
    distillation = Distillation(cfg, student, teacher, example, extras, mean, std).to(runtime.device)
    if cfg.teacher_view == "clean":
        distillation.cache_clean(train.images, train.clinical, runtime, batch_size)
    elif cfg.teacher_view == "own_images":
        distillation.cache_own_images(data, cfg.teacher_ids, runtime, batch_size)
    return distillation
