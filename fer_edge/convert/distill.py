"""Distillation targets: the averaged soft predictions of one or several teacher models on the training images.

A teacher is any model fer-edge exports (a .tflite, or a .keras with its metadata sidecar): each reads the
training images through its OWN PreprocessSpec (a 64 px mini-Xception and a 96 px MobileNet teach a 48 px
student alike) and answers in its own label order, which is mapped onto the student's by name. Teachers
run once per image - optionally also on its mirror image, so the target is flip-invariant like the
augmented student - and the result is cached on disk under a key of the teacher files' bytes, the image
keys and the settings, so a resumed or repeated run does not recompute them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fer_edge.convert.settings import default
from fer_edge.errors import ConfigError, ModelError

CACHE_VERSION = 1
# The share of the teachers in the target (0.5, the measured pilot: TOOLCHAIN), the temperature and the mirror
# default are ConvertConfig's (fer_edge.convert.settings: distill_weight, distill_temperature, teacher_mirror).


@dataclass(frozen=True)
class DistillSettings:
    teachers: tuple[str, ...]
    temperature: float = default("distill_temperature")
    mirror: bool = default("teacher_mirror")

    @classmethod
    def of(cls, teachers, temperature: float | None, mirror: bool | None) -> "DistillSettings":
        """From the optional ConvertConfig fields: None = this class's default."""
        return cls(tuple(teachers), cls.temperature if temperature is None else float(temperature),
                   cls.mirror if mirror is None else bool(mirror))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at a temperature: p^(1/T), renormalised (T > 1 flattens, T = 1 is the identity)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-8, 1.0)
    if temperature != 1.0:
        p = p ** (1.0 / temperature)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def label_map(teacher_labels: Sequence[str], student_labels: Sequence[str], name: str) -> np.ndarray:
    """Index of each student label among the teacher's outputs; every student label must be there."""
    from fer_edge.labels import canonical_label

    index = {canonical_label(lab): i for i, lab in enumerate(teacher_labels)}
    missing = [lab for lab in student_labels if canonical_label(lab) not in index]
    if missing:
        raise ConfigError(f"teacher {name} has no output for {missing} (its labels: {list(teacher_labels)}); "
                          "a teacher must know every class of the data")
    return np.array([index[canonical_label(lab)] for lab in student_labels], np.int64)


def _tflite_predictor(path: Path, threads: int | None):
    from fer_edge.interpreter import TFLiteModel

    m = TFLiteModel(path, threads=threads)
    return m.metadata, m.predict


def _keras_predictor(path: Path):
    import keras

    from fer_edge.metadata import read_metadata

    from fer_edge.convert.train import predict_probs

    meta = read_metadata(path)  # the sidecar .json a fer-edge export writes beside model_float.keras
    model = keras.models.load_model(path, compile=False)
    return meta, lambda x: predict_probs(model, x)


def load_teacher(path: str | Path, threads: int | None = None):
    """(metadata, predict(uint8 batch) -> probabilities) for a .tflite or a fer-edge .keras."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"teacher model not found: {p}. Give a .tflite or .keras file that fer-edge exported.")
    if p.suffix == ".tflite":
        return _tflite_predictor(p, threads)
    if p.suffix == ".keras":
        return _keras_predictor(p)
    raise ModelError(f"teacher {p}: unsupported file type '{p.suffix}'; give a .tflite or .keras model "
                     "(convert a .h5 first: fer-edge convert --model FILE.h5)")


def cache_key(settings: DistillSettings, keys: Sequence[str], labels: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "t": settings.temperature, "mirror": settings.mirror,
                         "labels": list(labels), "teachers": [file_sha256(t) for t in settings.teachers]},
                        sort_keys=True).encode())
    for k in keys:
        h.update(k.encode() + b"\0")
    return h.hexdigest()[:20]


def teacher_targets(settings: DistillSettings, samples: Sequence, labels: Sequence[str], cache_dir: Path | None,
                    log: Callable[[str], None] | None = None, threads: int | None = None,
                    progress=None) -> tuple[np.ndarray, dict]:
    """Averaged teacher probabilities (N, K) over the student's labels for `samples`, and a record for metadata.

    `samples` must be exactly the training samples whose crops the student trains on, in order.
    """
    from fer_edge.atomic import atomic_write_bytes
    from fer_edge.data.load import load_arrays

    keys = [s.key for s in samples]
    key = cache_key(settings, keys, labels)
    record = {"teachers": [Path(t).name for t in settings.teachers], "temperature": settings.temperature,
              "mirror": settings.mirror, "cache_key": key}
    cache = cache_dir / f"teachers-{key}.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        t = np.load(cache)
        if t.shape == (len(samples), len(labels)):
            if log:
                log(f"teacher targets: {len(samples)} images from the cache ({cache.name})")
            return t, record
    total = np.zeros((len(samples), len(labels)), np.float64)
    n_views = 0
    for path in settings.teachers:
        meta, predict = load_teacher(path, threads)
        cols = label_map(meta.labels, labels, Path(path).name)
        x, _, skipped = load_arrays(samples, meta.preprocess, sorted({s.label for s in samples}), progress=progress)
        if skipped or len(x) != len(samples):
            raise ModelError(f"teacher {Path(path).name}: {len(skipped)} training image(s) could not be read "
                             f"through its preprocessing ({skipped[0].key}: {skipped[0].reason})" if skipped else
                             "teacher saw a different number of images than the student")
        views = [x, x[:, :, ::-1]] if settings.mirror else [x]
        for v in views:
            probs = predict(np.ascontiguousarray(v))[:, cols]
            total += soften(probs, settings.temperature)
            n_views += 1
        if log:
            log(f"teacher {Path(path).name}: {len(x)} images x {len(views)} view(s)")
    t = (total / max(1, n_views)).astype(np.float32)
    t /= t.sum(axis=1, keepdims=True)
    if cache is not None:
        import io

        cache.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, t)
        atomic_write_bytes(cache, buf.getvalue())
    return t, record
