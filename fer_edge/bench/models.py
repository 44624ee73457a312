"""What the user named on the command line -> the model variants to benchmark.

A convert output folder expands to its float `.keras` reference and every `model_*.tflite`
in it; a file is taken as it is. Each variant belongs to a group (its folder): quantized
variants are compared with the float reference and the fp32 TFLite of their own group.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from fer_edge.bench.settings import MODEL_TTA
from fer_edge.errors import FerEdgeError, ModelError
from fer_edge.metadata import ModelMetadata, read_metadata
from fer_edge.registry import Registry
from fer_edge.tta import check_tta, tta_name

# Display order of variants: reference first, then by how far quantization went.
VARIANT_ORDER = ("float", "fp32", "fp16", "dynamic", "int8")

# suffix -> backend kind that can run it (see fer_edge.bench.backends)
KIND_BY_SUFFIX: Registry[str] = Registry("model file type")
KIND_BY_SUFFIX.register(".tflite")("tflite")
KIND_BY_SUFFIX.register(".keras")("keras")
KIND_BY_SUFFIX.register(".h5")("keras")


@dataclass
class ModelRef:
    path: Path
    kind: str                          # "tflite" | "keras"
    group: str                         # folder name the variant came from
    metadata: ModelMetadata | None = None
    error: str | None = None           # metadata could not be read: the variant becomes an error row
    note: str = ""
    name: str = ""                     # display name, unique within a run (set by name_variants)
    tta: str = "none"                  # test-time augmentation it is scored and timed with (fer_edge.tta)

    @property
    def variant(self) -> str:
        if self.metadata is not None:
            return self.metadata.variant
        return "float" if self.kind == "keras" else _variant_from_stem(self.path.stem)

    @property
    def size_bytes(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    @property
    def sort_key(self) -> tuple:
        v = self.variant
        return (self.group, VARIANT_ORDER.index(v) if v in VARIANT_ORDER else len(VARIANT_ORDER), self.path.name,
                self.tta != "none", self.tta)


def _variant_from_stem(stem: str) -> str:
    for v in VARIANT_ORDER:
        if stem.endswith(v):
            return v
    return "?"


def _group_of(path: Path) -> str:
    return path.resolve().parent.name or str(path.resolve().parent)


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(path.glob("*.keras")) + sorted(path.glob("*.tflite"))
        if not found:
            raise ModelError(
                f"{path}: no .keras or .tflite files in this folder; give a `fer-edge convert` output folder "
                "or the model files themselves")
        return found
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    return [path]


def _keras_metadata(path: Path, siblings: list[Path]) -> tuple[ModelMetadata, str]:
    """A .keras carries its metadata in a sidecar JSON; without one, borrow a sibling .tflite's labels/preprocess."""
    try:
        return read_metadata(path), ""
    except ModelError as first:
        for sib in siblings:
            if sib.suffix == ".tflite" and sib.parent.resolve() == path.parent.resolve():
                try:
                    meta = read_metadata(sib)
                except FerEdgeError:
                    continue
                borrowed = meta.model_copy(update={"variant": "float", "input_dtype": "float32",
                                                   "output_dtype": "float32", "calibration": None})
                return borrowed, f"labels and preprocessing taken from {sib.name} (no {path.stem}.json sidecar)"
        raise first


def resolve_models(paths: list[str | os.PathLike], labels: list[str] | None = None, input_size: int | None = None,
                   color: str | None = None, tta: list[str] | tuple[str, ...] = ("none",)) -> list[ModelRef]:
    """Expand folders, read each variant's metadata; unreadable metadata becomes an error on that variant.
    labels/input_size/color describe .tflite files exported without fer-edge metadata. tta: every variant
    is benched once per test-time augmentation mode ('int8', 'int8+flip', ...); 'model' = the mode the
    model's metadata asks for (what the board runs)."""
    modes = list(dict.fromkeys(m if m == MODEL_TTA else check_tta(m) for m in tta)) or ["none"]
    files: list[Path] = []
    for p in paths:
        for f in _expand(Path(p)):
            if f not in files:
                files.append(f)
    refs: list[ModelRef] = []
    for f in files:
        try:
            kind = KIND_BY_SUFFIX.get(f.suffix)
        except FerEdgeError as exc:
            raise ModelError(f"{f}: {exc}") from None
        ref = ModelRef(path=f, kind=kind, group=_group_of(f))
        try:
            if kind == "keras":
                ref.metadata, ref.note = _keras_metadata(f, files + [x for x in f.parent.glob("*.tflite")])
            else:
                from fer_edge.interpreter import resolve_metadata

                ref.metadata = resolve_metadata(f, labels, input_size, color)
        except FerEdgeError as exc:
            ref.error = str(exc)
        own = ref.metadata.tta if ref.metadata is not None else "none"
        mine = list(dict.fromkeys(own if m == MODEL_TTA else m for m in modes))
        ref.tta = mine[0]
        refs += [ref] + [replace(ref, tta=m) for m in mine[1:]]
    refs.sort(key=lambda r: r.sort_key)
    name_variants(refs)
    return refs


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def name_variants(refs: list[ModelRef]) -> None:
    """Short unique names: the variant ('int8'), the file stem where two share a variant,
    prefixed by the group where several groups are benchmarked together."""
    groups = {r.group for r in refs}
    base = {}
    for r in refs:
        base.setdefault((r.group, r.variant), []).append(r)
    for (group, variant), members in base.items():
        for r in members:
            own = tta_name(variant if len({m.path for m in members}) == 1 else r.path.stem, r.tta)
            r.name = f"{group}:{own}" if len(groups) > 1 else own
