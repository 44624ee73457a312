"""`fer-edge audit`: the data side's command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def audit(
    data: Optional[str] = typer.Argument(
        None, help="Class-per-folder tree (optionally under train/ val/ test/ ...), fer2013.csv, CK+ or "
        "JAFFE folder. Omit for the built-in synthetic demo set."),
    kind: str = typer.Option("auto", "--kind", "-k",
                             help="Reader: auto, folder, fer2013_csv, ckplus, jaffe, synthetic."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full report as JSON here."),
    size: Optional[int] = typer.Option(None, "--size", min=8,
                                       help="Measure sharpness at this model input size (default: native size)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Force the label set and order, comma-separated."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decoding threads (default: CPUs, max 8)."),
) -> None:
    """Audit a data set before training: class balance, image sizes and channels, sharpness, brightness,
    contrast, byte-identical and near-identical duplicates (crossing splits, conflicting labels), constant
    and unreadable images, and LOUD warnings when splits differ in distribution. Exits 0 with warnings;
    non-zero only when the data cannot be read."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fer_edge.atomic import atomic_write_text
    from fer_edge.data.audit import run_audit
    from fer_edge.data.readers import open_dataset

    console = Console()
    if json_out is not None:  # an unwritable --json fails before the audit, not after it
        from fer_edge.atomic import ensure_dir

        if json_out.is_dir():
            from fer_edge.errors import OutputError

            raise OutputError(f"--json {json_out} is a folder; give a file path such as {json_out}/audit.json")
        ensure_dir(json_out.parent, "--json folder")
    ds = open_dataset(data, kind=kind, labels=[x for x in labels.split(",") if x.strip()] if labels else None)
    with Progress(TextColumn("auditing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("audit", total=len(ds.samples))
        report = run_audit(ds, spec_size=size, progress=lambda n: bar.advance(task, n), workers=workers)
    report.render(console)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report.to_dict(), indent=1))
        console.print(f"report written to {json_out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this side's commands to the main app."""
    app.command("audit")(audit)
