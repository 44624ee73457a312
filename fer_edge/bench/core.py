"""`run_bench`: score every variant on the same images, time each in a fresh process, judge, report.

Used by `fer-edge bench`, by `fer-edge convert` (its gate) and by benchmarks/bench_suite.py.
TensorFlow is imported only when a .keras model is among the variants.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fer_edge.bench.backends import open_runner
from fer_edge.bench.dataset import BenchData, bench_data, clean_mask, label_targets
from fer_edge.bench.models import ModelRef, resolve_models
from fer_edge.bench.result import BenchResult, Speed, VariantResult
from fer_edge.bench.settings import checked, default
from fer_edge.bench.verdict import apply_gate, flag_slower_than_fp32, recommend
from fer_edge.errors import ConfigError, FerEdgeError
from fer_edge.interpreter import default_threads
from fer_edge.machine import cpu_name
from fer_edge.metrics import score


def plan_threads(threads: Iterable[int], cores: int | None = None) -> tuple[list[int], list[str]]:
    """Thread counts to measure, never more than the cores this process may use (XNNPACK graphs split
    with builtin kernels slow down 10-20x when oversubscribed). -> (counts, warnings)."""
    cores = cores or default_threads()
    asked = sorted(dict.fromkeys(int(t) for t in threads))
    if not asked or any(t < 1 for t in asked):
        raise ConfigError(f"thread counts must be >= 1, got {asked}; e.g. --threads 1,2,4")
    keep = [t for t in asked if t <= cores]
    warnings = []
    dropped = [t for t in asked if t > cores]
    if dropped:
        warnings.append(f"skipped {', '.join(map(str, dropped))} thread(s): only {cores} core(s) are free "
                        "to this process, and oversubscribed interpreters give meaningless figures")
    if not keep:
        keep = [cores]
        warnings.append(f"measuring at {cores} thread(s) instead")
    return keep, warnings


def machine_info() -> dict:
    info = {"cpu": cpu_name(), "machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "cores_usable": default_threads(), "cores_total": os.cpu_count()}
    try:
        from fer_edge.interpreter import find_runtime

        rt = find_runtime()
        info["tflite_runtime"] = f"{rt.name} {rt.version}"
    except FerEdgeError as exc:
        info["tflite_runtime"] = f"none ({exc})"
    try:
        info["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return info


def _pick_reference(refs: list[ModelRef], rows: dict[str, VariantResult]) -> dict[str, str | None]:
    """Per group: the Keras float model if it ran, else the fp32 TFLite (which then stands in)."""
    out: dict[str, str | None] = {}
    for group in dict.fromkeys(r.group for r in refs):
        # the reference runs without test-time augmentation where there is such a row (what every other row
        # is compared with); models that ask for one (metadata tta, bench --tta model) compare within it
        members = ([rows[r.name] for r in refs if r.group == group and r.tta == "none"]
                   or [rows[r.name] for r in refs if r.group == group])
        pick = next((m for m in members if m.variant == "float" and m.ok), None)
        pick = pick or next((m for m in members if m.variant == "fp32" and m.kind == "tflite" and m.ok), None)
        out[group] = pick.name if pick else None
    return out


def _aligned(ref_probs: np.ndarray, ref_labels: list[str], labels: list[str]) -> np.ndarray | None:
    if ref_labels == labels:
        return ref_probs
    if sorted(ref_labels) == sorted(labels):
        return ref_probs[:, [ref_labels.index(lab) for lab in labels]]
    return None


def _say(console, msg: str) -> None:
    if console is not None:
        console.print(msg, highlight=False)


def _measure_speed(ref: ModelRef, row: VariantResult, image: np.ndarray, threads: list[int], runs: int,
                   warmup: int, max_seconds: float, isolate: bool, console, accelerator: str = "cpu") -> None:
    from fer_edge.bench.probe import run_probe

    for t in threads:
        _say(console, f"  [dim]timing {row.name} at {t} thread(s)[/]")
        if isolate:
            res = run_probe(ref.kind, ref.path, ref.metadata.to_json(), t, image, warmup, runs, max_seconds,
                            tta=ref.tta, accelerator=accelerator)
            row.speed[t] = Speed.from_probe(t, res)
            continue
        # In-process: quicker (no interpreter restart), but memory peaks mix; reported as not isolated.
        from fer_edge.bench.timing import measure

        try:
            t0 = time.perf_counter()
            runner = open_runner(ref.kind, ref.path, ref.metadata, t, ref.tta, accelerator)
            runner.predict_one(image)
            cold = time.perf_counter() - t0
            lat = measure(functools.partial(runner.predict_one, image), warmup, runs, max_seconds)
            kernels = None
            if ref.kind == "tflite":
                from fer_edge.ops import analyse_tflite

                kernels = analyse_tflite(str(ref.path), t).as_dict()
            row.speed[t] = Speed.from_probe(t, {"latency": lat.as_dict(), "cold_start_ms": cold * 1000,
                                                "load_ms": runner.load_seconds * 1000, "engine": runner.engine,
                                                "kernels": kernels}, isolated=False)
        except Exception as exc:  # rule 7: a variant that fails is a row with its error
            row.speed[t] = Speed(threads=t, error=f"{type(exc).__name__}: {exc}", isolated=False)


def _score_all(refs, rows: dict[str, VariantResult], bd: BenchData, threads: int, accelerator: str,
               console) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every runnable variant's probabilities and its targets (in its own label order) on the same images."""
    probs: dict[str, np.ndarray] = {}
    targets: dict[str, np.ndarray] = {}
    for ref in refs:
        row = rows[ref.name]
        if row.error:
            continue
        _say(console, f"scoring [bold]{ref.name}[/] ({ref.path.name}) on {bd.n} images")
        try:
            targets[ref.name] = label_targets(bd.y, bd.labels, ref.metadata.labels, ref.path.name)
            runner = open_runner(ref.kind, ref.path, ref.metadata, threads, ref.tta, accelerator)
            note = getattr(getattr(runner, "inner", runner), "note", "")
            if note:  # --accelerator gpu: what ran the variant, or why it fell back to the CPU
                row.notes.append(note)
                _say(console, f"  [yellow]{note}[/]")
            probs[ref.name] = runner.predict(bd.arrays(ref.metadata.preprocess))
            del runner
            row.scores = score(targets[ref.name], probs[ref.name], ref.metadata.labels)
        except FerEdgeError as exc:
            row.error = str(exc)
        except Exception as exc:  # rule 7: a broken variant is a row with its error, the run goes on
            row.error = f"{type(exc).__name__}: {exc}"
    return probs, targets


def _compare_to_reference(refs, rows: dict[str, VariantResult], probs: dict[str, np.ndarray],
                          targets: dict[str, np.ndarray], mask: np.ndarray | None) -> dict[str, str]:
    """Each row scored again against its group's float reference (agreement, drops), and on the clean subset."""
    reference = _pick_reference(refs, rows)
    for ref in refs:
        row = rows[ref.name]
        ref_name = reference.get(ref.group)
        if ref_name is None or not row.ok:
            continue
        if ref_name == ref.name:
            row.is_reference = True
            if row.variant != "float":
                row.notes.append("stands in as the float reference (no runnable .keras model in its folder)")
            continue
        ref_row = rows[ref_name]
        aligned = _aligned(probs[ref_name], ref_row.labels, row.labels)
        row.reference = ref_name
        if aligned is None:
            row.notes.append(f"labels differ from {ref_name}: no agreement figures")
            continue
        row.scores = score(targets[ref.name], probs[ref.name], row.labels, ref_probs=aligned)
        if mask is not None:
            row.clean_scores = score(targets[ref.name][mask], probs[ref.name][mask], row.labels,
                                     ref_probs=aligned[mask])
    if mask is not None:
        for ref in refs:
            row = rows[ref.name]
            if row.ok and row.clean_scores is None:
                row.clean_scores = score(targets[ref.name][mask], probs[ref.name][mask], row.labels)
    return reference


def _machine_with_load(warnings: list[str]) -> dict:
    """The machine record with the load average at the end, and a warning when it was busy."""
    machine = machine_info()
    try:
        machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        if machine["load_average_end"][0] > machine["cores_usable"] * 0.75:
            warnings.append(f"the machine was busy (load average {machine['load_average_end'][0]} on "
                            f"{machine['cores_usable']} cores): latencies may be inflated")
    except OSError:
        pass
    return machine


def run_bench(
    models: Sequence[str | os.PathLike],
    data,
    split: str | None = default("split"),
    threads: Iterable[int] = default("threads"),
    runs: int = default("runs"),
    warmup: int = default("warmup"),
    max_seconds: float = default("max_seconds"),
    limit: int | None = default("limit"),
    max_drop: float | None = default("max_drop"),
    max_class_drop: float | None = default("max_class_drop"),
    out: str | os.PathLike | None = None,
    console=None,
    data_kind: str = default("data_kind"),
    isolate: bool = default("isolate"),
    plots: bool = default("plots"),
    speed: bool = default("speed"),
    labels: Sequence[str] | None = default("labels"),
    input_size: int | None = default("input_size"),
    color: str | None = default("color"),
    tta: Sequence[str] = default("tta"),
    clean: bool = default("clean"),
    accelerator: str = default("accelerator"),
) -> BenchResult:
    """Benchmark model variants on one labelled split.

    Every keyword is a field of fer_edge.bench.settings.BenchConfig (`fer-edge bench`'s options), its default
    the tree's and checked by it (a bad value is a ConfigError naming it) - but `out`: None here, no files
    written, as the callers that want only the result (a conversion's gate, recipes) expect; the command
    writes into the tree's folder.

    models: convert output folders, .tflite files, the float .keras. data: a folder / fer2013.csv path,
    an opened LabelledSet, or None for the synthetic demo set. threads: counts to time (clipped to the
    usable cores). runs/warmup/max_seconds: batch-1 timing budget per variant and thread count.
    max_drop/max_class_drop: gate limits in percentage points (see BenchResult.raise_for_gate).
    out: folder for bench.json/.csv/.md and the plots. isolate: time each variant in a fresh process.
    speed: False scores accuracy only (what a gate needs, in a fraction of the time).
    labels/input_size/color: for .tflite files without fer-edge metadata (exported elsewhere).
    tta: test-time augmentation modes (fer_edge.tta); each variant is benched once per mode; 'model' (the
    default) = the mode each model's metadata asks for, as the board runs it.
    clean: also score the clean subset (the split without images that have a copy in train or a
    conflicting label, found by the data audit) where the data set has a train split.
    """
    cfg = checked(split=split, threads=threads, runs=runs, warmup=warmup, max_seconds=max_seconds, limit=limit,
                  max_drop=max_drop, max_class_drop=max_class_drop, out=out, data_kind=data_kind, isolate=isolate,
                  plots=plots, speed=speed, labels=labels, input_size=input_size, color=color, tta=tta,
                  clean=clean, accelerator=accelerator)
    # from here on the checked values (a tta list normalised, an accelerator's name lowered, "2" an int)
    split, threads, runs, warmup, max_seconds, limit = (cfg.split, cfg.threads, cfg.runs, cfg.warmup,
                                                        cfg.max_seconds, cfg.limit)
    max_drop, max_class_drop, data_kind = cfg.max_drop, cfg.max_class_drop, cfg.data_kind
    labels, input_size, color, tta, accelerator = cfg.labels, cfg.input_size, cfg.color, cfg.tta, cfg.accelerator
    t_start = time.perf_counter()
    thread_plan, warnings = plan_threads(threads)
    refs = resolve_models(models, list(labels) if labels is not None else None, input_size, color, tta)
    if not refs:
        raise ConfigError("no models given; name convert output folders, .tflite files or a .keras model")
    bd: BenchData = bench_data(data, split, limit, data_kind)
    _say(console, f"[bold]data[/] {bd.source}: {bd.split_note}, {len(bd.samples)} images")

    rows: dict[str, VariantResult] = {}
    for ref in refs:
        row = VariantResult(name=ref.name, group=ref.group, variant=ref.variant, kind=ref.kind, path=str(ref.path),
                            size_bytes=ref.size_bytes, labels=list(ref.metadata.labels) if ref.metadata else [],
                            error=ref.error, tta=ref.tta)
        if ref.note:
            row.notes.append(ref.note)
        rows[ref.name] = row
    specs = [r.metadata.preprocess for r in refs if r.metadata is not None]
    if specs:
        bd.load(specs, progress=lambda m: _say(console, f"[dim]{m}[/]"))
    if bd.skipped:
        warnings.append(f"{len(bd.skipped)} image(s) left out (unreadable or not loadable); see bench.json")

    mask, clean_note = clean_mask(bd, progress=lambda m: _say(console, f"[dim]{m}[/]")) if clean and bd.n \
        else (None, "")

    # Accuracy: every variant on the same images, at the largest measured thread count.
    probs, targets = _score_all(refs, rows, bd, max(thread_plan), accelerator, console)
    reference = _compare_to_reference(refs, rows, probs, targets, mask)
    # Speed: batch 1, per thread count, in a fresh process each (peak memory, thread pools apart).
    for ref in refs:
        row = rows[ref.name]
        if not speed or row.error or ref.metadata is None:
            continue
        x = bd.arrays(ref.metadata.preprocess)
        _measure_speed(ref, row, x[0], thread_plan, runs, warmup, max_seconds, isolate, console, accelerator)

    ordered = [rows[r.name] for r in refs]
    apply_gate(ordered, max_drop, max_class_drop)
    from fer_edge.bench.verdict import class_drop_warnings

    warnings += class_drop_warnings(ordered, max_class_drop)
    flag_slower_than_fp32(ordered, thread_plan)
    machine = _machine_with_load(warnings)
    if bd.n:  # the images actually scored
        counts = dict(zip(bd.labels, np.bincount(bd.y, minlength=len(bd.labels)).tolist()))
    else:
        from fer_edge.data.load import class_counts

        counts = class_counts(bd.samples, bd.labels)
    result = BenchResult(
        variants=ordered,
        data={"source": bd.source, "kind": bd.kind, "split": bd.split, "split_note": bd.split_note, "n": bd.n,
              "labels": bd.labels, "class_counts": counts, "clean_note": clean_note,
              "clean_n": int(mask.sum()) if mask is not None else None,
              "skipped": [{"key": s.key, "reason": s.reason} for s in bd.skipped]},
        threads=thread_plan, machine=machine,
        settings={"speed": speed, "runs": runs, "warmup": warmup, "max_seconds": max_seconds, "limit": limit, "isolated": isolate,
                  "max_drop": max_drop, "max_class_drop": max_class_drop,
                  "tta": sorted({r.tta for r in refs}),
                  "reference": {g: n for g, n in reference.items()},
                  "seconds": round(time.perf_counter() - t_start, 2)},
        recommendation=recommend(ordered, thread_plan, max_drop, max_class_drop),
        warnings=warnings,
    )
    if out is not None:
        from fer_edge.bench.report import write_outputs

        result.files = [str(p) for p in write_outputs(result, Path(out), plots=plots)]
    if console is not None:
        from fer_edge.bench.report import print_table

        print_table(result, console)
    return result
