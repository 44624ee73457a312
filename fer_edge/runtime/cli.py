"""Device commands: `fer-edge run` (the daemon) and `fer-edge doctor` (what this board can do).

Imports of OpenCV, LiteRT and the runtime modules happen inside the commands, so `fer-edge --help`
stays fast; nothing on this side imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:  # annotations only: the command line imports the config and pydantic when a command runs
    from pydantic.fields import FieldInfo

    from fer_edge.runtime.config import DaemonConfig


# Each `run` flag and the field of the settings tree (fer_edge.runtime.config.DaemonConfig) it sets: its help
# is the field's description and its default the field's, read from there; a flag not typed is not passed.
FLAGS: dict[str, tuple[str, str]] = {
    "model": ("classifier", "model"), "threads": ("classifier", "threads"), "delegate": ("classifier", "delegate"),
    "accelerator": ("classifier", "accelerator"), "align": ("classifier", "align"), "labels": ("classifier", "labels"),
    "input_size": ("classifier", "input_size"), "color": ("classifier", "color"),
    "require_variant": ("classifier", "require_variant"), "tta": ("classifier", "tta"),
    "loop": ("source", "loop"), "drop": ("source", "drop_stale"), "max_frames": ("source", "max_frames"),
    "detector": ("detector", "type"), "detect_every": ("detector", "every"), "detect_width": ("detector", "input_width"),
    "max_faces": ("detector", "max_faces"), "min_face": ("detector", "min_face"),
    "score_threshold": ("detector", "score_threshold"), "log_level": ("logging", "level"),
}


def setting(section: str, key: str) -> FieldInfo:
    """The pydantic field behind `section.key` of the daemon's config (for a plugin section: the default plugin's)."""
    from fer_edge.runtime.config import DaemonConfig, section_model

    model = section_model(DaemonConfig, section)
    assert model is not None, section
    return model.model_fields[key]


def _h(flag: str, text: str = "") -> str:
    """A flag's help: `text`, or its field's description, and the field's default where it has one."""
    info = setting(*FLAGS[flag])
    text = text or info.description or ""
    text = text[:1].upper() + text[1:]
    if info.default not in (None, False):
        text += f" (default {info.default})"
    return text + "."


# Each flag's help (module level: the option declarations only read it).
H = {flag: _h(flag) for flag in FLAGS}
H["labels_csv"] = H["labels"] + " Comma separated."


def _overrides(model: str | None, source: str | None, outputs: list[str] | None, loop: bool, drop: bool | None,
               threads: int | None, delegate: str | None, detector: str | None, detect_every: int | None,
               detect_width: int | None, max_faces: int | None, min_face: float | None,
               score_threshold: float | None, align: bool | None, max_frames: int | None, log_level: str | None,
               labels: str | None = None, input_size: int | None = None, color: str | None = None,
               require_variant: str | None = None, tta: str | None = None,
               accelerator: str | None = None) -> dict[str, Any]:
    """Only the flags that were given, shaped like the config file (flags win over the file)."""
    from fer_edge.runtime.config import source_from_spec

    given = dict(model=model, threads=threads, delegate=delegate, align=align,
                 labels=[x.strip() for x in labels.split(",") if x.strip()] if labels else None,
                 input_size=input_size, color=color, require_variant=require_variant, tta=tta,
                 accelerator=accelerator.strip().lower() if accelerator else None,
                 loop=True if loop else None, drop=drop, max_frames=max_frames, detector=detector,
                 detect_every=detect_every, detect_width=detect_width, max_faces=max_faces, min_face=min_face,
                 score_threshold=score_threshold, log_level=log_level.upper() if log_level else None)
    o: dict[str, Any] = {}
    if source is not None:
        o["source"] = source_from_spec(source)
    for flag, value in given.items():
        if value is not None:
            section, key = FLAGS[flag]
            o.setdefault(section, {})[key] = value
    if outputs:
        from fer_edge.runtime.sinks import parse_sink_url

        # Models, not dumps: a dump would mask an MQTT password as "**********".
        o["outputs"] = [parse_sink_url(s) for s in outputs]
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
        model: Optional[Path] = typer.Option(None, "--model", "-m", help=H["model"]),
        source: Optional[str] = typer.Option(
            None, "--source", "-s", help="picamera2 | 0 | /dev/video0 | VIDEO | URL | IMAGE_DIR"),
        output: Optional[list[str]] = typer.Option(
            None, "--output", "-o", help="Sink, repeatable: jsonl:- | jsonl:PATH | mqtt://HOST:PORT/PREFIX | "
                                         "http://127.0.0.1:PORT (default jsonl:-)"),
        # Every default is None or False, "not typed": the config file and the settings tree fill the rest.
        loop: bool = typer.Option(False, "--loop", help=H["loop"]),
        drop: Optional[bool] = typer.Option(None, "--drop/--no-drop", help=H["drop"]),
        threads: Optional[int] = typer.Option(None, "--threads", help=H["threads"]),
        delegate: Optional[str] = typer.Option(None, "--delegate", help=H["delegate"]),
        accelerator: Optional[str] = typer.Option(None, "--accelerator", help=H["accelerator"]),
        detector: Optional[str] = typer.Option(None, "--detector", help=H["detector"]),
        detect_every: Optional[int] = typer.Option(None, "--detect-every", help=H["detect_every"]),
        detect_width: Optional[int] = typer.Option(None, "--detect-width", help=H["detect_width"]),
        max_faces: Optional[int] = typer.Option(None, "--max-faces", help=H["max_faces"]),
        min_face: Optional[float] = typer.Option(None, "--min-face", help=H["min_face"]),
        score_threshold: Optional[float] = typer.Option(None, "--score-threshold", help=H["score_threshold"]),
        align: Optional[bool] = typer.Option(None, "--align/--no-align", help=H["align"]),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", help=H["max_frames"]),
        labels: Optional[str] = typer.Option(None, "--labels", help=H["labels_csv"]),
        input_size: Optional[int] = typer.Option(None, "--input-size", help=H["input_size"]),
        color: Optional[str] = typer.Option(None, "--color", help=H["color"]),
        require_variant: Optional[str] = typer.Option(None, "--require-variant", help=H["require_variant"]),
        tta: Optional[str] = typer.Option(None, "--tta", help=H["tta"]),
        log_level: Optional[str] = typer.Option(None, "--log-level", help=H["log_level"]),
        validate_config: bool = typer.Option(
            False, "--validate-config", help="Check the configuration (and the model's metadata), then exit."),
        print_config: bool = typer.Option(
            False, "--print-config", help="Print the effective settings (the file, the flags on top, every default "
                                          "filled in) as YAML, then exit."),
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
        if print_config:
            from fer_edge.runtime.config import config_yaml

            print(config_yaml(cfg), end="")
            return
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
        accelerator: Optional[str] = typer.Option(None, "--accelerator", help="cpu | gpu: also try the model on "
                                                  "the GPU (default " + str(setting(*FLAGS["accelerator"]).default)
                                                  + ")."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Check this board: TFLite runtime and XNNPACK, CPU and OS, camera stack, and a model."""
        from fer_edge.runtime.doctor import run_checks

        from fer_edge.accelerator import check_accelerator

        accelerator = accelerator or setting(*FLAGS["accelerator"]).default
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


def _print_validated(cfg: DaemonConfig) -> None:
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
