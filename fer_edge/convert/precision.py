"""Mixed bfloat16 training where the CPU computes bfloat16 natively, float32 elsewhere.

Measured (TOOLCHAIN): `mixed_bfloat16` trains dense convolutions 1.26x faster on AVX512-BF16 and 1.5-2.9x on
AMX, but depthwise ones 0.75x, and without those instructions it is emulated and slower. So "auto" picks it
only for a face-native (dense) backbone on a CPU with amx_bf16 or avx512_bf16, or on a GPU. The exported model
is always rebuilt under float32 (the int8 converter fails on bfloat16 casts), so precision only changes
training speed, never the file a board runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

PRECISIONS = ("auto", "float32", "mixed_bfloat16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The bfloat16 instruction sets this CPU advertises (empty where none, or off Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return [f for f in BF16_FLAGS if f in flags]


def resolve_precision(precision: str, dense: bool, gpu: bool = False,
                      cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, str]:
    """(policy name, why) for a requested precision."""
    if precision not in PRECISIONS:
        from fer_edge.errors import UnknownNameError

        raise UnknownNameError("precision", precision, list(PRECISIONS))
    if precision != "auto":
        return precision, "requested"
    if not dense:
        return "float32", "auto: depthwise backbone (bfloat16 measured slower for it)"
    if gpu:
        return "mixed_bfloat16", "auto: GPU"
    flags = cpu_bf16_flags(cpuinfo)
    if flags:
        return "mixed_bfloat16", f"auto: CPU has {', '.join(flags)}"
    return "float32", "auto: CPU has no bfloat16 instructions (amx_bf16, avx512_bf16)"


@contextlib.contextmanager
def policy(name: str) -> Iterator[None]:
    """Build layers under Keras dtype policy `name`; the previous global policy is restored after."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def policy_scope(scope: Callable[[], contextlib.AbstractContextManager], name: str):
    """A scope factory that enters `scope()` (e.g. a distribution strategy's) under dtype policy `name`."""

    def scoped():
        stack = contextlib.ExitStack()
        stack.enter_context(policy(name))
        stack.enter_context(scope())
        return stack

    return scoped
