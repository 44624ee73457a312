#!/usr/bin/env python
"""Collect the recipe rows (benchmarks/results/table1/*.json) into table1.md and table1.csv.

    .venv/bin/python benchmarks/table1.py [--results benchmarks/results/table1] [--recipes converters]

Each row is written by `fer-edge recipe converters/<recipe>.yaml`. Recipes of table1 that have no
row yet are listed as not run, with their command. The paper's figures come from each recipe's
`paper:` block (where they were quoted from is printed beside them); ours come from the rows.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROW_SCHEMA = "fer-edge-recipe-row/1"

COLUMNS = [  # (header, function of a row -> cell)
    ("row", lambda r: r["row"]),
    ("weights", lambda r: _weights(r)),
    ("input", lambda r: f"{r.get('input_size')} px" if r.get("input_size") else "-"),
    ("weighted loss", lambda r: r.get("class_weighting") or {True: "yes", False: "no", None: "-"}[r.get("class_weights")]),
    ("lr (chosen / tried)", lambda r: _lr(r)),
    ("epochs", lambda r: "-" if r.get("epochs") is None else f"{r['epochs']}+{r['fine_tune_epochs']}"),
    ("train acc", lambda r: _p(r.get("train", {}).get("accuracy"))),
    ("test acc", lambda r: _p(r["float"].get("accuracy"))),
    ("mean recall", lambda r: _p(r["float"].get("mean_recall"))),
    ("macro-F1", lambda r: _p(r["float"].get("macro_f1"))),
    ("int8 acc", lambda r: _p(r["int8"].get("accuracy"))),
    ("int8 recall", lambda r: _p(r["int8"].get("mean_recall"))),
    ("int8 F1", lambda r: _p(r["int8"].get("macro_f1"))),
    ("int8 clean acc", lambda r: _p((r["int8"].get("clean") or {}).get("accuracy"))),
    ("int8 clean recall", lambda r: _p((r["int8"].get("clean") or {}).get("mean_recall"))),
    ("int8 p50 ms", lambda r: "-" if r.get("int8_p50_ms") is None else f"{r['int8_p50_ms']:.2f}"),
    ("int8 KB", lambda r: "-" if not r.get("int8_size_bytes") else f"{r['int8_size_bytes'] / 1024:.0f}"),
    ("train min", lambda r: "-" if r.get("train_wall_s") is None else f"{r['train_wall_s'] / 60:.1f}"),
    ("trained on", lambda r: _trained_on(r)),
    ("paper test acc*", lambda r: _p((r.get("paper") or {}).get("test_accuracy"))),
]


def _p(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _weights(r: dict) -> str:
    w = str(r.get("weights") or "-")
    if w.startswith("imagenet"):
        return "ImageNet"
    if w.startswith("file:"):
        return f"given model ({w[5:]})"
    return "none (scratch)" if w == "none" else w


def _trained_on(r: dict) -> str:
    """GPU name for rows trained on an accelerator (benchmarks/gpu_grid.py), else the CPU the row ran on."""
    machines = r.get("train_machines") or []
    gpus = sorted({m.split(" x")[0].replace("NVIDIA ", "") for m in machines if m.startswith("NVIDIA")})
    if gpus:
        backend = "JAX" if any("/ jax" in m for m in machines) else "TF"
        return f"{', '.join(gpus)} ({backend})"
    return "2-core CPU" if r.get("lrs") else "-"


def _lr(r: dict) -> str:
    if not r.get("lrs"):
        return "-"
    tried = ", ".join(f"{x:g}" for x in r["lrs"])
    if r.get("sweep_epochs") and len(r["lrs"]) > 1:
        tried += f" (race of {r['sweep_epochs']} ep)"
    return f"{r['chosen_lr']:g} / {tried}" if r.get("chosen_lr") is not None else tried


def load_rows(results: Path) -> list[dict]:
    rows = []
    for p in sorted(Path(results).glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(d, dict) and d.get("schema") == ROW_SCHEMA:
            rows.append(d)
    return rows


def pending_recipes(recipes: Path, done: set[str], table: str = "table1") -> list[tuple[str, dict]]:
    """Recipes of this table without a row: (name, the recipe mapping)."""
    import yaml

    out = []
    for p in sorted(Path(recipes).glob("*.yaml")):
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError:
            continue
        if d.get("table", "table1") == table and not d.get("cv") and p.stem not in done:
            out.append((p.stem, d))
    return out


def render_md(rows: list[dict], pending: list[tuple[str, dict]] = ()) -> str:
    lines = ["# Table 1, reproduced: FER2013, train -> PublicTest", ""]
    if rows:
        splits = sorted({f"{r.get('split')} ({r.get('n_test')} images)" for r in rows})
        threads = sorted({r.get("threads") for r in rows})
        lines += [f"Reported split: {', '.join(splits)}. Accuracy, mean per-class recall and macro-F1 in %; "
                  f"the float model is the Keras model; int8 is the int8 TFLite file (full-integer; since 2026-12-03 with the dense head in float); the table scores without test-time augmentation (the shipped row with its flip: benchmarks/README.md); clean = PublicTest without the images copied in train or carrying a conflicting label; latency is batch-1 "
                  f"p50 at {', '.join(map(str, threads))} thread(s) on LiteRT (XNNPACK). Train acc: the float "
                  "model on a random subset of the training images, no augmentation. Train min: training time summed over the "
                  "learning rates of the sweep (on the GPU, several runs shared the card at once); trained on: where "
                  "the weights were trained (export and every figure here: this CPU).", "",
                  "| recipe | " + " | ".join(h for h, _ in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for r in rows:
            lines.append(f"| `{r['recipe']}` | " + " | ".join(f(r) for _, f in COLUMNS) + " |")
        lines += ["", "\\* paper figures are quoted, not measured here; where each was read is listed below.", "",
                  "Plots: [accuracy vs latency](table1_accuracy_vs_latency.png) (fp32 -> int8 per row), "
                  "[per-class recall](table1_recall_per_class.png) (int8, float in brackets).", ""]
        notes = [(r["recipe"], r) for r in rows
                 if r.get("budget_note") or r.get("notes") or r.get("deviations") or r.get("from_convert")]
        if notes:
            lines += ["Per-row notes:", ""]
            for name, r in notes:
                extra = []
                if r.get("from_convert"):
                    extra.append(f"benched from the existing convert output `{r.get('convert_dir')}`")
                if r.get("deviations"):
                    extra.append("differs from its recipe: " + "; ".join(r["deviations"]))
                if r.get("budget_scale", 1.0) != 1.0:
                    extra.append(f"run at --budget-scale {r['budget_scale']:g}")
                lines.append(f"- `{name}`: " + " ".join(x.strip() for x in [r.get("budget_note"), r.get("notes")] if x)
                             + (" (" + "; ".join(extra) + ")" if extra else ""))
            lines.append("")
        machines = sorted({f"{(r.get('machine') or {}).get('cpu')}, {(r.get('machine') or {}).get('tflite_runtime')}"
                           for r in rows})
        lines += [f"Machine: {'; '.join(machines)}.", ""]
    paper = {}
    for src in [(r["recipe"], r.get("paper")) for r in rows] + [(n, d.get("paper")) for n, d in pending]:
        name, p = src
        if p and p.get("test_accuracy") is not None:
            paper.setdefault((p["test_accuracy"], p.get("note", ""), p.get("source", "")), []).append(name)
    if paper:
        lines += ["## The paper's figures (quoted, not measured here)", "",
                  "| paper figure % | what it is | quoted from | our recipes |", "|---|---|---|---|"]
        for (acc, note, source), names in sorted(paper.items(), key=lambda kv: -kv[0][0]):
            lines.append(f"| {acc:.2f} | {note} | {source} | {', '.join(f'`{n}`' for n in names)} |")
        lines.append("")
    if pending:
        lines += ["## Recipes without a row yet", "",
                  "Set up and validated, but not trained to the end: each trains a whole network from scratch, three "
                  "times (the learning-rate sweep) - hours on these 2-core CPUs. The one GPU session so far (15 minutes "
                  "of an H100) ran out before these finished: its first attempt started all 21 runs of the grid at "
                  "once and ran out of GPU memory (see benchmarks/README.md). On a GPU box, `benchmarks/gpu_grid.py` "
                  "trains them under JAX and the command beside each exports and benches here; on any machine the "
                  "command alone does all of it. Recipes ending in `_cpu` are the same rows at a budget one session "
                  "on these CPUs can train (smaller input, a rate race, fewer epochs).",
                  "",
                  "| recipe | row | command | budget |", "|---|---|---|---|"]
        done = {r["recipe"] for r in rows}
        for name, d in pending:
            cpu = f" A CPU-budget version of this row is in the table: `{name}_cpu`." if f"{name}_cpu" in done else ""
            lines.append(f"| `{name}` | {d.get('row', '')} | `fer-edge recipe converters/{name}.yaml` | "
                         f"{d.get('budget_note', '')}{cpu} |")
        lines.append("")
    lines += ["Regenerate: `.venv/bin/python benchmarks/table1.py` (rows: `fer-edge recipe converters/<recipe>.yaml`).",
              ""]
    return "\n".join(lines)


def render_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["recipe"] + [h for h, _ in COLUMNS])
    for r in rows:
        w.writerow([r["recipe"]] + [f(r) for _, f in COLUMNS])
    return buf.getvalue()


def _short(r: dict) -> str:
    return r["recipe"].removeprefix("fer2013_")


def plot_accuracy_vs_latency(rows: list[dict], path: Path) -> Path | None:
    """PublicTest accuracy against batch-1 latency: the fp32 TFLite (hollow) and the int8 file (filled) of each
    row, joined, on a log time axis - what int8 buys in time and costs in accuracy, row by row."""
    from fer_edge.bench.plots import pyplot, save_png

    pts = [r for r in rows if r.get("int8_p50_ms") and r["int8"].get("accuracy") is not None]
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    for i, r in enumerate(pts):
        color = plt.cm.tab10(i % 10)
        fp32 = (r.get("latency_p50_ms") or {}).get("fp32")
        ax.scatter(r["int8_p50_ms"], r["int8"]["accuracy"], color=color, s=42, zorder=3, label=_short(r))
        if fp32 and r["float"].get("accuracy") is not None:
            ax.scatter(fp32, r["float"]["accuracy"], facecolors="none", edgecolors=color, s=42, zorder=3)
            ax.plot([fp32, r["int8_p50_ms"]], [r["float"]["accuracy"], r["int8"]["accuracy"]], color=color,
                    lw=1, alpha=0.7)
        ax.annotate(_short(r), (r["int8_p50_ms"], r["int8"]["accuracy"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_xlabel(f"batch-1 p50 latency, ms ({pts[0].get('threads')} threads, LiteRT; log scale)")
    ax.set_ylabel("FER2013 PublicTest accuracy, %")
    ax.set_title("Table 1 rows: fp32 TFLite (hollow) -> int8 (filled)")
    ax.grid(True, which="both", alpha=0.3)
    return save_png(fig, path, plt)


def plot_recall_per_class(rows: list[dict], path: Path) -> Path | None:
    """Per-class recall of each row's int8 model as a heat map (rows x classes), float beside it in the cell."""
    from fer_edge.bench.plots import pyplot, save_png

    pts = [r for r in rows if r["int8"].get("recall")]
    if not pts:
        return None
    labels = list(pts[0]["int8"]["recall"])
    grid = np.array([[r["int8"]["recall"].get(c) or 0.0 for c in labels] for r in pts])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.05 * len(labels), 0.9 + 0.42 * len(pts)))
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, r in enumerate(pts):
        for j, c in enumerate(labels):
            fl = (r["float"].get("recall") or {}).get(c)
            ax.text(j, i, f"{grid[i, j]:.0f}" + (f" ({fl:.0f})" if fl is not None else ""), ha="center",
                    va="center", fontsize=7, color="white" if grid[i, j] < 60 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(pts)), [_short(r) for r in pts], fontsize=8)
    ax.set_title("PublicTest recall per class, %: int8 (float in brackets)")
    return save_png(fig, path, plt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "table1")
    ap.add_argument("--recipes", type=Path, default=ROOT / "converters")
    a = ap.parse_args(argv)
    from fer_edge.atomic import atomic_write_text

    rows = load_rows(a.results)
    pending = pending_recipes(a.recipes, {r["recipe"] for r in rows}) if a.recipes.is_dir() else []
    atomic_write_text(a.results / "table1.md", render_md(rows, pending))
    atomic_write_text(a.results / "table1.csv", render_csv(rows))
    plots = [p.name for p in (plot_accuracy_vs_latency(rows, a.results / "table1_accuracy_vs_latency.png"),
                              plot_recall_per_class(rows, a.results / "table1_recall_per_class.png")) if p]
    print(f"{len(rows)} row(s), {len(pending)} recipe(s) not run -> {a.results / 'table1.md'}, table1.csv"
          + (", " + ", ".join(plots) if plots else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
