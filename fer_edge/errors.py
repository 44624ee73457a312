"""Typed errors. The library raises these; only the CLI turns them into exit codes.

Every message says what was wrong (the bad value or file) and what to do about it.
"""

from __future__ import annotations


class FerEdgeError(Exception):
    """Base of every error fer-edge raises on purpose."""

    exit_code = 1


class DataError(FerEdgeError):
    """A data set is missing, empty, or laid out in a way no reader understands."""

    exit_code = 3


class ModelError(FerEdgeError):
    """A model file is missing, truncated, lacks metadata or does not match the data."""

    exit_code = 4


class MetadataError(ModelError):
    """A .tflite carries no (or unreadable) fer-edge metadata."""


class WeightsNotFoundError(ModelError):
    """Pretrained weights were asked for but are not on this machine."""


class ConfigError(FerEdgeError):
    """Configuration is invalid: names the key or value and the fix."""

    exit_code = 2


class UnknownNameError(ConfigError):
    """A registry lookup failed; the message lists the valid names and the closest match."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        import difflib

        self.kind, self.name, self.valid = kind, name, sorted(valid)
        close = difflib.get_close_matches(name, self.valid, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(
            f"unknown {kind} '{name}'.{hint} Valid {kind} names: {', '.join(self.valid)}."
        )


class RuntimeUnavailableError(FerEdgeError):
    """No TFLite interpreter (LiteRT, tflite-runtime, tensorflow) can be imported."""

    exit_code = 5


class GateError(FerEdgeError):
    """A quantized model lost more accuracy than the --max-drop / --max-class-drop gate allows."""

    exit_code = 6


class LimitError(DataError):
    """An external file is beyond a limit of fer_edge.limits (too large, nested too deep, too many
    aliases) or is not a regular file. `reason` is short enough for a skipped-files summary."""

    def __init__(self, message: str, reason: str = ""):
        self.reason = reason or message
        super().__init__(message)


class OutputError(FerEdgeError):
    """An output (--out folder, report, model file) cannot be written where it was asked for."""

    exit_code = 7


def settings_error(exc: Exception, flags: bool = True) -> ConfigError:
    """A settings tree's pydantic ValidationError as one ConfigError line, each bad value by its name: the
    command line's `--name` (`flags`) or the Python API's `name`. Shared by every side's command (duck-typed:
    the core does not import pydantic for it)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return ConfigError(str(exc))
    parts = []
    for e in errors():
        loc = [str(p) for p in e.get("loc", ())]
        name = ("--" + "-".join(loc).replace("_", "-")) if flags else ".".join(loc)
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        given = e.get("input")
        # pydantic's own messages ("Input should be 'grey' or 'rgb'") leave out what was typed
        if isinstance(given, (str, int, float)) and not isinstance(given, bool) and str(given) not in msg:
            msg = f"{msg} (got {given!r})"
        parts.append(f"{name}: {msg}" if loc else msg)
    return ConfigError(f"invalid {'option' if flags else 'setting'}(s): " + "; ".join(parts))
