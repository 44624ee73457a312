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
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeGuard, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fer_edge.detectors import DEFAULT_DETECTOR, DETECTORS, detector_configs
from fer_edge.detectors import DetectorConfig as DetectorConfig
from fer_edge.errors import ConfigError
from fer_edge.runtime.sinks import SINKS, parse_sink_url
from fer_edge.runtime.sinks.config import redacted
from fer_edge.runtime.sources import CameraSourceConfig as CameraSourceConfig
from fer_edge.runtime.sources import ImagesSourceConfig as ImagesSourceConfig
from fer_edge.runtime.sources import Picamera2SourceConfig as Picamera2SourceConfig
from fer_edge.runtime.sources import SourceConfig as SourceConfig
from fer_edge.runtime.sources import VideoSourceConfig as VideoSourceConfig
from fer_edge.runtime.sources import source_configs
from fer_edge.runtime.tracker import TrackerConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _union(models: list[type[BaseModel]]) -> Any:
    """A section that is one of several plugin configs, told apart by their `type`."""
    return Annotated[Union[tuple(models)], Field(discriminator="type")]


# The source, detector and sink sections: the union of the registered plugins' own config models
# (fer_edge.runtime.sources, fer_edge.detectors, fer_edge.runtime.sinks), each declared beside its class.
# Built at run time from the registries, which a type checker cannot follow: it sees the models they all
# derive from (which declare the fields the daemon reads), and for the sinks the union of the built-in ones.
if TYPE_CHECKING:
    from fer_edge.runtime.sinks.config import SinkConfig as _BuiltinSinkConfig

    SourceConfigT = SourceConfig
    DetectorConfigT = DetectorConfig
    SinkConfigT = _BuiltinSinkConfig
else:
    SourceConfigT = _union(source_configs())
    DetectorConfigT = _union(detector_configs())
    SinkConfigT = _union(list(dict.fromkeys(cls.Config for cls in SINKS.objects())))


# The FER2013 model fer-edge ships (assets/models, see its NOTICE): what `run` classifies with when no
# model is given. Trained on a research-only data set; a product should convert its own.
DEFAULT_MODEL = "fer2013_face_vgg_small_int8.tflite"


def default_model() -> Path | None:
    path = Path(__file__).resolve().parents[1] / "assets" / "models" / DEFAULT_MODEL
    return path if path.is_file() else None


class ClassifierConfig(_Strict):
    model: Path | None = Field(None, description="the converted .tflite; None = the shipped FER2013 model")
    threads: int | None = Field(None, ge=1, le=256, description="classifier threads; None = every core this "
                                "process may use")
    delegate: str | None = Field(None, description="path of an external delegate library (.so); falls back to "
                                 "the CPU if it cannot load")
    accelerator: Literal["cpu", "gpu"] = Field("cpu", description="cpu: the interpreter with XNNPACK; gpu: LiteRT's "
                                               "CompiledModel on the GPU, falling back to the CPU, saying why, where "
                                               "there is no GPU adapter")
    runtime: Literal["ai_edge_litert", "tflite_runtime", "tensorflow"] | None = Field(
        None, description="the TFLite runtime; None = the first that imports")
    align: bool = Field(False, description="level the eyes before classifying (needs landmarks)")
    tta: str | None = Field(None, description="test-time augmentation: none | flip (average each face with its "
                            "mirror image: +1 pp on FER2013, twice the classifier's cost); None = the model's own")
    # Only for a .tflite exported elsewhere, without fer-edge metadata (a model that carries metadata must not
    # be contradicted).
    labels: list[str] | None = Field(None, min_length=2, description="model without fer-edge metadata only: its "
                                     "labels in output order")
    input_size: int | None = Field(None, ge=8, le=1024, description="model without metadata only: input side")
    color: Literal["grey", "rgb"] | None = Field(None, description="model without metadata only: grey | rgb")
    require_variant: Literal["fp32", "fp16", "dynamic", "int8"] | None = Field(
        None, description="refuse a model of any other variant, e.g. int8 for an integer-only accelerator")

    @field_validator("tta")
    @classmethod
    def _known_tta(cls, v: str | None) -> str | None:
        from fer_edge.tta import check_tta

        return None if v is None else check_tta(v)  # raises UnknownNameError with the valid names


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level: DEBUG | INFO | "
                                                                "WARNING | ERROR")


class PrivacyConfig(_Strict):
    forbid_frames: bool = Field(False, description="true: any sink that would serve frames is an error")


def _default_outputs() -> list[SinkConfigT]:
    return [parse_sink_url("jsonl:-")]


class DaemonConfig(_Strict):
    """The daemon's settings tree: `fer-edge run`'s flags, a config file and the Python API read their defaults
    here (and in the plugin configs it is made of); `fer-edge run --print-config` shows the effective ones."""

    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, description="the expression model")
    source: SourceConfigT = Field(..., description="where frames come from: picamera2 | camera | video | images")
    detector: DetectorConfigT = Field(default_factory=lambda: DETECTORS.get(DEFAULT_DETECTOR).Config(),
                                      description="the face detector: yunet | blazeface")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="per-face tracks and smoothing")
    outputs: list[SinkConfigT] = Field(default_factory=_default_outputs, description="sinks: jsonl | mqtt | http "
                                       "(or their URLs)")
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @field_validator("detector", mode="before")
    @classmethod
    def _detector_type(cls, v: Any) -> Any:
        # `type` may be left out (the default detector), written in any case, or an alias; an unknown name is
        # an error that lists the valid ones.
        if isinstance(v, dict):
            kind = v.get("type", DEFAULT_DETECTOR)
            if isinstance(kind, str):
                DETECTORS.get(kind)  # raises UnknownNameError with the valid names
                return {**v, "type": kind.lower()}
        return v

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

    def line(self, loc: tuple[Any, ...]) -> int | None:
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


def _is_model(ann: Any) -> TypeGuard[type[BaseModel]]:
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


def _type_names(model: Any) -> tuple[Any, ...]:
    """The `type` names a plugin config answers to (its Literal's values)."""
    field = model.model_fields.get("type") if _is_model(model) else None
    return typing.get_args(field.annotation) if field is not None else ()


def _tagged(ann: Any, tag: Any) -> Any:
    """The member of a discriminated union whose `type` is `tag`, or None."""
    for m in typing.get_args(ann):
        if tag in _type_names(m):
            return m
    return None


def _fields_at(loc: tuple[Any, ...]) -> list[str] | None:
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


def _shown(loc: tuple[Any, ...]) -> str:
    """A dotted path as the user wrote it: without the union tags pydantic inserts."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        after_union = i > 0 and (loc[i - 1] in _UNION_SECTIONS or isinstance(loc[i - 1], int))
        if after_union and isinstance(part, str) and part in _TAGS:
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else ("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


# The sections that are a union of plugin configs, and the tags pydantic inserts into an error's location.
_UNION_SECTIONS = ("source", "detector")
_TAGS = {name for union in (SourceConfigT, DetectorConfigT, SinkConfigT)
         for m in typing.get_args(_strip(union)) for name in _type_names(m)}


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


def read_config_file(path: str | Path) -> tuple[dict[str, Any], YamlLines]:
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


def _duplicate_key(node: Any, visited: set[int] | None = None) -> tuple[str, int, int] | None:
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


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key; anything else in `override` replaces."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not _replaces(k, v, out[k]):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _replaces(key: str, new: dict[str, Any], old: dict[str, Any]) -> bool:
    # A flag naming another source type replaces the file's source rather than mixing two kinds.
    return key == "source" and "type" in new and new.get("type") != old.get("type")


def build_config(data: dict[str, Any], lines: YamlLines | None = None, source: str = "config") -> DaemonConfig:
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, lines, source)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> DaemonConfig:
    """The config file (if any) with `overrides` (from flags) merged on top, validated."""
    data, lines = ({}, None) if path is None else read_config_file(path)
    if overrides:
        data = merge(data, overrides)
    return build_config(data, lines, str(path) if path else "command line")


def section_model(model: type[BaseModel], section: str) -> type[BaseModel] | None:
    """The model of one section of `model`; for a section that is a union of plugin configs, the default
    plugin's (detector: the default detector's) or, for the source, the fields every source takes; None for a
    section that is no model (outputs: a list)."""
    ann = _strip(model.model_fields[section].annotation)
    if _is_model(ann):
        return ann
    if section == "source":
        return SourceConfig
    default = model.model_fields[section].get_default(call_default_factory=True)
    return type(default) if isinstance(default, BaseModel) else None


def effective_settings(cfg: DaemonConfig) -> dict[str, Any]:
    """Every setting the daemon runs with, as plain data (secrets masked: an MQTT password shows as stars)."""
    return cfg.model_dump(mode="json")


def config_yaml(cfg: DaemonConfig) -> str:
    """The effective settings as YAML a config file can start from."""
    import yaml

    return ("# fer-edge run: the effective settings (fer_edge.runtime.config.DaemonConfig)\n"
            + yaml.safe_dump(effective_settings(cfg), sort_keys=False, allow_unicode=True))


def source_from_spec(spec: str) -> dict[str, Any]:
    """`--source` text -> a source config dict (picamera2 | 0 | /dev/video0 | VIDEO | URL | IMAGE_DIR)."""
    from fer_edge.runtime.sources import guess_source_type

    kind = guess_source_type(spec)
    if kind == "picamera2":
        return {"type": "picamera2"}
    if kind == "camera":
        return {"type": "camera", "device": int(spec) if spec.isdigit() else spec}
    return {"type": kind, "path": spec}
