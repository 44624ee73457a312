"""CLI commands of this side (filled in by its owner)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this side's commands to the main app."""
