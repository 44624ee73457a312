"""The converter's settings tree: every default of a conversion, written once, here.

`fer-edge convert` (its options are this model's fields: the help is each field's description, an option
not typed is not passed), the Python API (`ConvertConfig(...)`), the recipes in `converters/` (their
`convert:` section is validated against this model) and the training code (`TrainConfig`'s defaults,
`build_classifier`'s, the distillation's) all read their defaults from here; `fer-edge convert
--print-config` shows the settings a run would use. tests/test_settings_defaults.py fails when a second
default appears.

A recipe field that a preset may fill (fer_edge.convert.presets) defaults to None, "not given"; what it trains
with when nothing fills it is written beside it (`unset(...)`) and read with `default(name)`.
Deliberately light (pydantic only): the CLI builds its options from it before any heavy import.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.fields import FieldInfo

from fer_edge.convert.export import DEFAULT_INT8_OUTPUT

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
DEFAULT_VARIANTS = ["int8", "fp32"]
# Settings that change what training produces: a checkpoint is resumed only when they all match.
TRAINING_KEYS = ("model", "data", "kind", "input_size", "color", "weights", "alpha", "lrs", "seed", "batch_size",
                 "class_weights", "augment", "val_fraction", "labels", "epochs", "fine_tune_epochs",
                 "fine_tune_lr_factor", "patience", "dropout", "strategy", "bn", "sweep_epochs",
                 "optimizer", "weight_decay", "warmup_epochs", "lr_floor", "label_smoothing", "class_weighting",
                 "precision", "rotation", "erasing", "bn_momentum", "teachers", "distill_weight",
                 "distill_temperature", "teacher_mirror")
# Added after checkpoints existed: left out of the fingerprint while unset, so those still resume.
LATER_KEYS = ("sweep_epochs", "optimizer", "weight_decay", "warmup_epochs", "lr_floor", "label_smoothing",
              "class_weighting", "precision", "rotation", "erasing", "bn_momentum", "teachers", "distill_weight",
              "distill_temperature", "teacher_mirror")


def unset(value: Any, description: str, **constraints: Any) -> Any:
    """A field that defaults to None ("not given": a preset or a flag may set it) and trains with `value`
    when nothing does. The value is written here only; the description (the docs, the --help) says it."""
    return Field(None, description=f"{description} (default {shown(value)})",
                 json_schema_extra={"unset": value}, **constraints)


def shown(value: Any) -> str:
    """A default as the docs and the --help write it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


class ConvertConfig(BaseModel):
    """One conversion: data -> audit -> splits -> fine-tune (or load a given model) -> export -> report."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("mobilenet", description="backbone: mobilenet (v1), mobilenet_v2, mobilenet_v3_small, "
                       "mobilenet_v3_large, inception_v3, nasnet_mobile, face_vgg_tiny|small|base, "
                       "face_resnet_tiny|small|base; or a .keras/.h5 model file to convert without training")
    preset: Literal["auto", "paper", "scratch", "finetune"] = Field(
        "auto", description="training settings for the fields not given (fer_edge.convert.presets): auto = "
                            "scratch/finetune for face-native backbones (without/with weights), paper otherwise")
    data: str | None = Field(None, description="class-per-folder tree (optionally under train/ val/ test/ "
                             "folders) or fer2013.csv; None = the synthetic demo set")
    kind: str = Field("auto", description="data layout: auto, folder, fer2013_csv, ckplus, jaffe, synthetic")
    out: Path | None = Field(None, description="output folder; None = runs/<model>-<timestamp>")
    variants: list[Literal["fp32", "fp16", "dynamic", "int8"]] = Field(
        default_factory=lambda: list(DEFAULT_VARIANTS), description="TFLite variants to export: int8 (uint8 "
        "pixels in), fp16 (float16 weights), dynamic (int8 weights, float I/O), fp32")
    epochs: int = Field(2, ge=0, description="phase 1 epochs per learning rate: head only when the backbone is "
                        "pretrained, the whole network from scratch")
    fine_tune_epochs: int = Field(8, ge=0, description="phase 2 epochs: the whole network, cosine-decayed rate")
    fine_tune_lr_factor: float = Field(1.0, gt=0, le=1, description="phase 2 starts at lr x this and decays on "
                                       "a cosine")
    input_size: int | None = Field(None, ge=8, le=1024, description="model input side in px; None = per "
                                   "backbone: 96 for MobileNets/NASNet, 139 for InceptionV3, 48 for face-native")
    color: Literal["grey", "rgb"] = Field("grey", description="input colour: grey or rgb")
    weights: str = Field("auto", description="auto (ImageNet when the file is in the Keras cache, else from "
                         "scratch) | imagenet (insist) | fer2013 (face-native: the shipped FER2013 weights) | none "
                         "| PATH of a .h5")
    alpha: float | None = Field(None, gt=0, description="width multiplier of MobileNets; None = 0.25 v1, 0.35 "
                                "v2, 1.0 v3")
    lrs: list[float] = Field(default_factory=lambda: [1e-3], description="learning rates (--lr, repeatable): "
                             "several are a sweep, the best on validation mean per-class recall is kept")
    seed: int = Field(0, description="random seed of splits, augmentation and initialisation")
    batch_size: int = Field(32, ge=1, description="global batch size")
    class_weights: bool = Field(True, description="class-weighted cross-entropy (false: --no-class-weights)")
    augment: bool = Field(True, description="augmentation while training (false: --no-augment)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="validation share carved from train (by subject "
                                "when known) if the data has no val split")
    labels: list[str] | None = Field(None, description="label set and order (for a model file: its output order)")
    strategy: str = Field("default", description="default | mirrored (all local GPUs, else logical CPUs) | "
                          "multiworker (TF_CONFIG)")
    patience: int = Field(5, ge=1, description="early stopping: epochs without a better validation mean recall "
                          "before a phase ends")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout before the new head")
    bn: Literal["adapt", "frozen"] = Field("adapt", description="BatchNorm of a pretrained backbone once "
                                           "unfrozen: adapt (re-estimate statistics on the faces) or frozen")
    sweep_epochs: int | None = Field(None, ge=1, description="rate race: every --lr trains this many epochs, "
                                     "then only the best on validation trains on (None: each trains fully)")
    # The from-scratch recipe (face-native backbones). None = the paper's fine-tuning behaviour.
    optimizer: Optional[Literal["adam", "adamw"]] = unset("adam", "optimizer: adam or adamw (decoupled weight "
                                                          "decay)")
    weight_decay: Optional[float] = unset(0.0, "AdamW decoupled weight decay", ge=0)
    warmup_epochs: Optional[int] = unset(0, "linear warm-up epochs before the cosine", ge=0)
    lr_floor: Optional[float] = unset(0.05, "the cosine ends at lr x this", ge=0, le=1)
    label_smoothing: Optional[float] = unset(0.0, "label smoothing", ge=0, lt=1)
    class_weighting: Optional[Literal["none", "sqrt", "inverse", "balanced"]] = Field(
        None, description="loss weighting: none, sqrt, inverse (paper eq. 1), balanced (sampling); "
                          "None: inverse unless class_weights is false")
    precision: Optional[Literal["auto", "float32", "mixed_bfloat16"]] = unset(
        "float32", "training precision; auto = bfloat16 where the CPU has AMX/AVX512-BF16 (dense nets)")
    rotation: Optional[float] = unset(0.0, "augmentation: max rotation, degrees", ge=0, le=45)
    erasing: Optional[float] = unset(0.0, "augmentation: random-erasing probability", ge=0, le=1)
    bn_momentum: Optional[float] = unset(0.9, "BatchNorm momentum", gt=0, lt=1)
    teachers: list[str] = Field(default_factory=list, description="distil from these models (.tflite or fer-edge "
                                ".keras; --teacher, repeatable: an averaged ensemble)")
    distill_weight: Optional[float] = unset(0.5, "share of the teachers' soft targets in the training target",
                                            ge=0, le=1)
    distill_temperature: Optional[float] = unset(1.0, "teacher temperature", gt=0)
    teacher_mirror: Optional[bool] = unset(True, "average each teacher over the mirror image too")
    tta: Literal["none", "flip"] = Field("none", description="test-time augmentation the exported models ask the "
                                         "runtime and the bench to run them with (flip: average with the mirror)")
    logit_adjust: bool = Field(True, description="after training, shift the output biases by tau x log prior "
                               "with tau chosen on validation (mean recall and accuracy), when it helps")
    calib_images: int = Field(300, ge=1, description="int8 calibration crops (class-balanced, from training)")
    int8_output: Literal["float", "uint8", "int8"] = Field(
        DEFAULT_INT8_OUTPUT, description="output of the int8 model: float (int8 body, float32 head: no tied scores), "
                             "uint8 or int8 (fully integer, plain post-training quantization)")
    input_range: str = Field("-1,1", description="pixel range a given model file expects: -1,1 | 0,1 | 0,255")
    max_drop: float | None = Field(None, ge=0, description="fail (exit 6) if a variant loses more than this many "
                                   "points of validation accuracy vs float")
    max_class_drop: float | None = Field(None, ge=0, description="fail if any class' recall drops more than this "
                                         "many points")
    eval_test: bool = Field(True, description="evaluate on the data's test split (test/public_test) at the end")
    resume: bool = Field(True, description="resume from the checkpoints in out when the settings match")

    @field_validator("lrs")
    @classmethod
    def _lrs(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one learning rate")
        if any(not (0 < x < 1) for x in v):
            raise ValueError(f"learning rates must be in (0, 1), got {v}")
        return list(dict.fromkeys(float(x) for x in v))

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v)) or list(DEFAULT_VARIANTS)

    @property
    def is_model_file(self) -> bool:
        return Path(self.model).suffix.lower() in MODEL_SUFFIXES

    def resolved(self) -> "ConvertConfig":
        """This config with its preset's values filled in for the fields not set explicitly."""
        from fer_edge.convert.presets import auto_preset, preset_values

        if self.is_model_file:
            return self
        from fer_edge.convert.backbones import get_backbone

        name = self.preset
        if name == "auto":
            name = auto_preset(get_backbone(self.model).face_native, self.weights)
        values = preset_values(name, set(self.model_fields_set))
        out = self.model_copy(update=values) if values else self.model_copy()
        # a copy keeps the fields set explicitly; the preset's count as set from now on (idempotent)
        out.__pydantic_fields_set__ = set(self.model_fields_set) | set(values) | {"preset"}
        object.__setattr__(out, "preset", name)
        return out

    def fingerprint(self) -> str:
        d = self.model_dump(mode="json", include=set(TRAINING_KEYS))
        for k in LATER_KEYS:
            if d.get(k) in (None, []):
                d.pop(k, None)
        if self.teachers:
            from fer_edge.convert.distill import file_sha256

            d["teachers"] = [file_sha256(t) if Path(t).is_file() else t for t in self.teachers]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def field_info(name: str) -> FieldInfo:
    return ConvertConfig.model_fields[name]


def default(name: str) -> Any:
    """What field `name` trains with when nobody sets it: its default, or for a field that a preset may fill
    (None by default) the value written beside it with `unset`."""
    info = field_info(name)
    value = info.get_default(call_default_factory=True)
    extra = info.json_schema_extra
    if value is None and isinstance(extra, dict) and "unset" in extra:
        return extra["unset"]
    return value


def description(name: str) -> str:
    return field_info(name).description or ""


def effective(cfg: ConvertConfig, name: str) -> Any:
    """The value `cfg` trains with for field `name`: its own, or the default of a field left unset (None)."""
    value = getattr(cfg, name)
    return default(name) if value is None else value
