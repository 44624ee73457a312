#!/usr/bin/env python
"""Two or more .tflite files timed side by side: interleaved invokes in one process, same threads.

    .venv/bin/python benchmarks/ab_latency.py A.tflite B.tflite [--threads 1,2] [--runs 1500] [--name NAME]

Why interleaved: on a shared machine the load drifts within seconds, so timing A and then B measures the
drift as much as the models. Alternating one invoke of each, many times, gives both the same conditions;
their p50 ratio is the figure to quote (absolute times are this machine's, at this load). The first file is
the baseline of the speed-up column. Writes benchmarks/results/ab_latency/<name>.{md,json} with the CPU,
its int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, ARM sdot - what decides whether int8 pays) and the
load average. LiteRT only (no TensorFlow).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")   # x86 VNNI/AMX, ARM sdot/udot


def cpu_int8_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    words = set(text.split())
    return [f for f in DOT_FLAGS if f in words]


def time_interleaved(paths: list[Path], threads: int, runs: int, warmup: int = 50) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    its = []
    for p in paths:
        it = Interpreter(model_path=str(p), num_threads=threads)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        for _ in range(warmup):
            it.invoke()
        its.append(it)
    samples: list[list[float]] = [[] for _ in its]
    for _ in range(runs):
        for i, it in enumerate(its):
            t0 = time.perf_counter()
            it.invoke()
            samples[i].append(time.perf_counter() - t0)
    return {str(p): float(np.median(s) * 1000) for p, s in zip(paths, samples)}


def main(argv: list[str] | None = None) -> int:
    from fer_edge.machine import cpu_name

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=1500)
    ap.add_argument("--name", default="ab")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ab_latency")
    a = ap.parse_args(argv)
    missing = [str(m) for m in a.models if not m.is_file()]
    if len(a.models) < 2 or missing:
        ap.error(f"give two or more .tflite files (missing: {', '.join(missing) or 'none'})")
    threads = [int(t) for t in a.threads.split(",")]
    load0 = os.getloadavg()
    rows = []
    for th in threads:
        p50 = time_interleaved(a.models, th, a.runs)
        base = p50[str(a.models[0])]
        for m in a.models:
            rows.append({"model": str(m), "threads": th, "p50_ms": round(p50[str(m)], 4),
                         "speedup_vs_first": round(base / p50[str(m)], 3)})
    rec = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_name(),
           "cores": os.cpu_count(), "int8_dot_instructions": cpu_int8_flags(), "runs": a.runs,
           "load_average_start": [round(x, 2) for x in load0],
           "load_average_end": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.name}.json").write_text(json.dumps(rec, indent=1) + "\n")
    flags = ", ".join(rec["int8_dot_instructions"]) or "none"
    md = [f"# Interleaved latency: {a.name}", "",
          f"{rec['date']}; {rec['cpu']}, {rec['cores']} cores; int8 dot-product instructions: {flags}; "
          f"load average {rec['load_average_start']} at start, {rec['load_average_end']} at end; "
          f"{a.runs} interleaved invokes per model and thread count, batch 1, p50.", "",
          "| model | threads | p50 ms | speed-up vs the first |", "|---|---|---|---|"]
    md += [f"| {r['model']} | {r['threads']} | {r['p50_ms']:.3f} | x{r['speedup_vs_first']:.2f} |" for r in rows]
    (a.out / f"{a.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
