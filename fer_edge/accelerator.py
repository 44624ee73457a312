"""Hardware accelerators the current way: LiteRT's CompiledModel, with a CPU fallback that says why.

`--accelerator cpu` (the default) is the classic Interpreter with XNNPACK (fer_edge.interpreter).
`--accelerator gpu` compiles the model with LiteRT 2.x's CompiledModel for the GPU (WebGPU/Vulkan
there; ops the GPU cannot run stay on the CPU). Where no GPU adapter exists LiteRT raises
RuntimeError - even when asked for GPU|CPU - so `open_accelerated` returns None with a one-line
note and the caller keeps its CPU interpreter. A Raspberry Pi has no usable GPU path here: the
CPU with XNNPACK is its fast path; the option is for boards and hosts that have one.

Only ai_edge_litert has CompiledModel; tflite_runtime and tensorflow.lite fall back the same way.
Imports happen inside functions: the device side stays light and never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from fer_edge.errors import ConfigError

ACCELERATORS = ("cpu", "gpu")


def check_accelerator(name: str | None) -> str:
    value = (name or "cpu").strip().lower()
    if value not in ACCELERATORS:
        import difflib

        close = difflib.get_close_matches(value, ACCELERATORS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown accelerator {name!r}{hint}; valid: {', '.join(ACCELERATORS)}")
    return value


@contextlib.contextmanager
def _native_stderr(sink: list[str]) -> Iterator[None]:
    """Collect what native code writes to fd 2 meanwhile (LiteRT, Dawn and Vulkan log there, not through
    Python): the fallback then says why in one line instead of a screenful of C++ traces."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.extend(tmp.read().decode("utf-8", "replace").splitlines())


# Known causes, most telling first (the log also holds unrelated misses, e.g. NPU vendor plugins).
_REASONS = [re.compile(p, re.IGNORECASE) for p in (r"couldn't load vulkan: ?([^\n]*)", r"(no (?:gpu )?adapter[^\n]*)",
                                                   r"(failed to (?:get or create|initialize)[^\n]*webgpu[^\n]*)")]


def _reason(exc: BaseException, log: list[str]) -> str:
    """The most telling line: a known cause from the native log, else the exception's last source position."""
    for pattern in _REASONS:
        for line in log:
            m = pattern.search(line)
            if m:
                return ("no Vulkan: " if pattern is _REASONS[0] else "") + m.group(1).strip().rstrip(".")
    lines = [ln.strip().lstrip("└ ").strip() for ln in str(exc).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    m = re.fullmatch(r"ERROR: \[(.+)\]", last)
    return f"{type(exc).__name__} at {m.group(1)}" if m else f"{type(exc).__name__}: {last or 'no detail'}"[:200]


class CompiledRunner:
    """One .tflite compiled by LiteRT for `hardware` ("gpu": GPU with CPU fallback for its unsupported ops;
    "cpu": LiteRT's CPU accelerator, which runs the same code path and is what the tests can exercise)."""

    def __init__(self, path: str | os.PathLike[str], hardware: str = "gpu", threads: int = 1):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator as HA

        self.path, self.hardware = Path(path), hardware
        accel = (HA.GPU | HA.CPU) if hardware == "gpu" else HA.CPU
        if hardware == "cpu":
            from ai_edge_litert.options import CpuOptions, Options

            self._model = CompiledModel.from_file(
                str(self.path), options=Options(hardware_accelerators=accel, cpu_options=CpuOptions(
                    num_threads=max(1, int(threads)))))
        else:
            self._model = CompiledModel.from_file(str(self.path), hardware_accel=accel)
        self._inputs = self._model.create_input_buffers(0)
        self._outputs = self._model.create_output_buffers(0)
        sig = next(iter(self._model.get_signature_list()))
        out = next(iter(self._model.get_output_tensor_details(sig).values()))
        self._out_shape = tuple(int(v) for v in out["shape"])
        self._out_dtype = np.dtype(out["dtype"])
        self.fully_accelerated = bool(self._model.is_fully_accelerated())

    def run(self, x: np.ndarray) -> np.ndarray:
        """One input tensor (already in the model's dtype and shape) -> the raw output tensor."""
        self._inputs[0].write(np.ascontiguousarray(x))
        self._model.run_by_index(0, self._inputs, self._outputs)
        n = int(np.prod(self._out_shape))
        return np.asarray(self._outputs[0].read(n, self._out_dtype)).reshape(self._out_shape)

    def describe(self) -> str:
        where = "fully on the GPU" if self.fully_accelerated else "GPU with some ops on the CPU"
        return f"LiteRT CompiledModel, {where}" if self.hardware == "gpu" else "LiteRT CompiledModel on the CPU"


def open_accelerated(path: str | os.PathLike[str], accelerator: str, runtime_name: str,
                     threads: int = 1) -> tuple[CompiledRunner | None, str]:
    """(runner, note) for `accelerator`; (None, note saying why) when it cannot run here - the caller then
    keeps its CPU interpreter. accelerator "cpu" is that interpreter: (None, "")."""
    accelerator = check_accelerator(accelerator)
    if accelerator == "cpu":
        return None, ""
    if runtime_name != "ai_edge_litert":
        return None, (f"accelerator {accelerator} needs ai-edge-litert's CompiledModel, not {runtime_name}; "
                      "running on the CPU (XNNPACK)")
    log: list[str] = []
    try:
        with _native_stderr(log):
            runner = CompiledRunner(path, accelerator, threads)
    except ImportError as exc:
        return None, f"accelerator {accelerator}: this ai-edge-litert has no CompiledModel ({exc}); running on the CPU"
    except (RuntimeError, ValueError, OSError) as exc:
        return None, (f"accelerator {accelerator} unavailable here ({_reason(exc, log)}): no GPU adapter; "
                      "running on the CPU (XNNPACK)")
    return runner, f"accelerator {accelerator}: {runner.describe()}"
