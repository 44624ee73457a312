"""Usage errors as one line: what was wrong, the closest valid choice, where the help is.

typer 0.29 bundles its own click (`typer._click`) and no longer installs `click`, so the
exception classes are found from typer's public `BadParameter` rather than imported by module
name: this works on the bundled click and on an installed one alike.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

import typer

_CLICK = sys.modules[next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException").__module__]
ClickException = _CLICK.ClickException
UsageError = _CLICK.UsageError
NoSuchOption = getattr(_CLICK, "NoSuchOption", ())
NoArgsIsHelpError = getattr(_CLICK, "NoArgsIsHelpError", ())
BadParameter = _CLICK.BadParameter


def _given_value(param: Any, argv: list[str]) -> str | None:
    """The text the user gave for `param` on the command line (click's message does not always quote it)."""
    opts = list(getattr(param, "opts", []) or [])
    for i, arg in enumerate(argv):
        for o in opts:
            if arg == o and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(o + "="):
                return arg[len(o) + 1:]
    return None


def _options_of(ctx: Any) -> list[str]:
    cmd = getattr(ctx, "command", None)
    out: list[str] = []
    for p in getattr(cmd, "params", []) or []:
        out += [o for o in (list(getattr(p, "opts", [])) + list(getattr(p, "secondary_opts", [])))
                if o.startswith("--")]
    return out + ["--help"]


def usage_line(exc: Exception, argv: list[str] | None = None) -> str:
    """The one line printed for a click usage error (no traceback, no box)."""
    ctx = getattr(exc, "ctx", None)
    if NoSuchOption and isinstance(exc, NoSuchOption):
        valid = _options_of(ctx)
        close = list(exc.possibilities or []) or difflib.get_close_matches(exc.option_name, valid, n=1, cutoff=0.6)
        msg = f"no such option: {exc.option_name}."
        msg += (f" Did you mean {close[0]}?" if close else f" Valid options: {', '.join(valid)}.")
    else:
        fmt = getattr(exc, "format_message", None)   # a click exception (found at run time, see _CLICK)
        msg = " ".join((fmt() if callable(fmt) else str(exc)).split())
        if isinstance(exc, BadParameter) and getattr(exc, "param", None) is not None:
            given = _given_value(exc.param, list(sys.argv[1:] if argv is None else argv))
            if given is not None and repr(given) not in msg and given not in msg:
                msg = f"{msg.rstrip('.')} (got {given!r})."
    prog = getattr(ctx, "command_path", None) or "fer-edge"
    return f"error: {msg} (see `{prog} --help`)" if msg else ""


def is_usage_error(exc: BaseException) -> bool:
    return isinstance(exc, ClickException)
