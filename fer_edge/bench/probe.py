"""Speed and memory of one variant at one thread count, measured in a fresh process.

`python -m fer_edge.bench.probe --kind tflite --model m.tflite --metadata m.json --threads 2
--input x.npy --json out.json` loads the model, times the first inference (cold start), warms
up, times batch-1 calls, and records the process's peak resident memory. A fresh process per
measurement keeps one variant's memory peak, thread pools and caches out of the next one's
figures, and lets TensorFlow's thread count be set before it starts.

The parent side is `run_probe`; the child never imports TensorFlow unless --kind keras.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fer_edge.bench.settings import default


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec - unlike
    ru_maxrss, which a child inherits from the (possibly huge, TensorFlow-laden) parent it forked from."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _import_engine(kind: str, threads: int) -> None:
    """Import what the model needs before the memory baseline, so the delta is the model's own."""
    if kind == "keras":
        import keras

        from fer_edge.bench.backends import set_tf_threads

        if keras.backend.backend() == "tensorflow":
            set_tf_threads(threads)
    else:
        from fer_edge.interpreter import find_runtime

        find_runtime()


def probe(kind: str, model: str, metadata_json: str, threads: int, input_npy: str | None,
          warmup: int, runs: int, max_seconds: float, tta: str = "none", accelerator: str = "cpu") -> dict:
    import numpy as np

    from fer_edge.bench.backends import open_runner
    from fer_edge.bench.timing import measure
    from fer_edge.metadata import ModelMetadata

    meta = ModelMetadata.from_json(Path(metadata_json).read_text(encoding="utf-8"), source=metadata_json)
    x = (np.load(input_npy) if input_npy else
         np.random.default_rng(0).integers(0, 256, meta.preprocess.shape, dtype=np.uint8))
    _import_engine(kind, threads)
    baseline = _peak_rss_mb()
    t0 = time.perf_counter()
    runner = open_runner(kind, model, meta, threads, tta, accelerator)
    runner.predict_one(x)
    cold = time.perf_counter() - t0
    lat = measure(lambda: runner.predict_one(x), warmup=warmup, runs=runs, max_seconds=max_seconds)
    peak = _peak_rss_mb()
    out = {
        "threads": threads, "engine": runner.engine, "latency": lat.as_dict(),
        "cold_start_ms": cold * 1000.0, "load_ms": runner.load_seconds * 1000.0,
        "peak_rss_mb": peak, "baseline_rss_mb": baseline, "rss_delta_mb": peak - baseline,
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    if kind == "tflite":
        from fer_edge.ops import analyse_tflite

        out["kernels"] = analyse_tflite(model, threads).as_dict()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_edge.bench.probe", description=__doc__.split("\n")[0])
    ap.add_argument("--kind", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--metadata", required=True, help="the variant's metadata as JSON (fer-edge/1)")
    # the parent (run_probe) passes every setting: the child has no defaults of its own
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--input", default=None, help=".npy with one uint8 model input; random pixels if absent")
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--max-seconds", type=float, required=True)
    ap.add_argument("--tta", default="none", help="test-time augmentation (fer_edge.tta): none | flip")
    ap.add_argument("--accelerator", default="cpu", help="cpu | gpu (fer_edge.accelerator)")
    ap.add_argument("--json", required=True, help="where to write the result")
    a = ap.parse_args(argv)
    try:
        res = probe(a.kind, a.model, a.metadata, a.threads, a.input, a.warmup, a.runs, a.max_seconds, a.tta,
                    a.accelerator)
    except Exception as exc:  # the parent turns this into the variant's error for this thread count
        res = {"error": f"{type(exc).__name__}: {exc}"}
    Path(a.json).write_text(json.dumps(res), encoding="utf-8")
    return 0 if "error" not in res else 1


def run_probe(kind: str, model: Path, metadata_json: str, threads: int, image=None,
              warmup: int = default("warmup"), runs: int = default("runs"), max_seconds: float = default("max_seconds"),
              timeout: float | None = None, tta: str = "none", accelerator: str = default("accelerator")) -> dict:
    """Run `probe` in a child process; returns its result dict, or {"error": ...} if it failed or hung."""
    import numpy as np

    timeout = timeout or 180.0 + 4 * max_seconds
    with tempfile.TemporaryDirectory(prefix="fer-edge-probe-") as tmp:
        meta_path, out_path = Path(tmp) / "meta.json", Path(tmp) / "out.json"
        meta_path.write_text(metadata_json, encoding="utf-8")
        cmd = [sys.executable, "-m", "fer_edge.bench.probe", "--kind", kind, "--model", str(model),
               "--metadata", str(meta_path), "--threads", str(threads), "--warmup", str(warmup),
               "--runs", str(runs), "--max-seconds", str(max_seconds), "--json", str(out_path), "--tta", tta,
               "--accelerator", accelerator]
        if image is not None:
            np.save(Path(tmp) / "x.npy", np.ascontiguousarray(image, np.uint8))
            cmd += ["--input", str(Path(tmp) / "x.npy")]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"the speed probe did not finish within {timeout:.0f} s"}
        if out_path.is_file():
            return json.loads(out_path.read_text(encoding="utf-8"))
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        return {"error": f"the speed probe exited with code {proc.returncode}: {' | '.join(tail)}"}


if __name__ == "__main__":
    sys.exit(main())
