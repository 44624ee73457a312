"""Device commands: `fer-edge run` (the daemon) and `fer-edge doctor` (what this board can do).

Imports of OpenCV, LiteRT and the runtime modules happen inside the commands, so `fer-edge --help`
stays fast; nothing on this side imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer


def _overrides(model, source, outputs, loop, drop, threads, delegate, detector, detect_every, detect_width, max_faces,
               min_face, score_threshold, align, max_frames, log_level, labels=None, input_size=None, color=None,
               require_variant=None, tta=None, accelerator=None) -> dict:
    """Only the flags that were given, shaped like the config file (flags win over the file)."""
    from fer_edge.runtime.config import source_from_spec

    o: dict = {}

    def put(section: str, key: str, value) -> None:
        if value is not None:
            o.setdefault(section, {})[key] = value

    put("classifier", "model", model)
    put("classifier", "threads", threads)
    put("classifier", "delegate", delegate)
    put("classifier", "align", align)
    put("classifier", "labels", [x.strip() for x in labels.split(",") if x.strip()] if labels else None)
    put("classifier", "input_size", input_size)
    put("classifier", "color", color)
    put("classifier", "require_variant", require_variant)
    put("classifier", "tta", tta)
    put("classifier", "accelerator", accelerator.strip().lower() if accelerator else None)
    if source is not None:
        o["source"] = source_from_spec(source)
    put("source", "loop", True if loop else None)
    put("source", "drop_stale", drop)
    put("source", "max_frames", max_frames)
    put("detector", "type", detector)
    put("detector", "every", detect_every)
    put("detector", "input_width", detect_width)
    put("detector", "max_faces", max_faces)
    put("detector", "min_face", min_face)
    put("detector", "score_threshold", score_threshold)
    if outputs:
        from fer_edge.runtime.sinks import parse_sink_url

        # Models, not dumps: a dump would mask an MQTT password as "**********".
        o["outputs"] = [parse_sink_url(s) for s in outputs]
    put("logging", "level", log_level.upper() if log_level else None)
    return o


def _setup_logging(level: str) -> None:
    from fer_edge import lograte

    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        lograte.install(handler)  # the same warning once, then a count per minute


def register(app: typer.Typer) -> None:
    """Add this side's commands to the main app."""

    @app.command("run")
    def run_cmd(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Daemon config (YAML); flags override it."),
        model: Optional[Path] = typer.Option(None, "--model", "-m", help="The converted .tflite."),
        source: Optional[str] = typer.Option(
            None, "--source", "-s", help="picamera2 | 0 | /dev/video0 | VIDEO | URL | IMAGE_DIR"),
        output: Optional[list[str]] = typer.Option(
            None, "--output", "-o", help="Sink, repeatable: jsonl:- | jsonl:PATH | mqtt://HOST:PORT/PREFIX | "
                                         "http://127.0.0.1:PORT (default jsonl:-)"),
        loop: bool = typer.Option(False, "--loop", help="Replay a video file or image folder forever."),
        drop: Optional[bool] = typer.Option(
            None, "--drop/--no-drop", help="Keep only the newest frame when inference falls behind "
                                          "(default: yes for cameras and streams, no for files)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Classifier threads (default: all cores)."),
        delegate: Optional[str] = typer.Option(
            None, "--delegate", help="External delegate library (.so); falls back to the CPU if it cannot load."),
        accelerator: Optional[str] = typer.Option(
            None, "--accelerator", help="cpu (XNNPACK, default) | gpu (LiteRT CompiledModel; falls back to the CPU, "
                                        "saying why, where there is no GPU adapter)."),
        detector: Optional[str] = typer.Option(None, "--detector", help="yunet | blazeface"),
        detect_every: Optional[int] = typer.Option(
            None, "--detect-every", help="Detect on every Nth frame; track boxes in between."),
        detect_width: Optional[int] = typer.Option(None, "--detect-width", help="YuNet input width (default 320)."),
        max_faces: Optional[int] = typer.Option(None, "--max-faces"),
        min_face: Optional[float] = typer.Option(None, "--min-face", help="Smallest face side, pixels."),
        score_threshold: Optional[float] = typer.Option(None, "--score-threshold", help="Detector score floor."),
        align: Optional[bool] = typer.Option(None, "--align/--no-align", help="Level the eyes before classifying."),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after N frames."),
        labels: Optional[str] = typer.Option(
            None, "--labels", help="Model without fer-edge metadata only: its labels in output order, comma separated."),
        input_size: Optional[int] = typer.Option(None, "--input-size", help="Model without metadata only: input side."),
        color: Optional[str] = typer.Option(None, "--color", help="Model without metadata only: grey | rgb."),
        require_variant: Optional[str] = typer.Option(
            None, "--require-variant", help="Refuse a model of another variant: fp32 | fp16 | dynamic | int8."),
        tta: Optional[str] = typer.Option(
            None, "--tta", help="Test-time augmentation: none | flip (average each face with its mirror "
                                "image: +1 pp on FER2013, twice the classifier's cost)."),
        log_level: Optional[str] = typer.Option(None, "--log-level", help="DEBUG | INFO | WARNING | ERROR"),
        validate_config: bool = typer.Option(
            False, "--validate-config", help="Check the configuration (and the model's metadata), then exit."),
    ) -> None:
        """Run the camera -> face -> expression daemon."""
        from fer_edge.runtime.config import load_config

        overrides = _overrides(str(model) if model else None, source, output, loop, drop, threads, delegate, detector,
                               detect_every, detect_width, max_faces, min_face, score_threshold, align, max_frames,
                               log_level, labels, input_size, color, require_variant, tta, accelerator)
        if config is None and "source" not in overrides:
            from fer_edge.errors import ConfigError

            raise ConfigError("no source: pass --config FILE or --source picamera2|0|/dev/video0|VIDEO|URL|IMAGE_DIR")
        cfg = load_config(config, overrides)
        if validate_config:
            _print_validated(cfg)
            return
        _setup_logging(cfg.logging.level)
        from fer_edge.runtime.daemon import Daemon

        code = Daemon(cfg).run()
        if code:
            raise typer.Exit(code)

    @app.command("doctor")
    def doctor_cmd(
        model: Optional[Path] = typer.Option(None, "--model", "-m", help="Also load this .tflite and run it once."),
        threads: Optional[int] = typer.Option(None, "--threads"),
        delegate: Optional[str] = typer.Option(None, "--delegate"),
        accelerator: str = typer.Option("cpu", "--accelerator", help="cpu | gpu: also try the model on the GPU."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Check this board: TFLite runtime and XNNPACK, CPU and OS, camera stack, and a model."""
        from fer_edge.runtime.doctor import run_checks

        from fer_edge.accelerator import check_accelerator

        checks = run_checks(str(model) if model else None, threads, delegate, check_accelerator(accelerator))
        if as_json:
            print(json.dumps([c.as_dict() for c in checks], indent=2))
        else:
            from rich.console import Console
            from rich.table import Table

            table = Table(title="fer-edge doctor", show_lines=False)
            table.add_column("check")
            table.add_column("")
            table.add_column("detail", overflow="fold")
            style = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]"}
            for c in checks:
                table.add_row(c.name, style[c.status], c.detail + (f"\n[dim]fix: {c.fix}[/]" if c.fix else ""))
            Console().print(table)
        if any(c.status == "fail" for c in checks):
            raise typer.Exit(1)


def _print_validated(cfg) -> None:
    from rich.console import Console

    from fer_edge.interpreter import resolve_metadata

    con = Console()
    src = cfg.source
    con.print(f"[green]configuration OK[/]: source {src.type} "
              f"{getattr(src, 'path', getattr(src, 'device', ''))}, detector {cfg.detector.type} "
              f"(every {cfg.detector.every} frame(s)), outputs: {', '.join(o.type for o in cfg.outputs) or 'none'}")
    if cfg.classifier.model is not None:
        c = cfg.classifier
        meta = resolve_metadata(cfg.require_model(), c.labels, c.input_size, c.color)
        con.print(f"model {cfg.classifier.model}: {meta.backbone} {meta.variant}, input {meta.preprocess.shape} "
                  f"{meta.preprocess.color}, labels {', '.join(meta.labels)}")
    else:
        con.print("[yellow]no classifier.model set[/]: `run` will need --model")
