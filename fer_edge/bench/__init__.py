"""Benchmark side: what each exported model costs and loses (`fer-edge bench`, `fer-edge explain`).

`run_bench` and `run_explain` are imported on first use, so `python -m fer_edge.bench.probe`
(run once per variant and thread count) starts without loading the reporting code.
"""

from __future__ import annotations

__all__ = ["run_bench", "BenchResult", "run_explain"]


def __getattr__(name: str):
    if name == "run_bench":
        from fer_edge.bench.core import run_bench

        return run_bench
    if name == "BenchResult":
        from fer_edge.bench.result import BenchResult

        return BenchResult
    if name == "run_explain":
        from fer_edge.bench.explain import run_explain

        return run_explain
    raise AttributeError(f"module 'fer_edge.bench' has no attribute {name!r}")
