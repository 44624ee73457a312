"""`fer-edge convert`: fine-tune a backbone (or take a finished Keras model) and export TFLite models.

Nothing heavy is imported at module level: TensorFlow and Keras load inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

HELP = (
    "Fine-tune an ImageNet backbone on face crops and export self-describing TFLite models.\n\n"
    "[bold]Examples[/]\n\n"
    "[cyan]fer-edge convert --model mobilenet --int8[/]\n"
    "The demo. No --data, so the generated synthetic face set is used (840 cartoon faces, 7 classes); "
    "MobileNet v1 alpha 0.25 at 96 px from the ImageNet weights bundled with fer-edge; 2 head + 8 fine-tune "
    "epochs; int8 export only. About 1 minute on 2 CPU cores.\n\n"
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
    "--fp16, --dynamic, --fp32; several at once. None given = --int8 --fp32.\n\n"
    "[bold]Face-native backbones[/]: face_vgg_tiny|small|base and face_resnet_tiny|small|base take 48 px grey "
    "faces at their own size and train from scratch (--preset scratch: AdamW, warm-up + cosine, label smoothing, "
    "rotation + erasing, bfloat16 where the CPU has it; ~80 FER2013 epochs in 150 minutes on 2 cores for "
    "face_vgg_small), or from the FER2013 weights fer-edge ships (--weights fer2013, --preset finetune). "
    "[cyan]--teacher MODEL[/] (repeatable) distils from the averaged soft predictions of finished models.\n\n"
    "[bold]Weights[/]: auto (default) = ImageNet when the file is in the Keras cache ($KERAS_HOME/models "
    "or ~/.keras/models; fer-edge ships the MobileNet v1 alpha 0.25 file), otherwise from scratch with a "
    "note. imagenet = insist (a missing file is an error that names it and where to put it; nothing is "
    "ever downloaded). none, or a .h5 path."
)


def _split_csv(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    out = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return out or None


def register(app: typer.Typer) -> None:
    @app.command("convert", help=HELP, no_args_is_help=False)
    def convert_cmd(
        model: str = typer.Option("mobilenet", "--model", "-m", help="Backbone: mobilenet (v1), mobilenet_v2, "
                                  "mobilenet_v3_small, mobilenet_v3_large, inception_v3, nasnet_mobile, "
                                  "face_vgg_tiny|small|base, face_resnet_tiny|small|base; or a .keras/.h5 model "
                                  "file to convert without training."),
        data: Optional[str] = typer.Option(None, "--data", "-d", help="Class-per-folder tree (optionally under "
                                           "train/ val/ test/ folders) or fer2013.csv. Omitted: the synthetic "
                                           "demo set."),
        kind: Optional[str] = typer.Option(None, "--kind", help="Data layout: auto, folder, fer2013_csv, ckplus, "
                                           "jaffe, synthetic."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default "
                                           "runs/<model>-<timestamp>)."),
        int8: bool = typer.Option(False, "--int8", help="int8 model (uint8 pixels in)."),
        fp16: bool = typer.Option(False, "--fp16", help="float16 weights (GPU-delegate variant)."),
        dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic-range: int8 weights, float I/O."),
        fp32: bool = typer.Option(False, "--fp32", help="Plain float32 TFLite."),
        preset: Optional[str] = typer.Option(None, "--preset", help="Training settings for what is not given: "
                                             "auto (scratch/finetune for face-native backbones, paper otherwise), "
                                             "paper, scratch, finetune."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Phase 1 epochs per learning rate: head only "
                                             "when the backbone is pretrained, the whole network from scratch "
                                             "(paper preset: 2)."),
        fine_tune_epochs: Optional[int] = typer.Option(None, "--fine-tune-epochs", help="Phase 2 epochs: whole "
                                                       "network, cosine-decayed rate (paper: 8, scratch: 60)."),
        fine_tune_lr_factor: Optional[float] = typer.Option(None, "--fine-tune-lr-factor", help="Phase 2 starts "
                                                            "at lr x this and decays on a cosine."),
        warmup_epochs: Optional[int] = typer.Option(None, "--warmup-epochs", help="Linear warm-up epochs before "
                                                    "the cosine."),
        input_size: Optional[int] = typer.Option(None, "--input-size", help="Model input side in px (default per "
                                                 "backbone: 96 for MobileNets/NASNet, 139 for InceptionV3, 48 for "
                                                 "face-native)."),
        color: Optional[str] = typer.Option(None, "--color", help="grey (default) or rgb."),
        weights: Optional[str] = typer.Option(None, "--weights", help="auto | imagenet | fer2013 | none | PATH "
                                              "(see above)."),
        alpha: Optional[float] = typer.Option(None, "--alpha", help="Width multiplier of MobileNets (default "
                                              "0.25 v1, 0.35 v2, 1.0 v3)."),
        lr: Optional[List[float]] = typer.Option(None, "--lr", help="Learning rate; repeat for a sweep (best "
                                                 "validation mean per-class recall wins). Default 1e-3 (paper), "
                                                 "2e-3 (scratch)."),
        sweep_epochs: Optional[int] = typer.Option(None, "--sweep-epochs", help="Rate race for several --lr: "
                                                   "each trains this many epochs, then only the best on "
                                                   "validation trains on (about 1/k of the sweep's cost)."),
        optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam (paper) or adamw (scratch)."),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW decoupled weight decay."),
        label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="Label smoothing."),
        class_weighting: Optional[str] = typer.Option(None, "--class-weighting", help="none | sqrt | inverse "
                                                      "(paper eq. 1, the paper preset) | balanced (sampling)."),
        precision: Optional[str] = typer.Option(None, "--precision", help="auto (bfloat16 for face-native nets "
                                                "where the CPU has AMX/AVX512-BF16) | float32 | mixed_bfloat16."),
        rotation: Optional[float] = typer.Option(None, "--rotation", help="Augmentation: max rotation, degrees."),
        erasing: Optional[float] = typer.Option(None, "--erasing", help="Augmentation: random-erasing "
                                                "probability."),
        bn_momentum: Optional[float] = typer.Option(None, "--bn-momentum", help="BatchNorm momentum."),
        teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="Distil from this model (.tflite or "
                                                    "fer-edge .keras); repeat for an averaged ensemble."),
        distill_weight: Optional[float] = typer.Option(None, "--distill-weight", help="Share of the teachers' "
                                                       "soft targets in the target (default 0.5)."),
        distill_temperature: Optional[float] = typer.Option(None, "--distill-temperature", help="Teacher "
                                                            "temperature (default 1)."),
        no_teacher_mirror: bool = typer.Option(False, "--no-teacher-mirror", help="Do not average each teacher "
                                               "over the mirror image."),
        no_logit_adjust: bool = typer.Option(False, "--no-logit-adjust", help="Keep the trained output biases "
                                             "(no tau x log prior shift chosen on validation)."),
        seed: Optional[int] = typer.Option(None, "--seed"),
        bn: Optional[str] = typer.Option(None, "--bn", help="BatchNorm of a pretrained backbone once unfrozen: "
                                         "adapt (re-estimate statistics on the faces) or frozen (inference mode)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size."),
        no_class_weights: bool = typer.Option(False, "--no-class-weights", help="Plain cross-entropy (same as "
                                              "--class-weighting none)."),
        no_augment: bool = typer.Option(False, "--no-augment", help="Disable all augmentation."),
        val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Validation share carved from "
                                                     "train (by subject when known) if the data has no val split."),
        labels: Optional[List[str]] = typer.Option(None, "--labels", help="Label set and order, comma separated "
                                                   "(for a model file: its output order)."),
        strategy: Optional[str] = typer.Option(None, "--strategy", help="default | mirrored (all local GPUs, else "
                                               "logical CPUs) | multiworker (TF_CONFIG)."),
        patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping: epochs without a better "
                                               "validation mean recall before a phase ends."),
        calib_images: Optional[int] = typer.Option(None, "--calib-images", help="int8 calibration crops "
                                                   "(class-balanced, from training)."),
        int8_output: Optional[str] = typer.Option(None, "--int8-output", help="float (default: int8 body, float "
                                                  "head, no tied scores) | uint8 | int8 (fully integer)."),
        input_range: Optional[str] = typer.Option(None, "--input-range", help="Pixel range a given model file "
                                                  "expects: -1,1 | 0,1 | 0,255."),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Fail (exit 6) if a variant loses more "
                                                 "than PP points of validation accuracy vs float."),
        max_class_drop: Optional[float] = typer.Option(None, "--max-class-drop", help="Fail if any class' recall "
                                                       "drops more than PP points."),
        no_test: bool = typer.Option(False, "--no-test", help="Do not evaluate on the data's test split "
                                     "(test/public_test) at the end."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Ignore checkpoints in --out; start over."),
    ) -> None:
        from fer_edge.convert.api import ConvertConfig, convert
        from fer_edge.errors import ConfigError

        variants = [v for v, on in (("fp32", fp32), ("fp16", fp16), ("dynamic", dynamic), ("int8", int8)) if on]
        given = dict(
            model=model, data=data, kind=kind, out=out, preset=preset, epochs=epochs,
            fine_tune_epochs=fine_tune_epochs, fine_tune_lr_factor=fine_tune_lr_factor, warmup_epochs=warmup_epochs,
            input_size=input_size, color=color, weights=weights, alpha=alpha, lrs=lr or None, seed=seed,
            batch_size=batch_size, val_fraction=val_fraction, labels=_split_csv(labels), strategy=strategy,
            patience=patience, calib_images=calib_images, int8_output=int8_output, input_range=input_range,
            max_drop=max_drop, max_class_drop=max_class_drop, bn=bn, sweep_epochs=sweep_epochs,
            optimizer=optimizer, weight_decay=weight_decay, label_smoothing=label_smoothing,
            class_weighting=class_weighting, precision=precision, rotation=rotation, erasing=erasing,
            bn_momentum=bn_momentum, teachers=teacher or None, distill_weight=distill_weight,
            distill_temperature=distill_temperature,
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
        except Exception as exc:  # pydantic ValidationError -> one readable line per bad option
            errs = getattr(exc, "errors", None)
            if callable(errs):
                msg = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                                for e in errs())
                raise ConfigError(f"invalid option(s): {msg}") from None
            raise
        import signal

        def _terminate(signum, frame):
            # SIGTERM (timeout, docker stop, a cancelled CI job) unwinds like Ctrl-C, so the staging
            # folder and temporary files are removed on the way out (exit 130).
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _terminate)
        convert(cfg)
