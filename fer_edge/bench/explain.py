"""`fer-edge explain`: one PNG per image - the input, the float model's gradient saliency and Grad-CAM,
and an occlusion map for every model (int8 included), with each model's label and probability.

`--disagree` picks images where the float model and the quantized model answer differently: the
cases a user should look at before shipping the quantized one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fer_edge.atomic import atomic_path, atomic_write_text
from fer_edge.bench.backends import open_runner
from fer_edge.bench.dataset import bench_data, label_targets, limit_samples
from fer_edge.bench.settings import explain_default
from fer_edge.bench.models import ModelRef, name_variants, resolve_models, slug
from fer_edge.bench.saliency import LayerChain, grad_cam, gradient_saliency, occlusion_map
from fer_edge.errors import DataError, FerEdgeError, ModelError
from fer_edge.interpreter import default_threads

# From a convert output folder, explain the float model and the most quantized one; more columns
# than that make the grid unreadable (name files explicitly to see others).
FOLDER_VARIANTS = ("float", "int8")


@dataclass
class Loaded:
    ref: ModelRef
    runner: object
    chain: LayerChain | None = None
    note: str = ""


@dataclass
class ExplainResult:
    images: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def pick_models(paths: Sequence[str | os.PathLike]) -> list[ModelRef]:
    refs: list[ModelRef] = []
    for p in paths:
        found = resolve_models([p])
        if Path(p).is_dir():
            keep = [r for r in found if r.variant in FOLDER_VARIANTS]
            if not any(r.variant == "float" for r in keep):  # no .keras: fp32 is the float model
                keep = [r for r in found if r.variant == "fp32"] + keep
            found = keep or found
        refs += [r for r in found if r not in refs]
    name_variants(refs)
    return refs


def _float_and_quant(models: list[Loaded]) -> tuple[Loaded | None, Loaded | None]:
    order = {"int8": 0, "dynamic": 1, "fp16": 2}
    flt = next((m for m in models if m.ref.variant == "float"), None) or \
        next((m for m in models if m.ref.variant == "fp32"), None)
    quant = sorted((m for m in models if m.ref.variant in order), key=lambda m: order[m.ref.variant])
    return flt, (quant[0] if quant else None)


def _say(console, msg: str) -> None:
    if console is not None:
        console.print(msg, highlight=False)


def _overlay(ax, image: np.ndarray, heat: np.ndarray | None, title: str, signed: bool = False) -> None:
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    if heat is not None:
        if signed:
            lim = float(np.abs(heat).max()) or 1.0
            ax.imshow(heat, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.55)
        else:
            ax.imshow(heat, cmap="jet", vmin=0, vmax=max(float(heat.max()), 1e-6), alpha=0.5)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def render(path: Path, image: np.ndarray, true_label: str, key: str, panels: list[tuple[str, np.ndarray, bool]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 1 + len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.1 * n, 2.6))
    axes = np.atleast_1d(axes)
    _overlay(axes[0], image, None, f"input\ntrue: {true_label}")
    for ax, (title, heat, signed) in zip(axes[1:], panels):
        _overlay(ax, image, heat, title, signed)
    fig.suptitle(key if len(key) < 90 else "..." + key[-87:], fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def run_explain(models: Sequence[str | os.PathLike], data, split: str | None = explain_default("split"),
                n: int = explain_default("n"), disagree: bool = explain_default("disagree"),
                out: str | os.PathLike = explain_default("out"), patch: int | None = explain_default("patch"),
                console=None, data_kind: str = explain_default("data_kind"),
                scan: int = explain_default("scan")) -> ExplainResult:
    """Every keyword but console is a field of fer_edge.bench.settings.ExplainConfig, its default the tree's."""
    res = ExplainResult()
    refs = pick_models(models)
    loaded: list[Loaded] = []
    for ref in refs:
        if ref.error:
            res.warnings.append(f"{ref.name}: {ref.error}")
            continue
        try:
            loaded.append(Loaded(ref, open_runner(ref.kind, ref.path, ref.metadata, default_threads())))
        except FerEdgeError as exc:
            res.warnings.append(f"{ref.name}: {exc}")
    if not loaded:
        raise ModelError("no model could be loaded: " + "; ".join(res.warnings))
    flt, quant = _float_and_quant(loaded)
    if disagree and (flt is None or quant is None):
        raise ModelError("--disagree needs a float model (.keras or fp32 .tflite) and a quantized one "
                         f"(int8/dynamic/fp16); got {', '.join(m.ref.name for m in loaded)}")

    bd = bench_data(data, split, None, data_kind)
    bd.samples = limit_samples(bd.samples, scan if disagree else n, seed=0)
    bd.load([m.ref.metadata.preprocess for m in loaded])
    targets = {m.ref.name: label_targets(bd.y, bd.labels, m.ref.metadata.labels, m.ref.path.name) for m in loaded}
    keys = [s.key for s in bd.samples if s.key not in {k.key for k in bd.skipped}]

    chosen = list(range(bd.n))
    if disagree:
        _say(console, f"searching {bd.n} images for disagreements between {flt.ref.name} and {quant.ref.name}")
        pf = flt.runner.predict(bd.arrays(flt.ref.metadata.preprocess)).argmax(1)
        pq = quant.runner.predict(bd.arrays(quant.ref.metadata.preprocess)).argmax(1)
        lf = np.array(flt.ref.metadata.labels)[pf]
        lq = np.array(quant.ref.metadata.labels)[pq]
        chosen = [int(i) for i in np.flatnonzero(lf != lq)]
        _say(console, f"{len(chosen)} of {bd.n} images disagree" + (f"; explaining {min(n, len(chosen))}"
                                                                    if chosen else ""))
        if not chosen:
            res.warnings.append(f"{flt.ref.name} and {quant.ref.name} agree on all {bd.n} images searched")
    chosen = chosen[:n]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("explain_[0-9][0-9][0-9]_*.png"):  # a previous run's grids would mix with these
        stale.unlink()
    for rank, i in enumerate(chosen):
        panels: list[tuple[str, np.ndarray, bool]] = []
        record = {"key": keys[i], "true": bd.labels[int(bd.y[i])], "models": {}}
        display = None
        for m in loaded:
            spec = m.ref.metadata.preprocess
            x = bd.arrays(spec)[i]
            display = x if display is None else display
            labels = m.ref.metadata.labels
            heat, target, prob = occlusion_map(m.runner.predict, x, patch=patch)
            record["models"][m.ref.name] = {"pred": labels[target], "prob": prob,
                                            "correct": int(targets[m.ref.name][i]) == target}
            head = f"{m.ref.name}: {labels[target]} {prob:.0%}"
            if m.ref.kind == "keras":
                try:
                    panels.append((f"{head}\ngradient saliency", gradient_saliency(m.runner.model, x, target), False))
                    if m.chain is None and not m.note:
                        m.chain = LayerChain(m.runner.model, x)
                    if m.chain is not None:
                        cam, layer = grad_cam(m.runner.model, x, target, m.chain)
                        panels.append((f"{head}\nGrad-CAM ({layer})", cam, False))
                except (FerEdgeError, ValueError, TypeError) as exc:
                    m.note = f"{m.ref.name}: Grad-CAM skipped ({exc})"
                    if m.note not in res.warnings:
                        res.warnings.append(m.note)
            panels.append((f"{head}\nocclusion", heat, True))
        path = out / f"explain_{rank:03d}_{slug(Path(keys[i]).stem)}.png"
        try:
            render(path, display, record["true"], keys[i], panels)
        except ImportError as exc:
            raise DataError(f"explain draws PNGs with matplotlib, which is not installed ({exc}); "
                            "pip install matplotlib") from exc
        record["file"] = path.name
        res.images.append(record)
        res.files.append(str(path))
        _say(console, f"  {path.name}: true {record['true']}; " + ", ".join(
            f"{k} {v['pred']} {v['prob']:.0%}" for k, v in record["models"].items()))
    summary = {"data": {"source": bd.source, "split_note": bd.split_note, "searched": bd.n},
               "disagree": disagree, "models": [m.ref.name for m in loaded], "images": res.images,
               "warnings": res.warnings}
    atomic_write_text(out / "explain.json", json.dumps(summary, indent=2))
    res.files.append(str(out / "explain.json"))
    for w in res.warnings:
        _say(console, f"[yellow]warning:[/] {w}")
    _say(console, f"wrote {len(res.images)} image grid(s) to {out}")
    return res
