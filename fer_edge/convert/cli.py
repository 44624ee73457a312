"""`fer-edge convert`: fine-tune a backbone (or take a finished Keras model) and export TFLite models.

Nothing heavy is imported at module level: TensorFlow and Keras load inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fer_edge.convert.presets import PRESETS
from fer_edge.convert.settings import DEFAULT_VARIANTS, ConvertConfig, default, description, field_info, shown

HELP = (
    "Fine-tune an ImageNet backbone on face crops and export self-describing TFLite models.\n\n"
    "[bold]Examples[/]\n\n"
    "[cyan]fer-edge convert --model mobilenet --int8[/]\n"
    "The demo. No --data, so the generated synthetic face set is used (840 cartoon faces, 7 classes); "
    "MobileNet v1 alpha 0.25 at 96 px from the ImageNet weights bundled with fer-edge; "
    f"{default('epochs')} head + {default('fine_tune_epochs')} fine-tune epochs; int8 export only. About 1 minute "
    "on 2 CPU cores.\n\n"
    "[cyan]fer-edge convert --model mobilenet --data ../shared/data/fer2013 --int8 --fp32 --epochs 2 "
    "--fine-tune-epochs 20 --lr 1e-3 --lr 3e-4 --batch-size 64[/]\n"
    "FER2013 folder tree: validation carved from train, PublicTest evaluated at the end, two learning "
    "rates tried and the better one (validation mean per-class recall) exported.\n\n"
    "[cyan]fer-edge convert --model emotion_model.hdf5 --data fer2013.csv --int8[/]\n"
    "Convert a finished Keras model without training: pixel scaling from --input-range, labels in "
    "FER2013 order for 7 outputs unless --labels is given.\n\n"
    "[bold]Output[/] (in --out, default runs/<model>-<timestamp>): model_float.keras (float reference, takes "
    "uint8-valued pixels); model_<variant>.tflite per variant, metadata inside the file and in a sidecar "
    ".json; convert.json (config, per-lr histories, metrics, timings); train_log.csv; checkpoints/ (rerun "
    "with the same --out and settings to resume; finished learning rates are skipped).\n\n"
    "[bold]Variants[/]: --int8 (full integer, uint8 pixels in, calibrated on class-balanced training crops), "
    "--fp16, --dynamic, --fp32; several at once. None given = "
    + " ".join(f"--{v}" for v in DEFAULT_VARIANTS) + ".\n\n"
    "[bold]Face-native backbones[/]: face_vgg_tiny|small|base and face_resnet_tiny|small|base take 48 px grey "
    "faces at their own size and train from scratch (--preset scratch: AdamW, warm-up + cosine, label smoothing, "
    "rotation + erasing, bfloat16 where the CPU has it; ~80 FER2013 epochs in 150 minutes on 2 cores for "
    "face_vgg_small), or from the FER2013 weights fer-edge ships (--weights fer2013, --preset finetune). "
    "[cyan]--teacher MODEL[/] (repeatable) distils from the averaged soft predictions of finished models.\n\n"
    "[bold]Weights[/]: auto (default) = ImageNet when the file is in the Keras cache ($KERAS_HOME/models "
    "or ~/.keras/models; fer-edge ships the MobileNet v1 alpha 0.25 file), otherwise from scratch with a "
    "note. imagenet = insist (a missing file is an error that names it and where to put it; nothing is "
    "ever downloaded). none, or a .h5 path.\n\n"
    "[bold]Settings[/]: every option is a field of fer_edge.convert.settings.ConvertConfig (the Python API and "
    "the recipes in converters/ take the same names); [cyan]--print-config[/] prints the settings a run would "
    "use, presets applied, and exits."
)


def _h(name: str, flag: str = "") -> str:
    """An option's help, read from the settings tree: the field's description, its default and what the
    presets set it to. `flag`: the text of a --no-X switch (its field's description follows)."""
    text = description(name)
    text = text[:1].upper() + text[1:]
    if flag:
        return f"{flag} ({text[:1].lower() + text[1:]})."
    value = default(name)
    extra = field_info(name).json_schema_extra
    if value is not None and not (isinstance(extra, dict) and "unset" in extra):
        text += f" (default {shown(value)})"
    set_by = [f"{p} {shown(v[name])}" for p, v in PRESETS.items() if name in v]
    if set_by:
        text += "; presets: " + ", ".join(set_by)
    return text + "."


def _split_csv(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    out = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return out or None


# Each option's help, from the settings tree (module level: the option declarations only read it).
H = {name: _h(name) for name in ConvertConfig.model_fields}
H["labels_csv"] = H["labels"] + " Comma separated."


def register(app: typer.Typer) -> None:
    @app.command("convert", help=HELP, no_args_is_help=False)
    def convert_cmd(
        # Every default is None or False, "not typed": the settings tree (ConvertConfig) and the presets fill
        # the rest, so the CLI cannot drift from the API (tests/test_settings_defaults.py).
        model: Optional[str] = typer.Option(None, "--model", "-m", help=H["model"]),
        data: Optional[str] = typer.Option(None, "--data", "-d", help=H["data"]),
        kind: Optional[str] = typer.Option(None, "--kind", help=H["kind"]),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help=H["out"]),
        int8: bool = typer.Option(False, "--int8", help="int8 model (uint8 pixels in)."),
        fp16: bool = typer.Option(False, "--fp16", help="float16 weights (GPU-delegate variant)."),
        dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic-range: int8 weights, float I/O."),
        fp32: bool = typer.Option(False, "--fp32", help="Plain float32 TFLite."),
        preset: Optional[str] = typer.Option(None, "--preset", help=H["preset"]),
        epochs: Optional[int] = typer.Option(None, "--epochs", help=H["epochs"]),
        fine_tune_epochs: Optional[int] = typer.Option(None, "--fine-tune-epochs", help=H["fine_tune_epochs"]),
        fine_tune_lr_factor: Optional[float] = typer.Option(None, "--fine-tune-lr-factor",
                                                            help=H["fine_tune_lr_factor"]),
        warmup_epochs: Optional[int] = typer.Option(None, "--warmup-epochs", help=H["warmup_epochs"]),
        lr_floor: Optional[float] = typer.Option(None, "--lr-floor", help=H["lr_floor"]),
        input_size: Optional[int] = typer.Option(None, "--input-size", help=H["input_size"]),
        color: Optional[str] = typer.Option(None, "--color", help=H["color"]),
        weights: Optional[str] = typer.Option(None, "--weights", help=H["weights"]),
        alpha: Optional[float] = typer.Option(None, "--alpha", help=H["alpha"]),
        lr: Optional[List[float]] = typer.Option(None, "--lr", help=H["lrs"]),
        sweep_epochs: Optional[int] = typer.Option(None, "--sweep-epochs", help=H["sweep_epochs"]),
        optimizer: Optional[str] = typer.Option(None, "--optimizer", help=H["optimizer"]),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help=H["weight_decay"]),
        label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help=H["label_smoothing"]),
        class_weighting: Optional[str] = typer.Option(None, "--class-weighting", help=H["class_weighting"]),
        precision: Optional[str] = typer.Option(None, "--precision", help=H["precision"]),
        rotation: Optional[float] = typer.Option(None, "--rotation", help=H["rotation"]),
        erasing: Optional[float] = typer.Option(None, "--erasing", help=H["erasing"]),
        bn_momentum: Optional[float] = typer.Option(None, "--bn-momentum", help=H["bn_momentum"]),
        teacher: Optional[List[str]] = typer.Option(None, "--teacher", help=H["teachers"]),
        distill_weight: Optional[float] = typer.Option(None, "--distill-weight", help=H["distill_weight"]),
        distill_temperature: Optional[float] = typer.Option(None, "--distill-temperature",
                                                            help=H["distill_temperature"]),
        no_teacher_mirror: bool = typer.Option(False, "--no-teacher-mirror",
                                               help=_h("teacher_mirror", "Do not average each teacher over the "
                                                                         "mirror image")),
        no_logit_adjust: bool = typer.Option(False, "--no-logit-adjust",
                                             help=_h("logit_adjust", "Keep the trained output biases")),
        tta: Optional[str] = typer.Option(None, "--tta", help=H["tta"]),
        seed: Optional[int] = typer.Option(None, "--seed", help=H["seed"]),
        bn: Optional[str] = typer.Option(None, "--bn", help=H["bn"]),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help=H["batch_size"]),
        dropout: Optional[float] = typer.Option(None, "--dropout", help=H["dropout"]),
        no_class_weights: bool = typer.Option(False, "--no-class-weights",
                                              help=_h("class_weights", "Plain cross-entropy, same as "
                                                                       "--class-weighting none")),
        no_augment: bool = typer.Option(False, "--no-augment", help=_h("augment", "Disable all augmentation")),
        val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help=H["val_fraction"]),
        labels: Optional[List[str]] = typer.Option(None, "--labels", help=H["labels_csv"]),
        strategy: Optional[str] = typer.Option(None, "--strategy", help=H["strategy"]),
        patience: Optional[int] = typer.Option(None, "--patience", help=H["patience"]),
        calib_images: Optional[int] = typer.Option(None, "--calib-images", help=H["calib_images"]),
        int8_output: Optional[str] = typer.Option(None, "--int8-output", help=H["int8_output"]),
        input_range: Optional[str] = typer.Option(None, "--input-range", help=H["input_range"]),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help=H["max_drop"]),
        max_class_drop: Optional[float] = typer.Option(None, "--max-class-drop", help=H["max_class_drop"]),
        no_test: bool = typer.Option(False, "--no-test", help=_h("eval_test", "Do not evaluate on the test split")),
        no_resume: bool = typer.Option(False, "--no-resume", help=_h("resume", "Ignore checkpoints in --out; "
                                                                               "start over")),
        print_config: bool = typer.Option(False, "--print-config", help="Print the settings this run would use "
                                          "(YAML: presets applied, unset fields at their defaults) and exit."),
    ) -> None:
        from pydantic import ValidationError

        from fer_edge.convert.api import ConvertConfig, convert
        from fer_edge.errors import settings_error

        variants = [v for v, on in (("fp32", fp32), ("fp16", fp16), ("dynamic", dynamic), ("int8", int8)) if on]
        given = dict(
            model=model, data=data, kind=kind, out=out, preset=preset, epochs=epochs,
            fine_tune_epochs=fine_tune_epochs, fine_tune_lr_factor=fine_tune_lr_factor, warmup_epochs=warmup_epochs, lr_floor=lr_floor,
            input_size=input_size, color=color, weights=weights, alpha=alpha, lrs=lr or None, seed=seed,
            batch_size=batch_size, val_fraction=val_fraction, labels=_split_csv(labels), strategy=strategy,
            patience=patience, calib_images=calib_images, int8_output=int8_output, input_range=input_range,
            max_drop=max_drop, max_class_drop=max_class_drop, bn=bn, sweep_epochs=sweep_epochs,
            optimizer=optimizer, weight_decay=weight_decay, label_smoothing=label_smoothing,
            class_weighting=class_weighting, precision=precision, rotation=rotation, erasing=erasing,
            bn_momentum=bn_momentum, teachers=teacher or None, distill_weight=distill_weight,
            distill_temperature=distill_temperature, tta=tta, dropout=dropout,
            variants=variants or None,
        )
        # Only what the user typed is passed: everything else is the preset's or ConvertConfig's default
        # (written once, there), so the CLI cannot drift from the API.
        kwargs = {k: v for k, v in given.items() if v is not None}
        for flag, key, value in ((no_class_weights, "class_weights", False), (no_augment, "augment", False),
                                 (no_test, "eval_test", False), (no_resume, "resume", False),
                                 (no_teacher_mirror, "teacher_mirror", False),
                                 (no_logit_adjust, "logit_adjust", False)):
            if flag:
                kwargs[key] = value
        if no_class_weights and class_weighting is None:
            kwargs["class_weighting"] = "none"
        try:
            cfg = ConvertConfig(**kwargs)
        except ValidationError as exc:
            raise settings_error(exc) from None
        if print_config:
            print(effective_yaml(cfg), end="")
            return
        import signal

        def _terminate(signum, frame):
            # SIGTERM (timeout, docker stop, a cancelled CI job) unwinds like Ctrl-C, so the staging
            # folder and temporary files are removed on the way out (exit 130).
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _terminate)
        convert(cfg)


def effective_settings(cfg) -> dict:
    """The settings a conversion runs with: the preset applied, each unset field at its default (JSON types)."""
    from fer_edge.convert.settings import effective

    resolved = cfg.resolved()
    values = {name: effective(resolved, name) for name in type(resolved).model_fields}
    return type(resolved).model_construct(**values).model_dump(mode="json")


def effective_yaml(cfg) -> str:
    import yaml

    return ("# fer-edge convert: the effective settings (fer_edge.convert.settings.ConvertConfig)\n"
            + yaml.safe_dump(effective_settings(cfg), sort_keys=False, allow_unicode=True))
