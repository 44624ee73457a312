#!/usr/bin/env python
"""Models alone and averaged (optionally with their mirror images), on one split, raw and clean, in one run.

    .venv/bin/python benchmarks/ensemble.py MODEL.tflite [MODEL.tflite ...] --data ../shared/data/fer2013 \
        [--split public_test] [--name fer2013-ensemble]

What a distilled student is measured against: each teacher alone, the teachers' average (what the student
was trained towards), all with and without flip test-time augmentation. Each model reads the images through
its own PreprocessSpec; the clean subset is the bench's (no copy in train, no conflicting labels). Writes
benchmarks/results/<name>/ensemble.{json,md}. LiteRT only (no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="fer2013-ensemble")
    a = ap.parse_args(argv)

    from fer_edge.atomic import atomic_write_text
    from fer_edge.bench.core import machine_info
    from fer_edge.bench.dataset import bench_data, clean_mask
    from fer_edge.interpreter import TFLiteModel
    from fer_edge.metrics import score

    t0 = time.perf_counter()
    models = [TFLiteModel(p, threads=a.threads) for p in a.models]
    bd = bench_data(a.data, a.split, None)
    bd.load([m.metadata.preprocess for m in models])
    mask, note = clean_mask(bd)
    labels = bd.labels
    probs: dict[str, np.ndarray] = {}
    for path, m in zip(a.models, models):
        x = bd.arrays(m.metadata.preprocess)
        order = [list(m.labels).index(lab) for lab in labels]
        plain = m.predict(x)[:, order]
        flipped = m.predict(np.ascontiguousarray(x[:, :, ::-1]))[:, order]
        probs[path.name] = plain
        probs[f"{path.name} +flip"] = (plain + flipped) / 2
    names = [p.name for p in a.models]
    if len(names) > 1:
        probs["average"] = np.mean([probs[n] for n in names], axis=0)
        probs["average +flip"] = np.mean([probs[f"{n} +flip"] for n in names], axis=0)
    rows = []
    y = bd.y
    for name, p in probs.items():
        s = score(y, p, labels)
        c = score(y[mask], p[mask], labels) if mask is not None else None
        rows.append({"model": name, "accuracy": s.accuracy, "mean_recall": s.mean_recall, "recall": s.recall,
                     "clean_accuracy": c.accuracy if c else None, "clean_mean_recall": c.mean_recall if c else None})
    record = {"data": bd.source, "split_note": bd.split_note, "n": bd.n, "clean_note": note,
              "machine": machine_info(), "seconds": round(time.perf_counter() - t0, 1),
              "models": [str(p) for p in a.models], "rows": rows}
    out = ROOT / "benchmarks" / "results" / a.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ensemble.json", json.dumps(record, indent=1))

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    lines = [f"# Models alone and averaged: {bd.source}, {bd.split_note}", "",
             f"{bd.n} images; {note or 'no clean subset'}. Machine: {record['machine']['cpu']}, "
             f"{record['machine']['cores_usable']} cores; {record['seconds']} s. `+flip`: each image averaged "
             "with its mirror image.", "",
             "| model | accuracy % | mean recall % | clean accuracy % | clean mean recall % |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {pct(r['accuracy'])} | {pct(r['mean_recall'])} | {pct(r['clean_accuracy'])} | "
              f"{pct(r['clean_mean_recall'])} |" for r in rows]
    atomic_write_text(out / "ensemble.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
