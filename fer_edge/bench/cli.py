"""`fer-edge bench` and `fer-edge explain`. Heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fer_edge.errors import ConfigError, ModelError


def parse_threads(text: str) -> list[int]:
    try:
        out = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise ConfigError(f"--threads takes comma-separated integers such as 1,2,4; got '{text}'") from None
    if not out:
        raise ConfigError("--threads is empty; give e.g. 1,2,4")
    return out


def _color(text: str | None) -> str | None:
    if text is not None and text not in ("grey", "rgb"):
        raise ConfigError(f"--color takes grey or rgb, got '{text}'")
    return text


def register(app: typer.Typer) -> None:
    """Add this side's commands to the main app."""

    @app.command("bench")
    def bench(
        models: List[Path] = typer.Argument(..., help="convert output folder(s), .tflite file(s), the float .keras"),
        data: str = typer.Option(..., "--data", help="labelled data: class-per-folder tree (optionally under "
                                 "split folders) or fer2013.csv; 'synthetic' for the built-in demo set"),
        split: Optional[str] = typer.Option(None, "--split", help="split to score (default: public_test, "
                                            "else test, else val; the whole set if it has no splits)"),
        threads: str = typer.Option("1", "--threads", help="thread counts to time, e.g. 1,2,4 "
                                    "(counts above the usable cores are skipped)"),
        runs: int = typer.Option(200, "--runs", min=1, help="timed batch-1 runs per variant and thread count"),
        warmup: int = typer.Option(10, "--warmup", min=0, help="untimed runs first"),
        max_seconds: float = typer.Option(2.0, "--max-seconds", min=0.0,
                                          help="stop timing a variant after this long (at least 20 runs)"),
        out: Path = typer.Option(Path("bench_results"), "--out", help="folder for bench.json/.csv/.md and plots"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="score a random N images of the split"),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", min=0.0,
                                                 help="fail if accuracy falls more than PP points vs the float model"),
        max_class_drop: Optional[float] = typer.Option(None, "--max-class-drop", min=0.0,
                                                       help="fail if any class's recall falls more than PP points"),
        data_kind: str = typer.Option("auto", "--data-kind", help="auto, folder, fer2013_csv, ckplus, jaffe"),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="write PNG plots (needs matplotlib)"),
        isolate: bool = typer.Option(True, "--isolate/--in-process",
                                     help="time each variant in a fresh process (clean memory peaks)"),
        speed: bool = typer.Option(True, "--speed/--no-speed", help="--no-speed: accuracy and gate only"),
        labels: Optional[str] = typer.Option(None, "--labels", help="for a .tflite without fer-edge metadata: "
                                             "its labels in output order, comma separated"),
        input_size: Optional[int] = typer.Option(None, "--input-size", min=8,
                                                 help="for a .tflite without metadata: its input side"),
        color: Optional[str] = typer.Option(None, "--color", help="for a .tflite without metadata: grey or rgb"),
        tta: str = typer.Option("model", "--tta", help="test-time augmentation, comma separated: model (default: "
                                "what each model's metadata asks for, as the board runs it), none, flip (average "
                                "each image with its mirror). none,flip benches every variant both ways"),
        clean: bool = typer.Option(True, "--clean/--no-clean", help="also score the clean subset: the split without "
                                   "images that have an exact or near copy in train or a conflicting label "
                                   "(needs a train split; audits the whole set once)"),
        device_path: bool = typer.Option(False, "--device-path", help="score through the board's real path instead: "
                                         "each face in a larger frame -> face detector -> crop with the model's "
                                         "geometry -> classifier (no face = wrong), beside the crop path"),
        detector: str = typer.Option("yunet", "--detector", help="--device-path: yunet or blazeface"),
        pad: float = typer.Option(1.0, "--pad", min=0.0, help="--device-path: grey border, in face widths"),
        frame_scale: float = typer.Option(4.0, "--frame-scale", min=0.25, help="--device-path: face upscaling"),
        tune_crop: bool = typer.Option(False, "--tune-crop", help="--device-path: score a grid of crop margins and "
                                       "vertical offsets (use a validation split: --split val)"),
        write_geometry: bool = typer.Option(False, "--write-geometry", help="--tune-crop: write the best geometry "
                                            "into the model's metadata"),
        accelerator: str = typer.Option("cpu", "--accelerator", help="cpu (XNNPACK) | gpu (LiteRT CompiledModel; "
                                        "falls back to the CPU, saying why, where there is no GPU adapter)"),
    ) -> None:
        """Accuracy, per-class recall, speed, size and memory of each model variant, side by side."""
        from rich.console import Console

        from fer_edge.accelerator import check_accelerator
        from fer_edge.atomic import ensure_dir
        from fer_edge.bench.core import run_bench

        ensure_dir(out)  # fails now, not after the whole bench has run
        console = Console()
        source = None if data.lower() in ("synthetic", "demo") else data
        if device_path:
            from fer_edge.bench.photo_path import run_photo_path

            if len(models) != 1 or models[0].suffix != ".tflite":
                raise ConfigError("--device-path scores one .tflite model; give exactly one")
            run_photo_path(models[0], source, split=split, limit=limit, detector=detector, pad=pad,
                           scale=frame_scale, tune=tune_crop, write=write_geometry, out=out,
                           threads=max(parse_threads(threads)), kind=data_kind, console=console)
            return
        result = run_bench(models, source, split=split, threads=parse_threads(threads), runs=runs, warmup=warmup,
                           max_seconds=max_seconds, limit=limit, max_drop=max_drop, max_class_drop=max_class_drop,
                           out=out, console=console, data_kind=data_kind, isolate=isolate, plots=plots,
                           speed=speed, labels=[x.strip() for x in labels.split(",") if x.strip()] if labels else None,
                           input_size=input_size, color=_color(color),
                           tta=[x.strip() for x in tta.split(",") if x.strip()] or ["none"], clean=clean,
                           accelerator=check_accelerator(accelerator))
        if not any(v.ok for v in result.variants):
            raise ModelError("no variant could be benchmarked: "
                             + "; ".join(f"{v.name}: {v.error}" for v in result.variants))
        result.raise_for_gate()

    @app.command("explain")
    def explain(
        models: List[Path] = typer.Argument(..., help="convert output folder, the float .keras and/or .tflite files"),
        data: str = typer.Option(..., "--data", help="labelled data (as for bench); 'synthetic' for the demo set"),
        split: Optional[str] = typer.Option(None, "--split", help="split to draw images from (default as bench)"),
        n: int = typer.Option(8, "--n", min=1, help="how many images to explain"),
        disagree: bool = typer.Option(False, "--disagree",
                                      help="pick images where the float and quantized predictions disagree"),
        out: Path = typer.Option(Path("explain_results"), "--out", help="folder for the PNG grids"),
        patch: Optional[int] = typer.Option(None, "--patch", min=1,
                                            help="occlusion patch side in pixels (default: input/6)"),
        data_kind: str = typer.Option("auto", "--data-kind", help="auto, folder, fer2013_csv, ckplus, jaffe"),
        scan: int = typer.Option(2000, "--scan", min=1,
                                 help="with --disagree: how many images to search for disagreements"),
    ) -> None:
        """Saliency (gradient, Grad-CAM) of the float model and occlusion maps of every model, int8 included."""
        from rich.console import Console

        from fer_edge.bench.explain import run_explain

        console = Console()
        source = None if data.lower() in ("synthetic", "demo") else data
        run_explain(models, source, split=split, n=n, disagree=disagree, out=out, patch=patch, console=console,
                    data_kind=data_kind, scan=scan)
