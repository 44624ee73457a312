#!/usr/bin/env python
"""Where full-integer int8 loses accuracy, and what keeping a few layers in float buys back.

    .venv/bin/python benchmarks/int8_islands.py runs/fer2013-mobilenet-a025-96 [--data ../shared/data/fer2013]

1. TFLite's QuantizationDebugger runs the int8 model layer by layer against float on validation crops:
   rmse/scale per layer (0.29 is pure rounding; larger means error carried in from upstream weights).
2. The same int8 export with some layers left in float ("islands", TFLite selective quantization,
   `denylisted_nodes`), scored on validation (to choose) and on the reported split (to report), and timed
   against the full-int8 model in one process at the same thread count.

Writes results/int8_islands/<run name>.md and .json. Needs TensorFlow (host side).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Candidate islands, named by the Keras layers whose outputs stay float (MobileNet v1 naming).
ISLANDS = {
    "none (full int8)": [],
    "conv1": ["conv1"],
    "conv_pw_2": ["conv_pw_2"],
    "conv_pw_2 + conv_pw_13": ["conv_pw_2", "conv_pw_13"],
    "conv_pw_1..3 + conv_dw_3": ["conv_pw_1", "conv_pw_2", "conv_dw_3", "conv_pw_3"],
}


def _timed(content: bytes, x: np.ndarray, threads: int, runs: int = 300) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    sample = x[:1].astype(np.float32)
    for _ in range(20):
        it.set_tensor(inp, sample)
        it.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.set_tensor(inp, sample)
        it.invoke()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _scores(content: bytes, x: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    from fer_edge.metrics import score

    it = Interpreter(model_content=content, num_threads=2)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    probs = np.zeros((len(x), len(labels)), np.float32)
    for k in range(len(x)):
        it.set_tensor(i, x[k:k + 1].astype(np.float32))
        it.invoke()
        probs[k] = it.get_tensor(o)[0]
    s = score(y, probs, labels)
    return {"accuracy": round(100 * s.accuracy, 2), "mean_recall": round(100 * s.mean_recall, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("run", type=Path, help="a fer-edge convert output folder (model_float.keras, convert.json)")
    ap.add_argument("--data", default=None, help="data set (default: the one the run was trained on)")
    ap.add_argument("--calib", type=int, default=300, help="calibration crops from train (default 300, as convert)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_islands")
    a = ap.parse_args(argv)

    import tempfile

    import keras
    import tensorflow as tf

    from fer_edge.atomic import atomic_write_text
    from fer_edge.convert.export import calibration_set, export_saved_model
    from fer_edge.data.load import load_arrays
    from fer_edge.data.readers import open_dataset
    from fer_edge.data.splits import make_splits
    from fer_edge.preprocess import PreprocessSpec

    record = json.loads((a.run / "convert.json").read_text())
    cfg = record["config"]
    spec = PreprocessSpec(**record["preprocess"])
    ds = open_dataset(a.data or record["data"]["source"], cfg.get("kind", "auto"), None)
    labels = list(ds.labels)
    splits = make_splits(ds, val_fraction=cfg["val_fraction"], seed=cfg["seed"])
    test_name = record["data"].get("test_split") or "test"
    x_tr, y_tr, _ = load_arrays(splits["train"], spec, labels)
    calib = calibration_set(x_tr, y_tr, labels, a.calib, cfg["seed"])
    x_val, y_val, _ = load_arrays(splits["val"], spec, labels)
    x_te, y_te, _ = load_arrays(splits[test_name], spec, labels)

    model = keras.models.load_model(a.run / "model_float.keras")
    with tempfile.TemporaryDirectory() as tmp:
        sm = export_saved_model(model, Path(tmp) / "sm")
        conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib.x[i:i + 1].astype(np.float32)] for i in range(len(calib.x)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        debug_set = lambda: ([x_val[i:i + 1].astype(np.float32)] for i in range(200))  # noqa: E731
        dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=debug_set)
        dbg.run()
        buf = io.StringIO()
        dbg.layer_statistics_dump(buf)
        layers = list(csv.DictReader(io.StringIO(buf.getvalue())))
        float_content = tf.lite.TFLiteConverter.from_saved_model(str(sm)).convert()
        variants = {"fp32": float_content}
        for tag, keys in ISLANDS.items():
            deny = [r["tensor_name"] for r in layers if any(f"/{k}_bn_1/" in r["tensor_name"] for k in keys)]
            if len(deny) != len(keys):
                print(f"skipping '{tag}': not every layer found in this model", file=sys.stderr)
                continue
            opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny)
            d = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=debug_set, debug_options=opts)
            variants[tag] = d.get_nondebug_quantized_model()

    rows = []
    for tag, content in variants.items():
        rows.append({"variant": tag, "val": _scores(content, x_val, y_val, labels),
                     test_name: _scores(content, x_te, y_te, labels), "size_bytes": len(content)})
        print(tag, rows[-1], flush=True)
    # Timing side by side, interleaved rounds, one process, same thread count.
    ms: dict[str, list[float]] = {t: [] for t in variants}
    for _ in range(3):
        for tag, content in variants.items():
            ms[tag].append(_timed(content, x_val, a.threads))
    for r in rows:
        r["p50_ms"] = round(float(np.median(ms[r["variant"]])), 3)
    layer_rows = [{"op": r["op_name"], "tensor": r["tensor_name"].split(";")[-1][-70:],
                   "range": round(255 * float(r["scale"]), 3),
                   "rmse_per_scale": round(math.sqrt(float(r["mean_squared_error"])) / float(r["scale"]), 3)}
                  for r in layers]
    name = a.run.name
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / f"{name}.json", json.dumps({"run": str(a.run), "test_split": test_name,
                                                          "threads": a.threads, "variants": rows,
                                                          "layers": layer_rows}, indent=1))
    ref = rows[0]
    lines = [f"# int8 islands: `{name}`", "",
             f"Validation ({len(y_val)} crops, carved from train: choose here) and {test_name} ({len(y_te)}: report "
             f"here). Float input/output on every variant, so only the body differs. p50 batch-1 latency at "
             f"{a.threads} threads, interleaved rounds in one process.", "",
             f"| variant | val acc | val recall | {test_name} acc | {test_name} recall | drop vs fp32 (pp) | p50 ms | "
             "vs full int8 | size |", "|---|---|---|---|---|---|---|---|---|"]
    full = next(r for r in rows if r["variant"].startswith("none"))
    for r in rows:
        lines.append(f"| {r['variant']} | {r['val']['accuracy']:.2f} | {r['val']['mean_recall']:.2f} | "
                     f"{r[test_name]['accuracy']:.2f} | {r[test_name]['mean_recall']:.2f} | "
                     f"{ref[test_name]['accuracy'] - r[test_name]['accuracy']:+.2f} | {r['p50_ms']:.3f} | "
                     f"{r['p50_ms'] / full['p50_ms']:.2f}x | {r['size_bytes'] / 1024:.0f} kB |")
    lines += ["", "Per-layer error of the full-int8 model on 200 validation crops (rmse/scale: 0.29 is pure "
              "rounding; the excess is error carried in from upstream):", "",
              "| op | output | range | rmse/scale |", "|---|---|---|---|"]
    lines += [f"| {r['op']} | `{r['tensor']}` | {r['range']} | {r['rmse_per_scale']} |" for r in layer_rows]
    lines += ["", f"Regenerate: `.venv/bin/python benchmarks/int8_islands.py {a.run}`", ""]
    atomic_write_text(a.out / f"{name}.md", "\n".join(lines))
    print(f"-> {a.out / name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
