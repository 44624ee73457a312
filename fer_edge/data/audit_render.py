"""Rich rendering of an AuditReport: one table per topic, then the warnings, loud."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fer_edge.data.audit import AuditReport, DuplicateStats


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:,.{digits}f}"


def render_report(report: "AuditReport", console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    console = console or Console()
    splits = list(report.splits.values())
    console.print(f"[bold]Data audit[/] of {report.source} (kind {report.kind}): {report.samples:,} samples, "
                  f"{len(report.labels)} classes, {report.seconds:.1f} s", highlight=False)

    t = Table(title="Class counts", title_justify="left")
    t.add_column("class")
    for s in splits:
        t.add_column(s.name, justify="right")
    classes = list(dict.fromkeys(k for s in splits for k in s.class_counts))
    for c in classes:
        t.add_row(c, *[f"{s.class_counts.get(c, 0):,}" for s in splits])
    t.add_row("[bold]total[/]", *[f"[bold]{s.images:,}[/]" for s in splits])
    t.add_row("imbalance (max/min)", *[_fmt(s.imbalance, 1) + ("x" if s.imbalance else "") for s in splits])
    console.print(t)

    t = Table(title="Images" + (f" (sharpness at {report.spec_size} px)" if report.spec_size else ""),
              title_justify="left")
    t.add_column("measure")
    for s in splits:
        t.add_column(s.name, justify="right")
    rows = [
        ("sizes (top)", [", ".join(f"{k} ({v:,})" for k, v in list(s.sizes.items())[:2]) for s in splits]),
        ("channels", [", ".join(f"{k} ({v:,})" for k, v in s.channels.items()) for s in splits]),
        ("sharpness median (Laplacian var)", [_fmt(s.sharpness.median) for s in splits]),
        ("sharpness p10 / p90", [f"{_fmt(s.sharpness.p10)} / {_fmt(s.sharpness.p90)}" for s in splits]),
        ("brightness median", [_fmt(s.brightness.median, 1) for s in splits]),
        ("contrast median (pixel std)", [_fmt(s.contrast.median, 1) for s in splits]),
        ("constant / all black", [f"{s.constant} / {s.all_black}" for s in splits]),
        ("unreadable", [str(s.unreadable) for s in splits]),
    ]
    for name, vals in rows:
        t.add_row(name, *vals)
    console.print(t)

    t = Table(title="Duplicates", title_justify="left")
    for col in ("duplicates", "groups", "images", "redundant", "label conflicts", "cross splits"):
        t.add_column(col, justify="right" if col != "duplicates" else "left")
    for d in (report.exact, report.near):
        t.add_row(_dup_name(d), f"{d.groups:,}", f"{d.images:,}", f"{d.redundant:,}", f"{len(d.conflicting):,}",
                  f"{len(d.crossing):,}")
    console.print(t)

    if report.warnings:
        body = "\n".join(f"[yellow]![/] {escape(w)}" for w in report.warnings)
        console.print(Panel(body, title=f"[bold red]{len(report.warnings)} warning(s)[/]", border_style="red"),
                      highlight=False)
    else:
        console.print("[green]no warnings[/]")


def _dup_name(d: "DuplicateStats") -> str:
    return "byte-identical" if d.method == "sha1" else f"near ({d.method})"
