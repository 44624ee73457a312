"""Self-describing models: the metadata every exported model carries.

A .tflite keeps its metadata inside the file, as a small zip archive holding
`fer_edge_metadata.json` appended after the flatbuffer (the interpreter reads the
flatbuffer by offsets from the start and ignores trailing bytes), so the single file a
user copies to a board is enough. A sidecar JSON with the same content sits beside it.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import zipfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fer_edge.atomic import atomic_write_bytes, atomic_write_text
from fer_edge.errors import MetadataError, ModelError
from fer_edge.preprocess import PreprocessSpec

SCHEMA = "fer-edge/1"
MEMBER = "fer_edge_metadata.json"
Variant = Literal["float", "fp32", "fp16", "dynamic", "int8"]


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_images: int
    sha256: str = Field(description="hash of the calibration crops (uint8 bytes, in order)")
    per_class: dict[str, int] = Field(default_factory=dict)


class ModelMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(SCHEMA, alias="schema")
    labels: list[str]
    preprocess: PreprocessSpec
    variant: Variant
    input_dtype: str = "uint8"
    output_dtype: str = "float32"
    backbone: str = "unknown"
    weights: str = "unknown"
    calibration: Calibration | None = None
    tool_versions: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict, description="validation metrics at export")
    tta: str = Field("none", description="test-time augmentation the model is meant to run with (fer_edge.tta): "
                     "the runtime's and the bench's default for it")
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    extra: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "metadata") -> "ModelMetadata":
        from fer_edge import limits
        from fer_edge.errors import LimitError

        try:
            return cls.model_validate(limits.load_json(text, source, limits.MAX_METADATA_BYTES))
        except LimitError as exc:
            raise MetadataError(f"{exc}; re-export the model") from None
        except (ValueError, ValidationError, RecursionError) as exc:
            raise MetadataError(f"{source}: fer-edge metadata is unreadable ({exc}); re-export the model") from exc


def sidecar_path(model_path: str | os.PathLike[str]) -> Path:
    p = Path(model_path)
    return p.with_suffix(".json")


def embed(tflite: bytes, meta: ModelMetadata) -> bytes:
    """Return the .tflite bytes with `meta` appended as a zip archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MEMBER, meta.to_json())
    return strip(tflite) + buf.getvalue()


def strip(tflite: bytes) -> bytes:
    """The bare flatbuffer, without an appended metadata archive."""
    n = _archive_length(tflite)
    return tflite[: len(tflite) - n] if n else tflite


def _archive_length(data: bytes) -> int:
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0 or len(data) - eocd < 22:
        return 0
    cd_size = int.from_bytes(data[eocd + 12 : eocd + 16], "little")
    cd_offset = int.from_bytes(data[eocd + 16 : eocd + 20], "little")
    comment_len = int.from_bytes(data[eocd + 20 : eocd + 22], "little")
    # With the archive appended, the recorded central-directory offset is relative to the
    # archive's own start: archive start = eocd - cd_size - cd_offset.
    start = eocd - cd_size - cd_offset
    if start < 0:
        return 0
    return len(data) - start if eocd + 22 + comment_len == len(data) else 0


def write_tflite(path: str | os.PathLike[str], tflite: bytes, meta: ModelMetadata) -> Path:
    """Write a .tflite with embedded metadata plus its sidecar JSON, both atomically."""
    path = Path(path)
    atomic_write_bytes(path, embed(tflite, meta))
    atomic_write_text(sidecar_path(path), meta.to_json())
    return path


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read a model's fer-edge metadata: embedded in the .tflite first, else the sidecar JSON.

    Bounded (fer_edge.limits): the model must be a regular file within MAX_MODEL_BYTES, and the
    embedded record is decompressed to at most MAX_METADATA_BYTES - only the archive at the end of
    the file is read, never the whole model."""
    from fer_edge import limits
    from fer_edge.errors import LimitError

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ModelError(f"model file not found: {path}")
    try:
        st = limits.check_regular(path, "model")
        if st.st_size > limits.MAX_MODEL_BYTES:
            raise limits.too_big(path, "model", st.st_size, limits.MAX_MODEL_BYTES)
        if path.suffix == ".tflite":
            try:
                with open(path, "rb") as fh:
                    raw = limits.read_zip_member(fh, MEMBER, limits.MAX_METADATA_BYTES, str(path))
            except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, ValueError):
                raw = None  # no (readable) archive appended: try the sidecar
            if raw is not None:
                return ModelMetadata.from_json(raw, source=str(path))
        side = sidecar_path(path)
        if side.is_file():
            return ModelMetadata.from_json(limits.read_limited(side, limits.MAX_METADATA_BYTES, "metadata sidecar"),
                                           source=str(side))
    except LimitError as exc:
        raise MetadataError(str(exc)) from None
    raise MetadataError(
        f"{path} carries no fer-edge metadata (no embedded record, no sidecar {side.name}). "
        "Export it with `fer-edge convert`, or pass its labels and input size explicitly "
        "(--labels angry,disgust,... --input-size N --color grey|rgb)."
    )


def tool_versions() -> dict[str, str]:
    """Versions of the tools that touched a model (only those already imported, to stay cheap)."""
    import sys

    from fer_edge import __version__

    out = {"fer-edge": __version__, "python": sys.version.split()[0]}
    for mod in ("tensorflow", "keras", "numpy", "ai_edge_litert", "cv2"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = str(getattr(m, "__version__", "?"))
    return out
