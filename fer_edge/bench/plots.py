"""PNG plots of a BenchResult: a confusion matrix per variant, per-class recall of the reference
against each other variant, and accuracy vs latency with the Pareto front.

matplotlib is optional on a board: without it the plots are skipped with a note, the rest runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_edge.atomic import atomic_path
from fer_edge.bench.models import slug
from fer_edge.bench.result import BenchResult


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on a board or in CI
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, plt) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def confusion_png(name: str, labels: list[str], cm: list[list[int]], path: Path, plt) -> Path:
    cm = np.asarray(cm, np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.65 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{name}: confusion (row-normalised)")
    return save_png(fig, path, plt)


def recall_png(result: BenchResult, path: Path, plt) -> Path | None:
    ok = [v for v in result.variants if v.ok]
    if not ok:
        return None
    labels = result.data["labels"]
    # reference first so every other variant's bars sit beside it
    ok.sort(key=lambda v: (not v.is_reference, result.variants.index(v)))
    width = 0.8 / len(ok)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, len(labels) * (0.4 + 0.15 * len(ok)))), 4))
    x = np.arange(len(labels))
    for i, v in enumerate(ok):
        vals = [np.nan if v.scores.recall.get(lab) is None else v.scores.recall[lab] * 100 for lab in labels]
        ax.bar(x + (i - (len(ok) - 1) / 2) * width, vals, width,
               label=v.name + (" (reference)" if v.is_reference else ""),
               hatch="//" if v.is_reference else None, edgecolor="black", linewidth=0.4)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("recall %")
    ax.set_ylim(0, 105)
    ax.set_title("per-class recall: reference vs each variant")
    ax.legend(fontsize=7, ncol=min(4, len(ok)))
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path, plt)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_png(result: BenchResult, path: Path, plt) -> Path | None:
    t = max(result.threads)
    pts = [(v, v.p50(t), v.scores.accuracy * 100) for v in result.variants if v.ok and v.p50(t) is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xy = [(p[1], p[2]) for p in pts]
    front = pareto_front(xy)
    for i, (v, lat, acc) in enumerate(pts):
        ax.scatter(lat, acc, s=50, marker="s" if v.kind == "keras" else "o",
                   color="tab:red" if i in front else "tab:gray", zorder=3)
        # stagger labels: variants often share a point (same accuracy, near-equal latency)
        ax.annotate(v.name, (lat, acc), textcoords="offset points", xytext=(5, 4 + 9 * (i % 3)), fontsize=8)
    fx = [xy[i][0] for i in front]
    fy = [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", alpha=0.6, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency at batch 1, {t} thread(s) (ms, log scale)")
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy vs latency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_png(fig, path, plt)


def write_plots(result: BenchResult, out: Path) -> tuple[list[Path], str | None]:
    """-> (PNG files written, a note when matplotlib is missing)."""
    try:
        plt = pyplot()
    except ImportError as exc:
        return [], f"plots skipped: matplotlib is not installed ({exc}); pip install matplotlib"
    files: list[Path] = []
    for v in result.variants:
        if v.ok:
            files.append(confusion_png(v.name, v.scores.labels, v.scores.confusion,
                                       out / f"confusion_{slug(v.name)}.png", plt))
    for fn, name in ((recall_png, "recall_per_class.png"), (pareto_png, "accuracy_vs_latency.png")):
        p = fn(result, out / name, plt)
        if p is not None:
            files.append(p)
    return files, None
