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
                   "fer_edge.recipes")

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


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: library errors become one red line and an exit code."""
    err = Console(stderr=True)
    try:
        # Without standalone mode, click returns (not raises) the code of a command's typer.Exit(n).
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and rv:
            return rv
    except FerEdgeError as exc:
        from rich.markup import escape

        # Messages quote user input and syntax such as "[/PREFIX]": never read them as markup.
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("[red]aborted[/]")
        return 130
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
