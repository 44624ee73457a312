"""Accuracy through the device's real path: face detector -> crop with the model's PreprocessSpec -> classifier.

The bench scores a model on ready crops; a board sees whole frames and crops what its detector finds. This
module places each labelled face in a larger frame (`pad` face-widths of grey on every side, upscaled by
`scale`: a 48 px FER2013 face becomes a 192 px face in a 576 px frame), runs the runtime's detector, crops
the best detection exactly as `fer-edge run` does (`preprocess.crop_face` with the spec's margin and vertical
offset) and classifies it. A frame where the detector finds no face counts as wrong. The crop path (the same
images, cropped as the data set ships them) is scored beside it, so the two figures differ only by what the
detector and the crop geometry do.

`tune` scores a grid of crop geometries (margin x vertical offset) from ONE detection per image and picks the
one with the best mean of accuracy and mean recall - on a validation split, so that the figure reported on
the test split is not chosen on it. `write_geometry` puts the choice into a model's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fer_edge.bench.settings import checked, default
from fer_edge.preprocess import PreprocessSpec, crop_face, to_model_input, to_uint8_image

NO_FACE = "(no face)"
MARGINS = (-0.15, -0.1, -0.05, 0.0, 0.1, 0.2)
OFFSETS = (-0.1, 0.0, 0.1)


@dataclass(frozen=True)
class Geometry:
    margin: float
    offset_y: float

    def spec(self, base: PreprocessSpec) -> PreprocessSpec:
        return base.model_copy(update={"face_margin": self.margin, "face_offset_y": self.offset_y})

    @property
    def name(self) -> str:
        return f"margin {self.margin:g}, offset {self.offset_y:+g}"


@dataclass
class PathScore:
    geometry: Geometry | None              # None: the crop path
    accuracy: float
    mean_recall: float
    found: float                           # share of images where the detector found a face
    recall: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"path": "crop" if self.geometry is None else "detector",
                "margin": None if self.geometry is None else self.geometry.margin,
                "offset_y": None if self.geometry is None else self.geometry.offset_y,
                "accuracy": self.accuracy, "mean_recall": self.mean_recall, "found": self.found,
                "recall": self.recall}


def padded_frame(face: np.ndarray, pad: float, scale: float) -> np.ndarray:
    """An RGB frame holding `face` (upscaled by `scale`) with `pad` face widths of mid-grey on every side."""
    import cv2

    img = to_uint8_image(face)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if scale != 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR_EXACT)
    p = int(round(pad * img.shape[0]))
    return cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_CONSTANT, value=(128, 128, 128))


def score_with_misses(y: np.ndarray, probs: np.ndarray, found: np.ndarray, labels: list[str]) -> tuple[float, float, dict]:
    """(accuracy, mean recall, per-class recall) where an image without a face is a wrong answer."""
    from fer_edge.metrics import score

    k = len(labels)
    ext = np.zeros((len(y), k + 1), np.float32)
    ext[found, :k] = probs[found]
    ext[~found, k] = 1.0
    s = score(y, ext, [*labels, NO_FACE])
    recall = {lab: s.recall[lab] for lab in labels}
    return s.accuracy, s.mean_recall, recall


def evaluate(model_path: str | Path, images: Sequence[np.ndarray], y: np.ndarray, labels: list[str],
             detector, geometries: Sequence[Geometry], pad: float = default("pad"),
             scale: float = default("frame_scale"),
             threads: int | None = None, progress: Callable[[int], None] | None = None) -> list[PathScore]:
    """The crop path, then the detector path at every geometry (one detection per image serves them all)."""
    from fer_edge.interpreter import TFLiteModel
    from fer_edge.labels import canonical_label

    from fer_edge.tta import with_tta

    model = TFLiteModel(model_path, threads=threads)
    one = with_tta(model.predict_one, model.metadata.tta)   # as the board runs it (fer_edge.runtime.classifier)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.stack([one(x) for x in batch]) if len(batch) else np.zeros((0, len(model.labels)), np.float32)

    base = model.metadata.preprocess
    order = [list(map(canonical_label, model.labels)).index(canonical_label(lab)) for lab in labels]
    n = len(images)
    crops = np.stack([to_model_input(img, base) for img in images]) if n else np.zeros((0, *base.shape), np.uint8)
    plain = predict(crops)[:, order]
    acc, mr, rec = score_with_misses(y, plain, np.ones(n, bool), labels)
    out = [PathScore(None, acc, mr, 1.0, rec)]
    found = np.zeros(n, bool)
    per_geom = {g: np.zeros((n, *base.shape), np.uint8) for g in geometries}
    specs = {g: g.spec(base) for g in geometries}
    for i, img in enumerate(images):
        frame = padded_frame(img, pad, scale)
        dets = detector.detect(frame)
        if dets:
            found[i] = True
            for g in geometries:
                per_geom[g][i] = crop_face(frame, dets[0].box, specs[g])
        if progress is not None and (i % 256 == 255 or i == n - 1):
            progress(i + 1)
    for g in geometries:
        probs = np.zeros((n, len(labels)), np.float32)
        if found.any():
            probs[found] = predict(per_geom[g][found])[:, order]
        acc, mr, rec = score_with_misses(y, probs, found, labels)
        out.append(PathScore(g, acc, mr, float(found.mean()) if n else 0.0, rec))
    return out


def grid(margins: Sequence[float] = MARGINS, offsets: Sequence[float] = OFFSETS) -> list[Geometry]:
    return [Geometry(float(m), float(o)) for m in margins for o in offsets]


def best(scores: Sequence[PathScore]) -> PathScore:
    """The detector-path geometry with the best (accuracy + mean recall) / 2; ties go to the earlier one."""
    det = [s for s in scores if s.geometry is not None]
    return max(det, key=lambda s: (s.accuracy + s.mean_recall) / 2 - 1e-9 * det.index(s))


def write_geometry(model_path: str | Path, geometry: Geometry) -> None:
    """Rewrite a model's metadata (inside the file and its sidecar, atomically) with the chosen crop geometry."""
    from fer_edge.metadata import read_metadata, strip, write_tflite

    path = Path(model_path)
    meta = read_metadata(path)
    write_tflite(path, strip(path.read_bytes()), meta.model_copy(update={"preprocess": geometry.spec(meta.preprocess)}))


def split_samples(data: str | None, split: str | None, limit: int | None, kind: str = default("data_kind"),
                  seed: int = 0):
    """(samples, note, labels) of a split; 'val' is carved from train as convert carves it when the set has none."""
    from fer_edge.data.readers import open_dataset

    ls = open_dataset(data, kind=kind)
    if split == "val" and not ls.split("val"):
        from fer_edge.data.splits import make_splits

        samples, note = make_splits(ls, val_fraction=0.1, seed=seed)["val"], "split 'val' (carved from train as convert does)"
    else:
        from fer_edge.bench.dataset import choose_split

        _, samples, note = choose_split(ls, split)
    if limit and limit < len(samples):
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), limit, replace=False))]
        note += f", a random {limit} of its images"
    return samples, note, list(ls.labels), ls.source


def run_photo_path(model: str | Path, data: str | None, split: str | None = default("split"),
                   limit: int | None = default("limit"), detector: str = default("detector"),
                   pad: float = default("pad"), scale: float = default("frame_scale"),
                   tune: bool = default("tune_crop"), write: bool = default("write_geometry"),
                   out: str | Path | None = None, threads: int | None = None,
                   kind: str = default("data_kind"), console=None) -> dict:
    """Crop path vs detector path for one model; with `tune`, a grid of crop geometries (and `write`: the best
    one goes into the model's metadata). Writes photo_path.json/.md into `out` (None: no files, as run_bench).
    Defaults and checks are fer_edge.bench.settings.BenchConfig's (scale: frame_scale, tune: tune_crop, write:
    write_geometry, kind: data_kind); threads None = the interpreter's default (the command passes its
    largest --threads)."""
    cfg = checked(split=split, limit=limit, detector=detector, pad=pad, frame_scale=scale, tune_crop=tune,
                  write_geometry=write, data_kind=kind)
    split, limit, detector, pad, scale, tune, write, kind = (cfg.split, cfg.limit, cfg.detector, cfg.pad,
                                                             cfg.frame_scale, cfg.tune_crop, cfg.write_geometry,
                                                             cfg.data_kind)
    import json

    from fer_edge.atomic import atomic_write_text
    from fer_edge.data.load import sample_image
    from fer_edge.interpreter import TFLiteModel
    from fer_edge.detectors import create_detector

    samples, note, labels, source = split_samples(data, split, limit, kind)
    images, y, index = [], [], {lab: i for i, lab in enumerate(labels)}
    for s in samples:
        try:
            images.append(sample_image(s))
            y.append(index[s.label])
        except Exception:  # an unreadable image is left out, as everywhere in the bench
            continue
    meta = TFLiteModel(model, threads=threads).metadata
    current = Geometry(meta.preprocess.face_margin, meta.preprocess.face_offset_y)
    geoms = list(dict.fromkeys([current, *(grid() if tune else [])]))
    det = create_detector(detector)
    if console is not None:
        console.print(f"[bold]device path[/] {Path(model).name} on {source}: {note}, {len(images)} images in "
                      f"{pad:g}-face-wide grey frames at x{scale:g}, detector {detector}", highlight=False)
    scores = evaluate(model, images, np.asarray(y, np.int64), labels, det, geoms, pad, scale, threads)
    chosen = best(scores) if tune else next(s for s in scores if s.geometry == current)
    record = {"model": str(model), "data": str(source), "split_note": note, "n": len(images), "detector": detector,
              "pad": pad, "scale": scale, "current": current.__dict__, "chosen": chosen.as_dict(),
              "written": bool(write and tune), "rows": [s.as_dict() for s in scores]}
    if write and tune:
        write_geometry(model, chosen.geometry)
    lines = [f"# device path: `{Path(model).name}`", "",
             f"{source}: {note}; {len(images)} faces, each in a grey frame {pad:g} face widths wide on every "
             f"side, upscaled x{scale:g}; detector {detector}; a frame without a detected face counts as wrong.",
             "", "| path | margin | offset y | found % | accuracy % | mean recall % |", "|---|---|---|---|---|---|"]
    for s in scores:
        mark = " (chosen)" if tune and s is chosen else (" (model's)" if s.geometry == current else "")
        lines.append(f"| {'crop' if s.geometry is None else 'detector'}{mark} | "
                     f"{'-' if s.geometry is None else f'{s.geometry.margin:g}'} | "
                     f"{'-' if s.geometry is None else f'{s.geometry.offset_y:+g}'} | {100 * s.found:.1f} | "
                     f"{100 * s.accuracy:.2f} | {100 * s.mean_recall:.2f} |")
    md = "\n".join(lines) + "\n"
    if out is not None:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "photo_path.json", json.dumps(record, indent=1))
        atomic_write_text(d / "photo_path.md", md)
    if console is not None:
        console.print(md, highlight=False)
    return record
