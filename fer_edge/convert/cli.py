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
                                  "mobilenet_v3_small, mobilenet_v3_large, inception_v3, nasnet_mobile; or a "
                                  ".keras/.h5 model file to convert without training."),
        data: Optional[str] = typer.Option(None, "--data", "-d", help="Class-per-folder tree (optionally under "
                                           "train/ val/ test/ folders) or fer2013.csv. Omitted: the synthetic "
                                           "demo set."),
        kind: str = typer.Option("auto", "--kind", help="Data layout: auto, folder, fer2013_csv, ckplus, jaffe, "
                                 "synthetic."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default "
                                           "runs/<model>-<timestamp>)."),
        int8: bool = typer.Option(False, "--int8", help="Full-integer int8 model (uint8 input)."),
        fp16: bool = typer.Option(False, "--fp16", help="float16 weights (GPU-delegate variant)."),
        dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic-range: int8 weights, float I/O."),
        fp32: bool = typer.Option(False, "--fp32", help="Plain float32 TFLite."),
        epochs: int = typer.Option(2, "--epochs", help="Phase 1 epochs per learning rate: head only when the "
                                   "backbone is pretrained, the whole network from scratch."),
        fine_tune_epochs: int = typer.Option(8, "--fine-tune-epochs", help="Phase 2 epochs: whole network "
                                             "unfrozen, cosine-decayed rate."),
        fine_tune_lr_factor: float = typer.Option(1.0, "--fine-tune-lr-factor", help="Phase 2 starts at lr x this "
                                                  "and decays on a cosine to 5% of it."),
        input_size: Optional[int] = typer.Option(None, "--input-size", help="Model input side in px (default per "
                                                 "backbone: 96 for MobileNets/NASNet, 139 for InceptionV3)."),
        color: str = typer.Option("grey", "--color", help="grey (1-channel input, tiled to RGB inside the model) "
                                  "or rgb."),
        weights: str = typer.Option("auto", "--weights", help="auto | imagenet | none | PATH (see above)."),
        alpha: Optional[float] = typer.Option(None, "--alpha", help="Width multiplier of MobileNets (default "
                                              "0.25 v1, 0.35 v2, 1.0 v3)."),
        lr: Optional[List[float]] = typer.Option(None, "--lr", help="Learning rate; repeat for a sweep (best "
                                                 "validation mean per-class recall wins). Default 1e-3."),
        sweep_epochs: Optional[int] = typer.Option(None, "--sweep-epochs", help="Rate race for several --lr: "
                                                   "each trains this many epochs, then only the best on "
                                                   "validation trains on (about 1/k of the sweep's cost)."),
        seed: int = typer.Option(0, "--seed"),
        bn: str = typer.Option("adapt", "--bn", help="BatchNorm of a pretrained backbone once unfrozen: adapt "
                               "(re-estimate statistics on the faces, momentum 0.9) or frozen (ImageNet "
                               "statistics, inference mode)."),
        batch_size: int = typer.Option(32, "--batch-size", help="Global batch size."),
        no_class_weights: bool = typer.Option(False, "--no-class-weights", help="Plain cross-entropy instead of "
                                              "class-weighted (weight_c = N / (K n_c))."),
        no_augment: bool = typer.Option(False, "--no-augment", help="Disable flip/crop/scale/brightness "
                                        "augmentation."),
        val_fraction: float = typer.Option(0.1, "--val-fraction", help="Validation share carved from train "
                                           "(by subject when known) if the data has no val split."),
        labels: Optional[List[str]] = typer.Option(None, "--labels", help="Label set and order, comma separated "
                                                   "(for a model file: its output order)."),
        strategy: str = typer.Option("default", "--strategy", help="default | mirrored (all local GPUs, else "
                                     "logical CPUs) | multiworker (TF_CONFIG)."),
        patience: int = typer.Option(5, "--patience", help="Early stopping: epochs without a better validation "
                                     "mean recall before a phase ends."),
        calib_images: int = typer.Option(300, "--calib-images", help="int8 calibration crops (class-balanced, "
                                         "from training)."),
        int8_output: str = typer.Option("uint8", "--int8-output", help="uint8 or int8 output of the int8 model."),
        input_range: str = typer.Option("-1,1", "--input-range", help="Pixel range a given model file expects: "
                                        "-1,1 | 0,1 | 0,255."),
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
        try:
            cfg = ConvertConfig(
                model=model, data=data, kind=kind, out=out, variants=variants or ["int8", "fp32"], epochs=epochs,
                fine_tune_epochs=fine_tune_epochs, fine_tune_lr_factor=fine_tune_lr_factor, input_size=input_size,
                color=color, weights=weights, alpha=alpha, lrs=lr or [1e-3], seed=seed, batch_size=batch_size,
                class_weights=not no_class_weights, augment=not no_augment, val_fraction=val_fraction,
                labels=_split_csv(labels), strategy=strategy, patience=patience, calib_images=calib_images,
                int8_output=int8_output, input_range=input_range, max_drop=max_drop, max_class_drop=max_class_drop,
                eval_test=not no_test, resume=not no_resume, bn=bn,
                sweep_epochs=sweep_epochs,
            )
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
