"""SIGINT and SIGTERM stop every long command promptly, the same way.

The console script turns both into KeyboardInterrupt in the main thread (Python does that for
SIGINT only), so `convert`, `bench`, `audit` and `recipe` unwind through their `finally` blocks and
atomic writes: outputs already finished stay, nothing half-written is left, exit 130 / 143. The
daemon (`run`) installs its own handlers while it runs (stop the capture, flush the sinks) and
restores these after. A second signal while unwinding is ignored rather than interrupting the
cleanup itself.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

_last: list[str] = []


def _handler(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _last:  # already unwinding: let the cleanup finish
        return
    _last.append(name)
    raise KeyboardInterrupt(name)


def install_terminate_as_interrupt() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(sig, _handler)
        except (ValueError, OSError):  # not settable here (embedded interpreter)
            pass


def last_signal() -> str | None:
    return _last[0] if _last else None


def silence_stdout() -> None:
    """Point stdout at /dev/null after the reader of a pipe went away, so the interpreter's final
    flush cannot raise BrokenPipeError again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
