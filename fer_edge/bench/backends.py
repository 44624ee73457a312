"""How each kind of model file is loaded and called: one small runner per kind, looked up by name.

Every runner takes uint8-valued pixels (normalisation is inside the model) and returns float32
probabilities. TensorFlow is imported only by the Keras runner, only when it is opened.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from fer_edge.errors import FerEdgeError, ModelError
from fer_edge.metadata import ModelMetadata
from fer_edge.registry import Registry


class Runner(Protocol):
    load_seconds: float
    engine: str                                  # what actually runs it, e.g. "ai_edge_litert 2.3.0"

    def predict(self, batch: np.ndarray) -> np.ndarray: ...      # (N,S,S,C) uint8 -> (N,K) float32
    def predict_one(self, x: np.ndarray) -> np.ndarray: ...      # (S,S,C) uint8 -> (K,) float32, batch 1


BACKENDS: Registry[type] = Registry("model backend")


@BACKENDS.register("tflite")
class TFLiteRunner:
    def __init__(self, path, metadata: ModelMetadata, threads: int, accelerator: str = "cpu"):
        from fer_edge.interpreter import TFLiteModel

        self.model = TFLiteModel(path, threads=threads, metadata=metadata, accelerator=accelerator)
        self.load_seconds = self.model.load_seconds
        self.engine = f"{self.model.runtime.name} {self.model.runtime.version}"
        # --accelerator gpu: what ran it, or why it fell back to the CPU (the row then says so)
        self.note = self.model.accelerator_note
        if accelerator != "cpu":
            self.engine += " CompiledModel GPU" if self.model._compiled is not None else " CPU (no GPU adapter)"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.model.predict(batch)

    def predict_one(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_one(x)


def set_tf_threads(threads: int) -> None:
    """Pin TensorFlow's CPU pools; takes effect only before TF runs its first op (hence a fresh process)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: keep its pools, the figure says so
        pass


@BACKENDS.register("keras")
class KerasRunner:
    """The float reference. Batch-1 timing uses predict_on_batch: `model(x)` and `predict()` add
    per-call overheads of 60-560 ms that no deployed model pays (TOOLCHAIN.md)."""

    def __init__(self, path, metadata: ModelMetadata, threads: int | None = None):
        try:
            import keras
        except ImportError as exc:
            raise ModelError(
                f"{path}: the float Keras reference needs TensorFlow/Keras, which is not installed here "
                f"({exc}); install 'fer-edge[host]', or bench the .tflite files alone (the fp32 TFLite "
                "then stands in as the reference)") from exc
        if threads and keras.backend.backend() == "tensorflow":
            set_tf_threads(threads)
        t0 = time.perf_counter()
        try:
            self.model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises ValueError/OSError/zipfile errors for damaged files
            raise ModelError(f"{path}: Keras cannot load it ({type(exc).__name__}: {exc}); "
                             "copy or re-export the model") from exc
        self.load_seconds = time.perf_counter() - t0
        self.engine = f"keras {keras.__version__} ({keras.backend.backend()})"
        self.n_classes = len(metadata.labels)

    def predict(self, batch: np.ndarray, chunk: int = 256) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        outs = [np.asarray(self.model.predict_on_batch(batch[i:i + chunk].astype(np.float32)), np.float32)
                for i in range(0, len(batch), chunk)]
        return np.concatenate(outs) if outs else np.zeros((0, self.n_classes), np.float32)

    def predict_one(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(x[None].astype(np.float32)), np.float32)[0]


class TTARunner:
    """Any runner, its probabilities averaged over the test-time augmentation's views (fer_edge.tta)."""

    def __init__(self, inner: Runner, mode: str):
        from fer_edge.tta import with_tta

        self.inner, self.load_seconds, self.engine = inner, inner.load_seconds, inner.engine
        self.predict = with_tta(inner.predict, mode)
        self.predict_one = with_tta(inner.predict_one, mode)


def open_runner(kind: str, path, metadata: ModelMetadata, threads: int, tta: str = "none",
                accelerator: str = "cpu") -> Runner:
    try:
        cls = BACKENDS.get(kind)
    except FerEdgeError as exc:
        raise ModelError(f"{path}: {exc}") from None
    # the accelerator is a .tflite matter; the Keras float reference always runs where Keras runs
    runner = cls(path, metadata, threads, accelerator) if kind == "tflite" else cls(path, metadata, threads)
    return runner if tta == "none" else TTARunner(runner, tta)
