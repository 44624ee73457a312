"""Shared fixtures: the ../shared folder (real-data checks skip without it) and tiny real models."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# CI replays the same hypothesis examples every run (a red build must be reproducible); local runs
# keep exploring new ones.
from hypothesis import settings as _hyp_settings

_hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
_hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_EDGE_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"real data not available ({SHARED} missing)")
    return SHARED


def load_benchmark(stem: str):
    """A fresh module object of benchmarks/<stem>.py (not a package; loaded by path, so module-level
    settings read from the environment are read again)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(stem, ROOT / "benchmarks" / f"{stem}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def wide_console(monkeypatch):
    """rich folds long words (paths) when it wraps; a wide console keeps CLI messages on one line."""
    monkeypatch.setenv("COLUMNS", "1000")


def wait_until(pred, timeout: float = 5.0) -> bool:
    """Poll `pred` every 10 ms until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def write_class_tree(root: Path, x: np.ndarray, y: np.ndarray, labels: list[str]) -> Path:
    """Generated grey images as a class-per-folder PNG tree root/<label>/<label>_NNNN.png (never research data)."""
    import cv2

    for i, (img, c) in enumerate(zip(x, y)):
        d = root / labels[c]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{labels[c]}_{i:04d}.png"), img[:, :, 0])
    return root


def region_images(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny generated 3-class set: the class is which vertical third of the image is bright."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
    third = size // 3
    for i, c in enumerate(y):
        x[i, :, c * third:(c + 1) * third] += rng.integers(120, 190, dtype=np.uint8)
    return x, y


def texture_images(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A generated 3-class set a translation-invariant network can learn (face-native nets pool globally,
    so the position-coded conftest region set does not suit them): horizontal stripes, vertical stripes,
    or a checkerboard, at a random phase and period, in noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    yy, xx = np.mgrid[0:size, 0:size]
    x = np.empty((n, size, size, 1), np.uint8)
    for i, c in enumerate(y):
        period, phase = rng.integers(4, 8), rng.integers(0, 8)
        h, v = ((yy + phase) // (period // 2)) % 2, ((xx + phase) // (period // 2)) % 2
        pattern = (h, v, h ^ v)[c]
        x[i, :, :, 0] = np.clip(60 + 120 * pattern + rng.normal(0, 25, (size, size)), 0, 255).astype(np.uint8)
    return x, y


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory) -> dict[str, Path]:
    """A trained 3-class 32x32 grey Keras model and its fp32 and int8 TFLite exports, with metadata."""
    import keras
    import tensorflow as tf

    from fer_edge.metadata import ModelMetadata, write_tflite
    from fer_edge.preprocess import PreprocessSpec

    out = tmp_path_factory.mktemp("tiny_model")
    keras.utils.set_random_seed(0)
    x, y = region_images(600)
    inp = keras.Input((32, 32, 1))
    h = keras.layers.Rescaling(1 / 127.5, -1)(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    o = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inp, o)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype("float32"), y, epochs=4, batch_size=32, verbose=0)
    model.save(out / "model_float.keras")
    model.export(str(out / "saved"), verbose=False)

    spec = PreprocessSpec(input_size=32, color="grey")
    labels = ["angry", "happy", "sad"]
    paths = {"keras": out / "model_float.keras"}
    for variant in ("fp32", "int8"):
        conv = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved"))
        if variant == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([x[i:i + 1].astype("float32")] for i in range(200))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.uint8
        meta = ModelMetadata(labels=labels, preprocess=spec, variant=variant,
                             input_dtype="uint8" if variant == "int8" else "float32",
                             output_dtype="uint8" if variant == "int8" else "float32", backbone="tiny_cnn")
        paths[variant] = write_tflite(out / f"model_{variant}.tflite", conv.convert(), meta)
    return paths
