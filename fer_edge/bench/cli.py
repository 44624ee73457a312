"""`fer-edge bench` and `fer-edge explain`. Heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from pydantic.fields import FieldInfo

from fer_edge.bench.settings import BenchConfig, ExplainConfig, bench_kwargs, checked, checked_explain
from fer_edge.errors import ConfigError, ModelError


def parse_threads(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4], checked as --threads is (benchmarks/bench_suite.py takes the same list)."""
    return list(checked(flags=True, threads=text).threads)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help(info: FieldInfo) -> str:
    """An option's help, read from the settings tree: the field's description and its default."""
    text = info.description or ""
    text = text[:1].upper() + text[1:]
    value = info.get_default(call_default_factory=True)
    if value is not None and value is not False:
        text += f" (default {_shown(value)})"
    return text + "."


# Each option's help, from the settings trees (module level: the option declarations only read it).
H = {name: _help(info) for name, info in BenchConfig.model_fields.items()}
HX = {name: _help(info) for name, info in ExplainConfig.model_fields.items()}


def register(app: typer.Typer) -> None:
    """Add this side's commands to the main app."""

    @app.command("bench")
    def bench(
        models: List[Path] = typer.Argument(..., help="convert output folder(s), .tflite file(s), the float .keras"),
        # Kept required: a bench of real models on the synthetic demo set by omission would mislead.
        data: str = typer.Option(..., "--data", help=H["data"]),
        # Every other default is None or False, "not typed": the settings tree (BenchConfig) fills the rest, so
        # the CLI cannot drift from run_bench (tests/test_settings_defaults.py). Ranges are the tree's too.
        split: Optional[str] = typer.Option(None, "--split", help=H["split"]),
        threads: Optional[str] = typer.Option(None, "--threads", help=H["threads"]),
        runs: Optional[int] = typer.Option(None, "--runs", help=H["runs"]),
        warmup: Optional[int] = typer.Option(None, "--warmup", help=H["warmup"]),
        max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help=H["max_seconds"]),
        out: Optional[Path] = typer.Option(None, "--out", help=H["out"]),
        limit: Optional[int] = typer.Option(None, "--limit", help=H["limit"]),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help=H["max_drop"]),
        max_class_drop: Optional[float] = typer.Option(None, "--max-class-drop", help=H["max_class_drop"]),
        data_kind: Optional[str] = typer.Option(None, "--data-kind", help=H["data_kind"]),
        plots: Optional[bool] = typer.Option(None, "--plots/--no-plots", help=H["plots"]),
        isolate: Optional[bool] = typer.Option(None, "--isolate/--in-process", help=H["isolate"]),
        speed: Optional[bool] = typer.Option(None, "--speed/--no-speed", help=H["speed"]),
        labels: Optional[str] = typer.Option(None, "--labels", help=H["labels"]),
        input_size: Optional[int] = typer.Option(None, "--input-size", help=H["input_size"]),
        color: Optional[str] = typer.Option(None, "--color", help=H["color"]),
        tta: Optional[str] = typer.Option(None, "--tta", help=H["tta"]),
        clean: Optional[bool] = typer.Option(None, "--clean/--no-clean", help=H["clean"]),
        device_path: bool = typer.Option(False, "--device-path", help=H["device_path"]),
        detector: Optional[str] = typer.Option(None, "--detector", help=H["detector"]),
        pad: Optional[float] = typer.Option(None, "--pad", help=H["pad"]),
        frame_scale: Optional[float] = typer.Option(None, "--frame-scale", help=H["frame_scale"]),
        tune_crop: bool = typer.Option(False, "--tune-crop", help=H["tune_crop"]),
        write_geometry: bool = typer.Option(False, "--write-geometry", help=H["write_geometry"]),
        accelerator: Optional[str] = typer.Option(None, "--accelerator", help=H["accelerator"]),
        print_config: bool = typer.Option(False, "--print-config", help="Print the settings this run would use "
                                          "(YAML: every option not typed at its default) and exit."),
    ) -> None:
        """Accuracy, per-class recall, speed, size and memory of each model variant, side by side.

        Every option is a field of fer_edge.bench.settings.BenchConfig (run_bench takes the same names);
        --print-config prints the settings a run would use and exits.
        """
        given = dict(data=data, split=split, threads=threads, runs=runs, warmup=warmup, max_seconds=max_seconds,
                     out=out, limit=limit, max_drop=max_drop, max_class_drop=max_class_drop, data_kind=data_kind,
                     plots=plots, isolate=isolate, speed=speed, labels=labels, input_size=input_size, color=color,
                     tta=tta, clean=clean, detector=detector, pad=pad, frame_scale=frame_scale,
                     accelerator=accelerator, device_path=device_path or None, tune_crop=tune_crop or None,
                     write_geometry=write_geometry or None)
        # Only what the user typed is passed: everything else is BenchConfig's default, written once there.
        cfg = checked(flags=True, **{k: v for k, v in given.items() if v is not None})
        if print_config:
            print(config_yaml(cfg), end="")
            return
        from rich.console import Console

        from fer_edge.atomic import ensure_dir
        from fer_edge.bench.core import run_bench

        ensure_dir(cfg.out)  # fails now, not after the whole bench has run
        console = Console()
        source = None if cfg.data.lower() in ("synthetic", "demo") else cfg.data
        if cfg.device_path:
            from fer_edge.bench.photo_path import run_photo_path

            if len(models) != 1 or models[0].suffix != ".tflite":
                raise ConfigError("--device-path scores one .tflite model; give exactly one")
            run_photo_path(models[0], source, split=cfg.split, limit=cfg.limit, detector=cfg.detector, pad=cfg.pad,
                           scale=cfg.frame_scale, tune=cfg.tune_crop, write=cfg.write_geometry, out=cfg.out,
                           threads=max(cfg.threads), kind=cfg.data_kind, console=console)
            return
        result = run_bench(models, source, console=console, **bench_kwargs(cfg))
        if not any(v.ok for v in result.variants):
            raise ModelError("no variant could be benchmarked: "
                             + "; ".join(f"{v.name}: {v.error}" for v in result.variants))
        result.raise_for_gate()

    @app.command("explain")
    def explain(
        models: List[Path] = typer.Argument(..., help="convert output folder, the float .keras and/or .tflite files"),
        data: str = typer.Option(..., "--data", help="labelled data (as for bench); 'synthetic' for the demo set"),
        # not typed = None: the settings tree (ExplainConfig) fills the rest, as for bench
        split: Optional[str] = typer.Option(None, "--split", help=HX["split"]),
        n: Optional[int] = typer.Option(None, "--n", help=HX["n"]),
        disagree: bool = typer.Option(False, "--disagree", help=HX["disagree"]),
        out: Optional[Path] = typer.Option(None, "--out", help=HX["out"]),
        patch: Optional[int] = typer.Option(None, "--patch", help=HX["patch"]),
        data_kind: Optional[str] = typer.Option(None, "--data-kind", help=HX["data_kind"]),
        scan: Optional[int] = typer.Option(None, "--scan", help=HX["scan"]),
    ) -> None:
        """Saliency (gradient, Grad-CAM) of the float model and occlusion maps of every model, int8 included."""
        from rich.console import Console

        from fer_edge.bench.explain import run_explain

        given = dict(split=split, n=n, disagree=disagree or None, out=out, patch=patch, data_kind=data_kind,
                     scan=scan)
        cfg = checked_explain(flags=True, **{k: v for k, v in given.items() if v is not None})
        console = Console()
        source = None if data.lower() in ("synthetic", "demo") else data
        run_explain(models, source, console=console, **cfg.model_dump())


def config_yaml(cfg: BenchConfig) -> str:
    """The settings a bench runs with, as --print-config shows them."""
    import yaml

    return ("# fer-edge bench: the effective settings (fer_edge.bench.settings.BenchConfig)\n"
            + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
