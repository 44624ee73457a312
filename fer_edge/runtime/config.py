"""The daemon's configuration: pydantic models validated once at the edge, YAML with line numbers.

A config file and command-line flags meet here: the file is read to a dict, flags are merged on
top (flags win), and the whole is validated once. Unknown keys are errors that name the key, the
line it is on and the closest valid key. Inner code receives typed objects only.

Privacy by default: nothing here writes or serves a frame or a crop. The only path a frame can
take out of the process is an HTTP sink with `preview: true`; `privacy.forbid_frames: true`
makes even that a configuration error, for deployments that must guarantee it.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fer_edge.errors import ConfigError
from fer_edge.runtime.sinks import SinkConfigT, parse_sink_url
from fer_edge.runtime.sinks.config import redacted


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _SourceBase(_Strict):
    # Replay a finite source (video file, image folder) forever.
    loop: bool = False
    # Drop stale frames (keep only the newest) - default: yes for cameras and streams, no for files.
    drop_stale: bool | None = None
    # Stop after this many frames (tests, batch jobs).
    max_frames: int | None = Field(None, ge=1)
    # Reopen a failing camera after 0.5 s, 1 s, 2 s ... up to retry_max_s.
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    # A live source that delivers no frame for this long is stalled: health "degraded", the systemd
    # watchdog is no longer fed (so systemd restarts the service), and the source is reopened.
    stall_s: float = Field(10.0, gt=0)
    # A camera that cannot deliver its first frame: keep retrying (true), or stop at once with the
    # fix (false). Default: stop when run interactively (a terminal, not systemd), retry as a service.
    wait_for_source: bool | None = None


class Picamera2SourceConfig(_SourceBase):
    type: Literal["picamera2"] = "picamera2"
    size: tuple[int, int] = (640, 480)
    # Low-res stream the detector reads: "auto" = as wide as the detector's input (detector.input_width)
    # with the main stream's aspect ratio, [W, H] = that size, null = downscale the main stream instead.
    lores_size: tuple[int, int] | Literal["auto"] | None = "auto"
    framerate: float | None = Field(30.0, gt=0)
    camera_num: int = Field(0, ge=0)


class CameraSourceConfig(_SourceBase):
    type: Literal["camera"] = "camera"
    device: int | str = 0                         # index or /dev/videoN
    size: tuple[int, int] | None = (640, 480)
    fps: float | None = Field(30.0, gt=0)
    fourcc: str | None = "MJPG"

    @field_validator("fourcc")
    @classmethod
    def _fourcc(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 4:
            raise ValueError(f"fourcc must be 4 characters (e.g. MJPG, YUYV), got {v!r}")
        return v


class VideoSourceConfig(_SourceBase):
    type: Literal["video"] = "video"
    path: str                                     # a file, or a stream URL (rtsp://, http://)
    # Play a file at this rate, as a camera would deliver it (soak tests, demos); None: as fast as the
    # pipeline reads. Streams come at their sender's rate.
    fps: float | None = Field(None, gt=0, le=1000)

    @model_validator(mode="after")
    def _fps_files_only(self) -> "VideoSourceConfig":
        from fer_edge.runtime.sources import is_url

        if self.fps is not None and is_url(self.path):
            raise ValueError(f"fps paces a video file; the stream {self.path} comes at its sender's rate: "
                             "remove fps")
        return self


class ImagesSourceConfig(_SourceBase):
    type: Literal["images"] = "images"
    path: str


SourceConfigT = Annotated[
    Union[Picamera2SourceConfig, CameraSourceConfig, VideoSourceConfig, ImagesSourceConfig],
    Field(discriminator="type"),
]


# The FER2013 model fer-edge ships (assets/models, see its NOTICE): what `run` classifies with when no
# model is given. Trained on a research-only data set; a product should convert its own.
DEFAULT_MODEL = "fer2013_face_vgg_small_int8.tflite"


def default_model() -> Path | None:
    path = Path(__file__).resolve().parents[1] / "assets" / "models" / DEFAULT_MODEL
    return path if path.is_file() else None


class ClassifierConfig(_Strict):
    model: Path | None = None                     # the converted .tflite; None: the shipped FER2013 model
    threads: int | None = Field(None, ge=1, le=256)   # default: every core this process may use
    delegate: str | None = None                   # path of an external delegate library; falls back to CPU
    # cpu: the interpreter with XNNPACK. gpu: LiteRT's CompiledModel on the GPU; falls back to the CPU,
    # saying why, where there is no GPU adapter (fer_edge.accelerator).
    accelerator: Literal["cpu", "gpu"] = "cpu"
    runtime: Literal["ai_edge_litert", "tflite_runtime", "tensorflow"] | None = None
    align: bool = False                           # level the eyes before classifying (needs landmarks)
    tta: str | None = None                        # test-time augmentation: none | flip; None: the model's own
    # Only for a .tflite exported elsewhere, without fer-edge metadata: its labels in output order,
    # input side and colour (a model that carries metadata must not be contradicted).
    labels: list[str] | None = Field(None, min_length=2)
    input_size: int | None = Field(None, ge=8, le=1024)
    color: Literal["grey", "rgb"] | None = None
    # Refuse a model of any other variant, e.g. int8 for an integer-only accelerator.
    require_variant: Literal["fp32", "fp16", "dynamic", "int8"] | None = None

    @field_validator("tta")
    @classmethod
    def _known_tta(cls, v: str | None) -> str | None:
        from fer_edge.tta import check_tta

        return None if v is None else check_tta(v)  # raises UnknownNameError with the valid names


class DetectorConfig(_Strict):
    type: str = "yunet"
    model: str | None = None                      # default: the model shipped in fer_edge/assets
    input_width: int = Field(320, ge=32, le=4096)  # YuNet runs on the frame scaled to this width
    score_threshold: float = Field(0.6, gt=0, lt=1)
    nms_threshold: float = Field(0.3, gt=0, lt=1)
    min_face: float = Field(20.0, ge=0)           # pixels, in the full frame
    max_faces: int = Field(5, ge=1, le=100)
    every: int = Field(1, ge=1, le=1000)          # detect on every Nth frame; track in between
    threads: int | None = Field(None, ge=1, le=256)

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        from fer_edge.detectors import DETECTORS

        DETECTORS.get(v)  # raises UnknownNameError with the valid names
        return v.lower()


class TrackerConfig(_Strict):
    iou_threshold: float = Field(0.3, ge=0, le=1)
    max_centre_distance: float = Field(0.5, ge=0)
    max_missed: int = Field(5, ge=0)
    smoothing: Literal["ema", "window", "none"] = "ema"
    alpha: float = Field(0.4, gt=0, le=1)
    window: int = Field(5, ge=1, le=1000)
    uncertain_below: float = Field(0.45, ge=0, le=1)
    hysteresis: float = Field(0.1, ge=0, le=1)


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class PrivacyConfig(_Strict):
    forbid_frames: bool = False                   # true: any sink that would serve frames is an error


def _default_outputs() -> list:
    return [parse_sink_url("jsonl:-")]


class DaemonConfig(_Strict):
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    source: SourceConfigT
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    outputs: list[SinkConfigT] = Field(default_factory=_default_outputs)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @field_validator("outputs", mode="before")
    @classmethod
    def _urls(cls, v: Any) -> Any:
        # A config file may list sinks as the URLs the command line takes ("jsonl:-", "mqtt://host/prefix").
        return [parse_sink_url(x) if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _privacy(self) -> "DaemonConfig":
        if self.privacy.forbid_frames:
            for i, out in enumerate(self.outputs):
                if getattr(out, "preview", False):
                    raise ValueError(f"outputs[{i}] ({out.type}) has preview: true but privacy.forbid_frames "
                                     "is true; remove one of them")
        return self

    def require_model(self) -> Path:
        m = self.classifier.model
        if m is None:
            shipped = default_model()
            if shipped is not None:
                return shipped
            raise ConfigError("no classifier model: set classifier.model in the config or pass --model MODEL.tflite")
        if not Path(m).is_file():
            raise ConfigError(f"classifier.model {m} does not exist; give the .tflite that `fer-edge convert` wrote")
        return Path(m)


# ---------------------------------------------------------------------------------------------
# YAML with line numbers

class YamlLines:
    """Maps config paths (('outputs', 0, 'port')) to 1-based line numbers of a YAML document."""

    def __init__(self, text: str):
        from fer_edge.limits import compose_yaml

        self.root = compose_yaml(text)

    def line(self, loc: tuple) -> int | None:
        """Line of the deepest node on `loc` that exists; elements that are not in the YAML
        (pydantic's union tags, e.g. 'jsonl') are skipped."""
        import yaml

        node, found = self.root, None
        if node is None:
            return None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                hit = next(((k, v) for k, v in node.value if k.value == str(part)), None)
                if hit is None:
                    continue
                key, node = hit
                found = key.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                found = node.start_mark.line + 1
        return found


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (Union, types.UnionType)


def _strip(ann: Any) -> Any:
    """Annotated[X, ...] -> X, Optional[X] -> X."""
    while True:
        if typing.get_origin(ann) is Annotated:
            ann = typing.get_args(ann)[0]
        elif _is_union(ann) and len([a for a in typing.get_args(ann) if a is not type(None)]) == 1:
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        else:
            return ann


def _tagged(ann: Any, tag: Any) -> Any:
    """The member of a discriminated union whose `type` is `tag`, or None."""
    for m in typing.get_args(ann):
        if _is_model(m) and "type" in m.model_fields and m.model_fields["type"].default == tag:
            return m
    return None


def _fields_at(loc: tuple) -> list[str] | None:
    """The valid keys of the model that holds the last element of `loc` (for 'did you mean')."""
    ann: Any = DaemonConfig
    for part in loc[:-1]:
        ann = _strip(ann)
        if typing.get_origin(ann) is list and isinstance(part, int):
            ann = typing.get_args(ann)[0]
        elif _is_union(ann) and _tagged(ann, part) is not None:
            ann = _tagged(ann, part)
        elif _is_model(ann) and part in ann.model_fields:
            ann = ann.model_fields[part].annotation
        else:
            return None
    ann = _strip(ann)
    return list(ann.model_fields) if _is_model(ann) else None


def _shown(loc: tuple) -> str:
    """A dotted path as the user wrote it: without the union tags pydantic inserts."""
    parts = []
    for i, part in enumerate(loc):
        after_union = i > 0 and (loc[i - 1] == "source" or isinstance(loc[i - 1], int))
        if after_union and isinstance(part, str) and part in _TAGS:
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else ("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


_TAGS = {"picamera2", "camera", "video", "images", "jsonl", "mqtt", "http"}


def _describe(err: ValidationError, lines: YamlLines | None, source: str) -> str:
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        shown = _shown(loc)
        where = ""
        if lines is not None:
            n = lines.line(loc)
            where = f"{source}:{n}: " if n else f"{source}: "
        if e["type"] == "extra_forbidden":
            key = str(loc[-1])
            valid = _fields_at(loc) or []
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            listing = f" Valid keys here: {', '.join(valid)}." if valid else ""
            out.append(f"{where}unknown key '{key}' at {shown}.{hint}{listing}")
        elif e["type"] == "missing":
            out.append(f"{where}{shown}: required key is missing")
        else:
            secret = any("password" in str(part) for part in loc)
            got = "***" if secret else repr(redacted(e.get("input")))
            hint = ""
            if e["type"] == "literal_error" and not secret:  # the closest of the valid values
                choices = re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", "")))
                close = difflib.get_close_matches(str(e.get("input")), choices, n=1, cutoff=0.5)
                hint = f" Did you mean '{close[0]}'?" if close else ""
            out.append(f"{where}{shown}: {e['msg']} (got {got}).{hint}")
    if len(out) == 1:  # one problem, one line
        return f"invalid configuration: {out[0]}"
    return "invalid configuration:\n  " + "\n  ".join(out)


def read_config_file(path: str | Path) -> tuple[dict, YamlLines]:
    """A YAML config file -> (plain dict, line map). Syntax errors name the line."""
    import yaml

    from fer_edge import limits
    from fer_edge.errors import LimitError

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = limits.read_limited(p, limits.MAX_CONFIG_BYTES, "config file")
    except LimitError as exc:
        raise ConfigError(str(exc)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    try:
        data = limits.load_yaml(text, str(p))
        lines = YamlLines(text)
    except LimitError as exc:
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    dupe = _duplicate_key(lines.root)
    if dupe is not None:
        key, first, second = dupe
        raise ConfigError(f"{p}:{second}: key '{key}' is given twice (first on line {first}); YAML would silently "
                          "keep only the last one - merge them into one")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping (classifier:, source:, ...), got {type(data).__name__}")
    return data, lines


def _duplicate_key(node, visited: set | None = None) -> tuple[str, int, int] | None:
    """The first mapping key written twice anywhere in a composed YAML document: (key, line, line).
    Aliases share nodes (and may form cycles), so each node is visited once."""
    import yaml

    visited = set() if visited is None else visited
    if node is None or id(node) in visited:
        return None
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                if k.value in seen:
                    return k.value, seen[k.value], k.start_mark.line + 1
                seen[k.value] = k.start_mark.line + 1
            found = _duplicate_key(v, visited)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item, visited)
            if found:
                return found
    return None


def merge(base: dict, override: dict) -> dict:
    """Deep merge: mappings merge key by key; anything else in `override` replaces."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not _replaces(k, v, out[k]):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _replaces(key: str, new: dict, old: dict) -> bool:
    # A flag naming another source type replaces the file's source rather than mixing two kinds.
    return key == "source" and "type" in new and new.get("type") != old.get("type")


def build_config(data: dict, lines: YamlLines | None = None, source: str = "config") -> DaemonConfig:
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, lines, source)) from None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> DaemonConfig:
    """The config file (if any) with `overrides` (from flags) merged on top, validated."""
    data, lines = ({}, None) if path is None else read_config_file(path)
    if overrides:
        data = merge(data, overrides)
    return build_config(data, lines, str(path) if path else "command line")


def source_from_spec(spec: str) -> dict:
    """`--source` text -> a source config dict (picamera2 | 0 | /dev/video0 | VIDEO | URL | IMAGE_DIR)."""
    from fer_edge.runtime.sources import guess_source_type

    kind = guess_source_type(spec)
    if kind == "picamera2":
        return {"type": "picamera2"}
    if kind == "camera":
        return {"type": "camera", "device": int(spec) if spec.isdigit() else spec}
    return {"type": kind, "path": spec}
