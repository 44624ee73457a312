"""The one TFLite interpreter wrapper, used by bench and by the device runtime.

Order of runtimes: `ai_edge_litert` (LiteRT), then `tflite_runtime`, then `tensorflow.lite`.
TensorFlow is only the last resort, and is imported only if nothing lighter exists.
Takes uint8 model inputs (see `fer_edge.preprocess`) and returns float32 probabilities,
whatever the model's own input/output types and quantization parameters are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from fer_edge.errors import ConfigError, MetadataError, ModelError, RuntimeUnavailableError
from fer_edge.metadata import ModelMetadata, read_metadata

if TYPE_CHECKING:
    from fer_edge.ops import KernelReport
    from fer_edge.preprocess import PreprocessSpec

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_cls: type
    load_delegate: Callable[..., Any]


def find_runtime(prefer: str | None = None) -> Runtime:
    """Import the first available TFLite runtime (or the one named by `prefer`)."""
    order = (prefer,) if prefer else RUNTIMES
    errors = []
    for name in order:
        try:
            if name == "ai_edge_litert":
                import ai_edge_litert
                from ai_edge_litert.interpreter import Interpreter, load_delegate

                return Runtime(name, ai_edge_litert.__version__, Interpreter, load_delegate)
            if name == "tflite_runtime":
                import tflite_runtime
                from tflite_runtime.interpreter import Interpreter, load_delegate

                return Runtime(name, tflite_runtime.__version__, Interpreter, load_delegate)
            if name == "tensorflow":
                import tensorflow as tf

                return Runtime(name, tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate)
            raise ImportError(f"unknown runtime {name!r}; valid: {', '.join(RUNTIMES)}")
        except (ImportError, AttributeError) as exc:
            # tflite-runtime 2.14 against numpy 2 fails inside its extension with this text
            msg = str(exc)
            if "_ARRAY_API" in msg or "numpy.core.multiarray failed" in msg:
                msg = f"{name} was built for numpy 1.x and cannot load under numpy {np.__version__}"
            errors.append(f"{name}: {msg}")
    raise RuntimeUnavailableError(
        "no TFLite runtime could be imported (" + "; ".join(errors) + "). "
        "Install one: pip install 'fer-edge[device]' (ai-edge-litert)."
    )


def resolve_metadata(path: str | os.PathLike[str], labels: list[str] | None = None, input_size: int | None = None,
                     color: str | None = None) -> ModelMetadata:
    """A model's own fer-edge metadata; for a .tflite exported elsewhere (none inside, no sidecar), one
    built from explicit labels (output order), input size and colour, checked against the model's tensors.

    Explicit values that contradict a model's own metadata are an error: they would mislabel results.
    """
    from fer_edge.labels import canonical_label
    from fer_edge.preprocess import PreprocessSpec

    path = Path(path)
    given = [canonical_label(x) for x in labels] if labels else None
    try:
        meta = read_metadata(path)
    except MetadataError:
        if not given or not input_size:
            raise
        return _explicit_metadata(path, given, int(input_size), color, PreprocessSpec)
    clashes = [f"{what} {want} (the model says {have})" for what, want, have in (
        ("--labels", given, meta.labels), ("--input-size", input_size, meta.preprocess.input_size),
        ("--color", color, meta.preprocess.color)) if want is not None and want != have]
    if clashes:
        raise ConfigError(f"{path} carries its own metadata, which the explicit settings contradict: "
                          f"{'; '.join(clashes)}. Leave them out (they are only for models without metadata).")
    return meta


def _explicit_metadata(path: Path, labels: list[str], size: int, color: str | None,
                       spec_cls: type[PreprocessSpec]) -> ModelMetadata:
    try:
        interp = find_runtime().interpreter_cls(model_path=str(path))
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: the interpreter cannot load it ({exc}). If the file is truncated, copy or "
                         "re-export it.") from exc
    shape = [int(v) for v in inp["shape"]]
    channels = shape[-1] if len(shape) == 4 else None
    if len(shape) != 4 or shape[1:3] != [size, size] or channels not in (1, 3):
        raise ModelError(f"{path}: input shape {shape} is not (1, {size}, {size}, 1 or 3) as --input-size {size} says")
    model_color = "grey" if channels == 1 else "rgb"
    if color is not None and color != model_color:
        raise ModelError(f"{path}: --color {color} but the model takes {channels}-channel input ({model_color})")
    k = int(out["shape"][-1])
    if len(labels) != k:
        raise ModelError(f"{path}: --labels names {len(labels)} classes but the model has {k} outputs")
    in_dt, out_dt = np.dtype(inp["dtype"]).name, np.dtype(out["dtype"]).name
    return ModelMetadata(labels=labels, preprocess=spec_cls(input_size=size, color=model_color),
                         variant="int8" if in_dt in ("int8", "uint8") else "fp32", input_dtype=in_dt,
                         output_dtype=out_dt, extra={"metadata": "explicit labels/input size/colour; none in the file"})


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class TFLiteModel:
    """A loaded .tflite with its metadata; `predict(uint8 batch) -> float32 probabilities`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        metadata: ModelMetadata | None = None,
        runtime: str | None = None,
        delegate: str | None = None,
        accelerator: str = "cpu",
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        self.metadata = metadata or read_metadata(self.path)
        self.threads = threads or default_threads()
        self.runtime = find_runtime(runtime)
        self.delegate_note = ""
        # --accelerator gpu: LiteRT's CompiledModel, or None and a note saying why (fer_edge.accelerator)
        from fer_edge.accelerator import open_accelerated

        self._compiled, self.accelerator_note = open_accelerated(self.path, accelerator, self.runtime.name,
                                                                 self.threads)
        t0 = time.perf_counter()
        delegates = self._load_delegate(delegate) if delegate else None
        try:
            kwargs = {"model_path": str(self.path), "num_threads": self.threads}
            if delegates:
                kwargs["experimental_delegates"] = delegates
            self._interp = self.runtime.interpreter_cls(**kwargs)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            hint = ""
            if "version" in str(exc) and self.runtime.name == "tflite_runtime":
                hint = (" tflite-runtime 2.14 cannot run ops of newer TensorFlow exports "
                        "(e.g. dynamic-range FULLY_CONNECTED v12); install ai-edge-litert.")
            raise ModelError(f"{self.path}: the {self.runtime.name} interpreter cannot load it ({exc}).{hint} "
                             "If the file is truncated, copy or re-export it.") from exc
        self.load_seconds = time.perf_counter() - t0
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        # Metadata against tensors, once, here: a mismatch is a refusal at load, never per-frame failures.
        from fer_edge.model_check import check_model

        check_model(self.path, self.metadata, self._interp)

    def _load_delegate(self, spec: str) -> list[Any] | None:
        """Load an external delegate library; fall back to the CPU with a clear note if it cannot load."""
        import ctypes

        try:
            # Opened here first: LiteRT's Delegate fails in its constructor on a missing library and its
            # finaliser then prints an AttributeError traceback to stderr ("Exception ignored in ...").
            ctypes.CDLL(spec)
            return [self.runtime.load_delegate(spec)]
        except (OSError, ValueError, RuntimeError) as exc:
            self.delegate_note = f"delegate {spec!r} unavailable ({exc}); running on the CPU (XNNPACK)"
            return None

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.labels)

    @property
    def input_dtype(self) -> np.dtype:
        dtype: np.dtype[Any] = np.dtype(self._in["dtype"])
        return dtype

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zero = self._in["quantization"]
        if scale == 0 or (scale == 1.0 and zero == 0 and x.dtype == dtype):
            # fer-edge's fully integer exports take raw uint8 pixels (scale 1, zero 0): the crop is the input.
            return x.astype(dtype, copy=False)
        if scale == 1.0 and zero == -128 and dtype == np.int8 and x.dtype == np.uint8:
            # Float-head exports take int8 pixels (scale 1, zero -128): x - 128 is the top bit flipped.
            flipped: np.ndarray = np.bitwise_xor(x, np.uint8(0x80)).view(np.int8)
            return flipped
        info = np.iinfo(dtype)
        q = np.rint(x.astype(np.float32) / scale + zero)
        quantized: np.ndarray = np.clip(q, info.min, info.max).astype(dtype)
        return quantized

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        if y.dtype == np.float32:
            return y
        scale, zero = self._out["quantization"]
        dequantized: np.ndarray = (y.astype(np.float32) - zero) * scale
        return dequantized

    def predict_one(self, x: np.ndarray) -> np.ndarray:
        """One uint8 crop of shape (S,S,C) -> probabilities (K,)."""
        if self._compiled is not None:
            probs: np.ndarray = self._dequantize_output(self._compiled.run(self._quantize_input(x[None])))[0]
            return probs
        self._interp.set_tensor(self._in["index"], self._quantize_input(x[None]))
        self._interp.invoke()
        out: np.ndarray = self._dequantize_output(self._interp.get_tensor(self._out["index"]))[0]
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """uint8 batch (N,S,S,C) -> float32 probabilities (N,K), one invoke per image (batch 1 as on the board)."""
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        return np.stack([self.predict_one(x) for x in batch]) if len(batch) else np.zeros(
            (0, len(self.labels)), np.float32)

    def kernel_report(self) -> KernelReport:
        """This interpreter's op analysis (fer_edge.ops): XNNPACK partitions, ops left on builtin kernels,
        int8 / float ops and the I/O and weight dtypes."""
        from fer_edge.ops import analyse_interpreter

        return analyse_interpreter(self._interp)
