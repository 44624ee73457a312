"""The `fer-edge` command: a thin Typer app. Each side registers its own sub-commands.

Sub-command modules import heavy packages (TensorFlow, OpenCV, LiteRT) inside the
command functions, so `fer-edge --help` and the device commands stay fast and TF-free.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from fer_edge import __version__
from fer_edge.errors import FerEdgeError

app = typer.Typer(
    name="fer-edge",
    help="Facial expression recognition at the edge: fine-tune and quantize on the host "
    "(convert), measure what quantization costs (bench, explain), run on the board (run).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# One module per side; each exposes register(app).
COMMAND_MODULES = ("fer_edge.convert.cli", "fer_edge.data.cli", "fer_edge.bench.cli", "fer_edge.runtime.cli",
                   "fer_edge.recipes.cli")

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _version(value: bool) -> None:
    if value:
        print(f"fer-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


def _interrupted(err: Console, sig: str | None) -> None:
    # One code for both signals (130, as `convert` has always exited on SIGTERM): "stopped by request".
    err.print(f"[red]{'terminated' if sig == 'SIGTERM' else 'interrupted'}[/] ({sig or 'SIGINT'}): stopped "
              "before the end; finished outputs are complete, nothing half-written was left", highlight=False,
              soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: every error becomes one line and an exit code, never a traceback.

    Exit codes: 2 usage or configuration, 3 data, 4 model, 5 no runtime, 6 gate, 7 output,
    130 interrupted (SIGINT or SIGTERM), 1 anything else. FER_EDGE_DEBUG=1 shows the
    traceback of an unexpected error.
    """
    import os

    from fer_edge import signals
    from fer_edge.usage import NoArgsIsHelpError, is_usage_error, usage_line

    err = Console(stderr=True)
    signals.install_terminate_as_interrupt()
    try:
        # Without standalone mode, click returns (not raises) the code of a command's typer.Exit(n).
        rv = app(args=argv, standalone_mode=False)
        if rv == 130 and signals.last_signal():  # typer turned our KeyboardInterrupt into a silent 130
            _interrupted(err, signals.last_signal())
        if isinstance(rv, int) and rv:
            return rv
    except FerEdgeError as exc:
        from rich.markup import escape

        # Messages quote user input and syntax such as "[/PREFIX]": never read them as markup.
        # soft_wrap: one line whatever the terminal width (rich wraps at 80 columns off a terminal);
        # a message that is a list (config errors) keeps its own line breaks.
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # typer turns Ctrl-C into a silent Exit(130)
            _interrupted(err, signals.last_signal())
        return exc.exit_code
    except typer.Abort:
        err.print("[red]aborted[/]")
        return 130
    except KeyboardInterrupt:
        _interrupted(err, signals.last_signal())
        return 130
    except BrokenPipeError:
        # `fer-edge ... | head`: the reader left. End quietly, and keep Python's exit-time flush of
        # stdout from printing "Exception ignored ... BrokenPipeError".
        signals.silence_stdout()
        return 0
    except Exception as exc:
        if NoArgsIsHelpError and isinstance(exc, NoArgsIsHelpError):
            return 0  # the help was printed; a bare `fer-edge` is not an error
        if is_usage_error(exc):
            line = usage_line(exc, argv)
            if line:
                print(line, file=sys.stderr)
            return getattr(exc, "exit_code", 2)
        if os.environ.get("FER_EDGE_DEBUG"):
            raise
        # A fault nobody anticipated is still one line: the type, the text, and how to see more.
        msg = " ".join(str(exc).split())[:500]
        print(f"error: {type(exc).__name__}: {msg} (unexpected; rerun with FER_EDGE_DEBUG=1 for the "
              "traceback and report it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
