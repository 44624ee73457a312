#!/usr/bin/env python
"""Run a benchmark suite on a converted model and write benchmarks/results/<name>/.

    .venv/bin/python benchmarks/bench_suite.py benchmarks/suites/fer2013.yaml --model runs/mobilenet_a025

Writes bench.json / bench.csv / bench.md and the plots (fer-edge bench), plus targets.md /
targets.json (each target computed from figures measured side by side in this run) and
suite_run.json (the suite and the command). Prints the targets as pass / MISS with the figures.
Exit code 0 even when a target is missed (a benchmark, not a test), unless --strict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("suite", nargs="?", default=str(ROOT / "benchmarks" / "suites" / "fer2013.yaml"),
                    help="suite YAML (default: benchmarks/suites/fer2013.yaml)")
    ap.add_argument("--model", help="`fer-edge convert` output folder (overrides the suite's model)")
    ap.add_argument("--name", help="results folder name (default: <suite name>-<model folder name>)")
    ap.add_argument("--out-root", type=Path, default=None, help="where results/<name>/ goes "
                    "(default: benchmarks/results)")
    ap.add_argument("--limit", type=int, default=None, help="score a random N images only (a quick look; "
                    "do not commit such results)")
    ap.add_argument("--threads", default=None, help="override the suite's thread counts, e.g. 1,2,4")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed or not measured")
    a = ap.parse_args(argv)

    from rich.console import Console

    from fer_edge.bench.cli import parse_threads
    from fer_edge.bench.suite import load_suite, print_checks, run_suite
    from fer_edge.errors import FerEdgeError

    console = Console()
    try:
        suite = load_suite(a.suite)
        result, checks, out = run_suite(suite, ROOT, model=a.model, name=a.name, out_root=a.out_root, limit=a.limit,
                                        threads=parse_threads(a.threads) if a.threads else None, console=console)
    except FerEdgeError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    print_checks(checks, console)
    console.print(f"results in {out}", highlight=False)
    if a.strict and any(c.passed is not True for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
