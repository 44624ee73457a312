"""The bench's settings tree: every default of `fer-edge bench` and of `run_bench`, written once, here.

`fer-edge bench` (its options are this model's fields: the help is each field's description, an option not
typed is not passed), `run_bench` and `run_photo_path` (their keyword defaults are `default(name)`) and the
suites and recipes that call them read their defaults from here; `fer-edge bench --print-config` shows the
settings a run would use. The checks the command line needs (thread counts, colours, test-time augmentation
modes) are the model's validators, so the Python API gets them too. tests/test_settings_defaults.py fails when
a second default appears.

Deliberately light (pydantic only): the CLI builds its options from it before any heavy import; the validators
that need a registry (tta modes, accelerators, detectors) import it when they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from fer_edge.errors import ConfigError, settings_error

_Tree = TypeVar("_Tree", bound=BaseModel)

# `tta` entry meaning "what each model's metadata asks for" (what the board runs); fer_edge.bench.models reads it.
MODEL_TTA = "model"


def _csv(value: Any) -> Any:
    """'a, b' -> ['a', 'b'] (the command line's comma lists); anything else as it is, for pydantic to check."""
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return value


class BenchConfig(BaseModel):
    """One bench run: every model variant scored on the same images, timed, judged and reported."""

    # frozen: run_bench's signature holds these defaults, so they must be values nothing can change
    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Optional[str] = Field(None, description="labelled data: class-per-folder tree (optionally under split "
                                "folders) or fer2013.csv; 'synthetic' for the built-in demo set")
    split: Optional[str] = Field(None, description="split to score; None = public_test, else test, else val "
                                 "(the whole set if it has no splits)")
    threads: tuple[int, ...] = Field((1,), description="thread counts to time, comma separated, e.g. 1,2,4 "
                                     "(counts above the usable cores are skipped)")
    runs: int = Field(200, ge=1, description="timed batch-1 runs per variant and thread count")
    warmup: int = Field(10, ge=0, description="untimed runs first")
    max_seconds: float = Field(2.0, ge=0, description="stop timing a variant after this long (at least 20 runs)")
    # The command's folder. run_bench's own default is None, no files, and stays so: its callers (the gate of
    # a conversion, a recipe's train-accuracy pass, a cv fold) want the result object, not a report on disk.
    out: Optional[Path] = Field(Path("bench_results"), description="folder for bench.json/.csv/.md and plots")
    limit: Optional[int] = Field(None, ge=1, description="score a random N images of the split")
    max_drop: Optional[float] = Field(None, ge=0, description="fail (exit 6) if a variant's accuracy falls more "
                                      "than this many points vs the float model")
    max_class_drop: Optional[float] = Field(None, ge=0, description="fail (exit 6) if any class's recall falls "
                                            "more than this many points")
    data_kind: str = Field("auto", description="data layout: auto, folder, fer2013_csv, ckplus, jaffe")
    plots: bool = Field(True, description="write PNG plots (needs matplotlib)")
    isolate: bool = Field(True, description="time each variant in a fresh process (clean memory peaks); "
                          "false: in this process, quicker")
    speed: bool = Field(True, description="time the variants; false: accuracy and gate only")
    labels: Optional[tuple[str, ...]] = Field(None, description="for a .tflite without fer-edge metadata: its "
                                              "labels in output order, comma separated")
    input_size: Optional[int] = Field(None, ge=8, description="for a .tflite without metadata: its input side")
    color: Optional[Literal["grey", "rgb"]] = Field(None, description="for a .tflite without metadata: grey or rgb")
    tta: tuple[str, ...] = Field((MODEL_TTA,), description="test-time augmentation, comma separated: model (what "
                                 "each model's metadata asks for, as the board runs it), none, flip (average each "
                                 "image with its mirror); none,flip benches every variant both ways")
    clean: bool = Field(True, description="also score the clean subset: the split without images that have an "
                        "exact or near copy in train or a conflicting label (needs a train split; audits the "
                        "whole set once)")
    accelerator: str = Field("cpu", description="cpu (XNNPACK) | gpu (LiteRT CompiledModel; falls back to the "
                             "CPU, saying why, where there is no GPU adapter)")
    device_path: bool = Field(False, description="score through the board's real path instead: each face in a "
                              "larger frame -> face detector -> crop with the model's geometry -> classifier "
                              "(no face = wrong), beside the crop path; one .tflite model")
    detector: str = Field("yunet", description="device path: the face detector (fer_edge.detectors: yunet, "
                          "blazeface, blazeface_short)")
    pad: float = Field(1.0, ge=0, description="device path: grey border around each face, in face widths")
    frame_scale: float = Field(4.0, ge=0.25, description="device path: face upscaling")
    tune_crop: bool = Field(False, description="device path: score a grid of crop margins and vertical offsets "
                            "(use a validation split: --split val)")
    write_geometry: bool = Field(False, description="device path with tune_crop: write the best geometry into "
                                 "the model's metadata")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if isinstance(v, int):
            return (v,)
        if isinstance(v, str):
            parts = _csv(v)
            if not parts or not all(p.isdigit() for p in parts):
                raise ValueError(f"takes comma-separated whole numbers such as 1,2,4; got {v!r}")
            return tuple(int(p) for p in parts)
        return v

    @field_validator("threads")
    @classmethod
    def _threads_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(t < 1 for t in v):
            raise ValueError(f"thread counts must be 1 or more, e.g. 1,2,4; got {','.join(map(str, v)) or 'none'}")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        v = _csv(v)
        if isinstance(v, (list, tuple)):
            v = [str(x).strip() for x in v if str(x).strip()]
            return tuple(v) or None
        return v

    @field_validator("tta", mode="before")
    @classmethod
    def _tta_list(cls, v: Any) -> Any:
        v = _csv(v)
        return ("none",) if isinstance(v, (list, tuple)) and not v else v

    @field_validator("tta")
    @classmethod
    def _tta(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from fer_edge.tta import check_tta

        out = []
        for mode in v:
            mode = mode.strip().lower()
            if mode != MODEL_TTA:
                try:
                    mode = check_tta(mode)
                except ConfigError as exc:
                    raise ValueError(f"{exc} ('{MODEL_TTA}' = what each model's metadata asks for)") from None
            out.append(mode)
        return tuple(dict.fromkeys(out))

    @field_validator("accelerator")
    @classmethod
    def _accelerator(cls, v: str) -> str:
        from fer_edge.accelerator import check_accelerator

        try:
            return check_accelerator(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("detector")
    @classmethod
    def _detector(cls, v: str) -> str:
        from fer_edge.detectors import DETECTORS

        try:
            DETECTORS.get(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v.lower()


class ExplainConfig(BaseModel):
    """`fer-edge explain`: saliency and occlusion maps of a few images, float and quantized side by side."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Optional[str] = Field(None, description="split to draw images from (None: as the bench chooses)")
    n: int = Field(8, ge=1, description="how many images to explain")
    disagree: bool = Field(False, description="pick images where the float and quantized predictions disagree")
    out: Path = Field(Path("explain_results"), description="folder for the PNG grids")
    patch: Optional[int] = Field(None, ge=1, description="occlusion patch side in pixels (None: input side / 6)")
    data_kind: str = Field(BenchConfig.model_fields["data_kind"].default,
                           description=BenchConfig.model_fields["data_kind"].description)
    scan: int = Field(2000, ge=1, description="with disagree: how many images to search for disagreements")


def explain_default(name: str) -> Any:
    return ExplainConfig.model_fields[name].get_default(call_default_factory=True)


# The options of the device path (fer_edge.bench.photo_path), which run_bench does not take.
DEVICE_PATH = ("device_path", "detector", "pad", "frame_scale", "tune_crop", "write_geometry")


def field_info(name: str) -> FieldInfo:
    return BenchConfig.model_fields[name]


def default(name: str) -> Any:
    """What field `name` is when nobody sets it (immutable: it may stand in a function's signature)."""
    return field_info(name).get_default(call_default_factory=True)


def description(name: str) -> str:
    return field_info(name).description or ""


def bench_kwargs(cfg: BenchConfig) -> dict[str, Any]:
    """`cfg` as run_bench's keywords (everything but the data and the device path's options)."""
    return {name: getattr(cfg, name) for name in BenchConfig.model_fields if name not in ("data", *DEVICE_PATH)}


def _validated(model: type[_Tree], flags: bool, settings: dict[str, Any]) -> _Tree:
    """model(**settings), a bad value a ConfigError of one line that names it (as --flag with `flags`)."""
    try:
        return model(**settings)
    except ValidationError as exc:
        raise settings_error(exc, flags=flags) from None


def checked(flags: bool = False, **settings: Any) -> BenchConfig:
    """BenchConfig(**settings), checked: a bad value is one ConfigError line naming it."""
    return _validated(BenchConfig, flags, settings)


def checked_explain(flags: bool = False, **settings: Any) -> ExplainConfig:
    """ExplainConfig(**settings), checked as `checked` does."""
    return _validated(ExplainConfig, flags, settings)
