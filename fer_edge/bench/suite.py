"""Benchmark suites: a YAML file naming the data, split, thread counts, timing budget and targets;
`run_suite` benchmarks one converted model against it and writes results/<name>/ (see benchmarks/)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fer_edge.atomic import atomic_write_text
from fer_edge.bench.result import BenchResult
from fer_edge.bench.settings import default
from fer_edge.bench.targets import Target, TargetCheck, check_targets, targets_markdown
from fer_edge.errors import ConfigError


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    data: str
    split: str | None = None
    # the bench's timing defaults (fer_edge.bench.settings), a suite's own bounds
    threads: list[int] = Field(default_factory=lambda: list(default("threads")))
    runs: int = Field(default("runs"), ge=1)
    warmup: int = Field(default("warmup"), ge=0)
    max_seconds: float = Field(default("max_seconds"), gt=0)
    model: str | None = None
    targets: list[Target] = []


def load_suite(path: str | os.PathLike) -> Suite:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"suite file not found: {p}")
    from fer_edge import limits
    from fer_edge.errors import LimitError

    try:
        raw = limits.read_yaml_file(p, "suite file")[1] or {}
        return Suite.model_validate(raw)
    except LimitError as exc:
        raise ConfigError(str(exc)) from None
    except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a valid benchmark suite ({exc})") from exc


def _resolve(path: str, root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(os.path.normpath(root / p))


def run_suite(suite: Suite, root: Path, model: str | None = None, name: str | None = None,
              out_root: Path | None = None, limit: int | None = None, threads: list[int] | None = None,
              console=None) -> tuple[BenchResult, list[TargetCheck], Path]:
    """Benchmark `model` (a convert output folder) as the suite says; -> (result, target checks, folder)."""
    from fer_edge.bench.core import run_bench

    model = model or suite.model
    if not model:
        raise ConfigError(f"suite '{suite.name}' names no model: pass --model <convert output folder>")
    model_path = _resolve(model, root)
    name = name or f"{suite.name}-{model_path.name}"
    out = (out_root or root / "benchmarks" / "results") / name
    # tta none: a suite's targets and its published results judge the plain variants, whatever tta the
    # model's metadata asks the board for
    result = run_bench([model_path], _resolve(suite.data, root), split=suite.split, threads=threads or suite.threads,
                       runs=suite.runs, warmup=suite.warmup, max_seconds=suite.max_seconds, limit=limit,
                       out=out, console=console, tta=("none",))
    checks = check_targets(result, suite.targets)
    atomic_write_text(out / "targets.md", f"# Targets - {suite.name}\n\n" + targets_markdown(checks))
    atomic_write_text(out / "targets.json", json.dumps([c.as_dict() for c in checks], indent=2))
    run_info = {"suite": suite.model_dump(), "model": str(model), "limit": limit,
                "command": " ".join(shlex.quote(a) for a in sys.argv), "python": platform.python_version()}
    atomic_write_text(out / "suite_run.json", json.dumps(run_info, indent=2))
    return result, checks, out


def print_checks(checks: list[TargetCheck], console) -> None:
    from rich.table import Table

    table = Table(title="targets (measured side by side in this run)", title_justify="left", header_style="bold")
    for col in ("target", "measured", "limit", "result"):
        table.add_column(col, justify="left" if col == "target" else "right", overflow="fold")
    colour = {True: "green", False: "red", None: "yellow"}
    for c in checks:
        table.add_row(c.name, "-" if c.measured is None else f"{c.measured:.3g}", c.limit,
                      f"[{colour[c.passed]}]{c.status}[/]")
    console.print(table)
    for c in checks:
        console.print(f"  {c.status:4} {c.name}: {c.detail}", highlight=False)
