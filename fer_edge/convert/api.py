"""`convert(cfg)`: data -> audit -> splits -> fine-tune (or load a given model) -> export -> report.

The CLI is a thin layer over this; scripts call it directly:

    from fer_edge.convert.api import ConvertConfig, convert
    result = convert(ConvertConfig(model="mobilenet", data="faces/", variants=["int8"]))
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_edge.atomic import atomic_write_text
# The settings tree (fer_edge.convert.settings), re-exported: scripts import ConvertConfig from here.
from fer_edge.convert.settings import MODEL_SUFFIXES
from fer_edge.convert.settings import TRAINING_KEYS as TRAINING_KEYS
from fer_edge.convert.settings import ConvertConfig as ConvertConfig
from fer_edge.errors import ConfigError, DataError, GateError, ModelError
from fer_edge.preprocess import PreprocessSpec

BACKBONE_WEIGHTS = "backbone.weights.h5"
TEST_SPLITS = ("test", "public_test", "private_test")


@dataclass
class ConvertResult:
    out: Path
    paths: dict[str, Path]                      # variant -> file ("float" -> model_float.keras)
    metrics: dict[str, dict]                    # variant -> {"val": {...}, "<test split>": {...}}
    sizes: dict[str, int]
    best_lr: float | None
    runs: list[dict]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)


def train_config(cfg: ConvertConfig):
    """The training settings of a conversion (fer_edge.convert.train.TrainConfig): each field the config's own
    value, or for one left unset the default of the settings tree."""
    import dataclasses

    from fer_edge.convert.settings import effective
    from fer_edge.convert.train import TrainConfig

    shared = [f.name for f in dataclasses.fields(TrainConfig)
              if f.name in ConvertConfig.model_fields and f.name not in ("precision", "distill_weight")]
    return TrainConfig(**{k: effective(cfg, k) for k in shared}, precision=resolved_precision(cfg)[0],
                       distill_weight=distill_weight(cfg) if cfg.teachers else TrainConfig.distill_weight)


def distill_weight(cfg: ConvertConfig) -> float:
    from fer_edge.convert.settings import effective

    return effective(cfg, "distill_weight")


def resolved_precision(cfg: ConvertConfig) -> tuple[str, str]:
    """The dtype policy training runs under, and why (logged and written into the metadata)."""
    from fer_edge.convert.precision import resolve_precision
    from fer_edge.convert.settings import effective

    if cfg.is_model_file:
        return "float32", "no training"
    from fer_edge.convert.backbones import get_backbone

    return resolve_precision(effective(cfg, "precision"), dense=get_backbone(cfg.model).face_native)


def classifier_builder(cfg: ConvertConfig, preprocess: PreprocessSpec, n_classes: int):
    """A no-argument function that builds a fresh (model, info) for this conversion's backbone."""
    from fer_edge.convert import backbones as bb

    def build():
        from fer_edge.convert.settings import effective

        return bb.build_classifier(cfg.model, preprocess, n_classes, weights=cfg.weights, alpha=cfg.alpha,
                                   dropout=cfg.dropout, bn_momentum=effective(cfg, "bn_momentum"))

    return build


def default_out(model: str) -> Path:
    stem = Path(model).stem if Path(model).suffix.lower() in MODEL_SUFFIXES else model
    return Path("runs") / f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _progress(console):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                    console=console, transient=True)


def _load_split(name: str, samples, spec, labels, progress):
    from fer_edge.data.load import load_arrays

    task = progress.add_task(f"load {name}", total=len(samples), stats="")
    x, y, skipped = load_arrays(samples, spec, labels, progress=lambda n: progress.advance(task, n))
    progress.remove_task(task)
    return x, y, skipped


def _audit(ds, console, progress, size: int) -> list[str]:
    """The data audit before training; its warnings are printed loudly (a blurred training split or
    splits that differ in distribution silently cap a model, see the FER2013 notes in the README)."""
    from fer_edge.data.audit import run_audit

    task = progress.add_task("audit data", total=len(ds.samples), stats="")
    try:
        report = run_audit(ds, spec_size=size, progress=lambda n: progress.advance(task, n))
    finally:
        progress.remove_task(task)
    warnings = [str(w) for w in report.warnings]
    for w in warnings:
        console.print(f"[bold yellow on red] DATA WARNING [/] [bold yellow]{w}[/]", highlight=False)
    return warnings


def _external_model(cfg: ConvertConfig, console):
    """Load a finished Keras model and put the pixel scaling in front of it (the .tflite takes uint8 crops)."""
    import keras

    from fer_edge.convert.backbones import rescaling
    from fer_edge.labels import FER2013_CODES, canonical_label

    path = Path(cfg.model).expanduser()
    if not path.is_file():
        raise ModelError(f"model file not found: {path}. Give a .keras/.h5 file or a backbone name "
                         "(fer-edge convert --help lists them).")
    try:
        # compile=False: Keras-2 era .h5 files carry optimizer arguments Keras 3 rejects.
        inner = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelError(f"{path}: Keras cannot load it ({exc}). Give a Keras .keras or .h5 model file.") from exc
    shape = inner.input_shape
    if isinstance(shape, list):
        raise ModelError(f"{path}: the model has {len(shape)} inputs; fer-edge converts single-image models")
    _, h, w, c = shape
    if h is None or h != w or c not in (1, 3):
        raise ModelError(f"{path}: input shape {shape[1:]} is not a fixed square grey or RGB image")
    if cfg.input_size and cfg.input_size != h:
        raise ConfigError(f"--input-size {cfg.input_size} disagrees with the model's own input size {h}")
    k = int(inner.output_shape[-1])
    if cfg.labels:
        labels = [canonical_label(x) for x in cfg.labels]
    elif k == len(FER2013_CODES):
        labels = list(FER2013_CODES)
        console.print(f"[yellow]note:[/] {k} outputs: assuming FER2013 label order {', '.join(labels)} "
                      "(override with --labels)")
    else:
        raise ConfigError(f"{path} has {k} outputs; give its labels in output order with --labels a,b,c")
    if len(labels) != k:
        raise ConfigError(f"--labels names {len(labels)} classes but the model has {k} outputs")
    spec = PreprocessSpec(input_size=int(h), color="grey" if c == 1 else "rgb")
    inp = keras.Input(spec.shape, name="pixels")
    out = inner(rescaling(inp, cfg.input_range))
    last_act = getattr(inner.layers[-1], "activation", None)
    if getattr(last_act, "__name__", "softmax") != "softmax":
        out = keras.layers.Softmax(name="probs")(out)
    model = keras.Model(inp, out, name="fer_classifier")
    info = {"backbone": f"file:{path.name}", "weights": f"file:{path.name}", "alpha": None,
            "input_range": cfg.input_range, "pretrained": True}
    return model, info, spec, labels


def _teacher_targets(cfg: ConvertConfig, train_samples, skipped, labels, out: Path, console, progress):
    """Soft targets of the teachers for exactly the training crops the student trains on (cached in out)."""
    from fer_edge.convert.distill import DistillSettings, teacher_targets

    gone = {s.key for s in skipped}
    kept = [s for s in train_samples if s.key not in gone]
    settings = DistillSettings.of(cfg.teachers, cfg.distill_temperature, cfg.teacher_mirror)
    task = progress.add_task("teacher targets", total=None, stats="")
    try:
        t, record = teacher_targets(settings, kept, labels, out / "teacher_cache",
                                    log=lambda m: console.print(m, highlight=False))
    finally:
        progress.remove_task(task)
    record["weight"] = distill_weight(cfg)
    return t, record


def _logit_adjust(model, data: dict, labels: list[str], tta: str, console) -> dict:
    """Choose tau on validation and fold it into the head (see fer_edge.convert.logit_adjust).

    Validation is scored with the TTA the exported model asks for: tau must suit the probabilities the
    board will actually threshold, and flip averaging already moves some of them."""
    from fer_edge.convert.logit_adjust import choose_tau, fold_into_head
    from fer_edge.convert.train import predict_probs
    from fer_edge.tta import with_tta

    prior = np.bincount(data["y_train"], minlength=len(labels)).astype(np.float64)
    prior = np.maximum(prior, 1) / prior.sum()
    adj = choose_tau(with_tta(lambda x: predict_probs(model, x), tta)(data["x_val"]), data["y_val"], prior, labels)
    fold_into_head(model, prior, adj.tau)
    console.print(f"logit adjustment: tau {adj.tau:g} (validation accuracy {adj.base_accuracy:.2%} -> "
                  f"{adj.val_accuracy:.2%}, mean recall {adj.base_mean_recall:.2%} -> {adj.val_mean_recall:.2%})",
                  highlight=False)
    return adj.as_dict()


def _balanced_subset(samples, labels: list[str], n: int, seed: int) -> list:
    """Up to n samples, round robin over classes (random within a class), in their original order."""
    rng = np.random.default_rng(seed)
    pools = {lab: [i for i, s in enumerate(samples) if s.label == lab] for lab in labels}
    pools = {k: list(rng.permutation(v)) for k, v in pools.items() if v}
    picked: list[int] = []
    while len(picked) < min(n, len(samples)) and any(pools.values()):
        for pool in pools.values():
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return [samples[i] for i in sorted(picked)]


def _write_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _summary_table(console, export, test_name: str | None):
    from rich.table import Table

    t = Table(title="fer-edge convert: recall = mean per-class recall, agree = top-1 agreement with float"
              + (f", test = the '{test_name}' split" if test_name else ""), title_justify="left")
    t.add_column("variant")
    t.add_column("val acc", justify="right")
    t.add_column("val recall", justify="right")
    t.add_column("agree", justify="right")
    if test_name:
        t.add_column("test acc", justify="right")
        t.add_column("test recall", justify="right")
    t.add_column("size", justify="right")

    def pct(v):
        return "-" if v is None else f"{v:.2%}"

    fs, ft = export.float_scores, export.float_test_scores
    size = export.float_path.stat().st_size if export.float_path.exists() else 0
    row = ["float", pct(fs.accuracy), pct(fs.mean_recall), "-"]
    if test_name:
        row += [pct(ft.accuracy if ft else None), pct(ft.mean_recall if ft else None)]
    t.add_row(*row, f"{size / 1024:.0f} KB")
    for v, r in export.variants.items():
        row = [v, pct(r.scores.accuracy), pct(r.scores.mean_recall), pct(r.scores.agreement)]
        if test_name:
            ts = r.test_scores
            row += [pct(ts.accuracy if ts else None), pct(ts.mean_recall if ts else None)]
        style = "red" if r.gate_failures else None
        t.add_row(*row, f"{r.size_bytes / 1024:.0f} KB", style=style)
    console.print(t)


def _check_backbone(cfg: ConvertConfig, console) -> PreprocessSpec:
    """Fail on a bad backbone name, input size or missing weights before reading any data."""
    from fer_edge.convert import backbones as bb

    spec_b = bb.get_backbone(cfg.model)
    alpha = spec_b.alpha_for(cfg.alpha)
    size = cfg.input_size or spec_b.default_size
    bb.check_input_size(spec_b, size)
    weights_file, weights_desc = bb.resolve_weights(spec_b, cfg.weights, alpha)
    if cfg.weights == "auto" and weights_file is None:
        name = spec_b.weight_file(alpha if alpha is not None else 1.0)
        console.print(f"[yellow]note:[/] no ImageNet weights for {spec_b.name} in the Keras cache "
                      f"({bb.keras_cache_dirs()[0]}/{name}): training from scratch. Put the file there for "
                      "transfer learning (--weights imagenet then insists on it).")
    elif weights_file is not None:
        console.print(f"weights: {weights_desc} ({weights_file})")
    return PreprocessSpec(input_size=size, color=cfg.color)


@dataclass
class _Data:
    """What the data step hands to training and export."""
    ds: object
    labels: list[str]
    splits: dict
    arrays: dict                                 # split name -> (x, y)
    skipped: list
    counts: dict
    warnings: list[str]
    test_name: str | None


def _read_data(cfg: ConvertConfig, preprocess: PreprocessSpec, labels: list[str] | None, console,
               progress, timings: dict[str, float]) -> _Data:
    """Open the data set, audit it, split it and decode the crops each step needs."""
    from fer_edge.data.readers import open_dataset
    from fer_edge.data.splits import make_splits

    if cfg.data is None:
        console.print("[yellow]note:[/] no --data given: using the generated synthetic demo set "
                      "(procedural cartoon faces, 7 classes). Pass --data DIR|CSV for real faces.")
    ds = open_dataset(cfg.data, cfg.kind, labels if cfg.is_model_file else cfg.labels)
    labels = list(ds.labels)
    t0 = time.perf_counter()
    warnings = _audit(ds, console, progress, preprocess.input_size)
    timings["audit"] = time.perf_counter() - t0
    splits = make_splits(ds, val_fraction=cfg.val_fraction, seed=cfg.seed)
    test_name = next((n for n in TEST_SPLITS if splits.get(n)), None) if cfg.eval_test else None
    t0 = time.perf_counter()
    arrays, skipped = {}, []
    if cfg.is_model_file:
        # No training: the train split only feeds int8 calibration, so only that many crops are decoded.
        splits["train"] = _balanced_subset(splits.get("train", []), labels, cfg.calib_images, cfg.seed)
    for name in ["train", "val"] + ([test_name] if test_name else []):
        x, y, sk = _load_split(name, splits.get(name, []), preprocess, labels, progress)
        arrays[name] = (x, y)
        skipped += sk
    timings["load_data"] = time.perf_counter() - t0
    if skipped:
        from fer_edge.data.load import skipped_summary

        console.print(f"[yellow]skipped {len(skipped)} unusable image(s):[/]\n{skipped_summary(skipped)}")
    counts = {n: np.bincount(a[1], minlength=len(labels)).tolist() for n, a in arrays.items()}
    console.print("data: " + ", ".join(f"{n} {len(a[1])}" for n, a in arrays.items())
                  + f" images; labels {', '.join(labels)}")
    if len(arrays["train"][1]) == 0 or len(arrays["val"][1]) == 0:
        raise DataError(f"{ds.source}: need training and validation images (got {counts}); "
                        "lower --val-fraction or add data")
    return _Data(ds, labels, splits, arrays, skipped, counts, warnings, test_name)


@dataclass
class _Trained:
    model: object
    info: dict
    best_lr: float | None = None
    class_weights: object = None
    runs: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)   # the `training` section of convert.json and the metadata


def _resume_state(cfg: ConvertConfig, work: Path, console) -> bool:
    """Resume from the checkpoints in `work` when they come from the same settings, else clear them."""
    fp_file = work / "fingerprint.txt"
    resume = cfg.resume and fp_file.is_file() and fp_file.read_text().strip() == cfg.fingerprint()
    if cfg.resume and fp_file.is_file() and not resume:
        console.print("[yellow]note:[/] checkpoints in the output folder come from different settings; "
                      "starting over")
    if resume:
        console.print(f"resuming from the checkpoints in {work}")
    else:
        from fer_edge.convert.train import clear_checkpoints

        clear_checkpoints(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(fp_file, cfg.fingerprint())
    return resume


def _train_step(cfg: ConvertConfig, d: _Data, preprocess: PreprocessSpec, out: Path, console, progress,
                timings: dict[str, float]) -> _Trained:
    """Train (resumable), then the logit adjustment and the reusable backbone weights."""
    from fer_edge.convert import backbones as bb
    from fer_edge.convert.train import train

    work = out / "checkpoints"
    resume = _resume_state(cfg, work, console)
    log_rows: list[dict] = []

    def on_epoch(row: dict) -> None:
        log_rows.append(row)
        console.print(
            f"  lr {row['lr']:g} epoch {row['epoch']} ({row['phase']}) loss {row['loss']:.3f} "
            f"acc {row['accuracy']:.2%} | val acc {row['val_accuracy']:.2%} "
            f"mean recall {row['val_mean_recall']:.2%}" + (" *" if row["best"] else ""), highlight=False)
        _write_log(out / "train_log.csv", log_rows)

    record: dict = {}
    build = classifier_builder(cfg, preprocess, len(d.labels))
    data = {"x_train": d.arrays["train"][0], "y_train": d.arrays["train"][1],
            "x_val": d.arrays["val"][0], "y_val": d.arrays["val"][1]}
    precision, why = resolved_precision(cfg)
    console.print(f"training precision: {precision} ({why})", highlight=False)
    record["precision"] = {"policy": precision, "why": why}
    if cfg.teachers:
        t0 = time.perf_counter()
        data["t_train"], record["distillation"] = _teacher_targets(
            cfg, d.splits["train"], d.skipped, d.labels, out, console, progress)
        timings["teachers"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr = train(build, data, d.labels, train_config(cfg), work, progress=progress, on_epoch=on_epoch, resume=resume,
               log=lambda m: console.print(m, highlight=False))
    timings["train"] = time.perf_counter() - t0
    record["machine"] = next((r.machine for r in tr.runs if r.lr == tr.best_lr), "")
    record["train_seconds"] = round(sum(r.seconds for r in tr.runs), 1)
    if cfg.logit_adjust:
        record["logit_adjustment"] = _logit_adjust(tr.model, data, d.labels, cfg.tta, console)
    if bb.get_backbone(cfg.model).face_native:
        # The start of a later fine-tune (--weights PATH): the backbone without this data's head.
        record["backbone_weights"] = bb.save_backbone_weights(tr.model, out / BACKBONE_WEIGHTS).name
    _write_log(out / "train_log.csv", [row for r in tr.runs for row in r.history])
    if len(cfg.lrs) > 1:
        console.print(f"chosen learning rate: {tr.best_lr:g} (best validation mean per-class recall)")
    return _Trained(tr.model, tr.info, tr.best_lr, tr.class_weights, [r.to_dict() for r in tr.runs], record)


def _export_step(cfg: ConvertConfig, d: _Data, t: _Trained, preprocess: PreprocessSpec, out: Path, console,
                 progress, timings: dict[str, float]):
    """Every variant exported, checked and scored; a failed gate is returned, raised after the record is written."""
    from fer_edge.convert.export import ExportInputs, calibration_set, export_all

    x_tr, y_tr = d.arrays["train"]
    calib = calibration_set(x_tr, y_tr, d.labels, cfg.calib_images, cfg.seed) if "int8" in cfg.variants else None
    xt, yt = d.arrays[d.test_name] if d.test_name else (None, None)
    extra = {"alpha": t.info.get("alpha"), "input_range": t.info.get("input_range"), "lr": t.best_lr,
             "data": str(d.ds.source), "data_kind": d.ds.kind, "seed": cfg.seed, **t.record}
    einp = ExportInputs(model=t.model, labels=d.labels, preprocess=preprocess, backbone=t.info["backbone"],
                        weights=t.info["weights"], variants=list(cfg.variants), calib=calib,
                        x_val=d.arrays["val"][0], y_val=d.arrays["val"][1], x_test=xt, y_test=yt,
                        test_name=d.test_name or "test", int8_output=cfg.int8_output, tta=cfg.tta, extra=extra,
                        max_drop=cfg.max_drop, max_class_drop=cfg.max_class_drop)
    t0 = time.perf_counter()
    gate_error = None
    try:
        export = export_all(einp, out, progress=progress, log=lambda m: console.print(m, highlight=False))
    except GateError as exc:
        gate_error, export = exc, exc.result
    timings["export"] = time.perf_counter() - t0
    timings.update({f"export.{k}": v for k, v in export.seconds.items()})
    return export, calib, gate_error


def _write_record(cfg: ConvertConfig, d: _Data, t: _Trained, preprocess: PreprocessSpec, export, calib,
                  out: Path, timings: dict[str, float]) -> tuple[dict, dict[str, Path], dict[str, int]]:
    """convert.json: the settings, data, training, every variant's scores and the timings (atomically)."""
    from fer_edge.convert.export import metrics_dict

    test_name = d.test_name
    metrics = {"float": {"val": metrics_dict(export.float_scores),
                         **({test_name: metrics_dict(export.float_test_scores)} if export.float_test_scores else {})}}
    paths: dict[str, Path] = {"float": export.float_path}
    sizes = {"float": export.float_path.stat().st_size}
    for v, r in export.variants.items():
        metrics[v] = {"val": metrics_dict(r.scores), **({test_name: metrics_dict(r.test_scores)} if r.test_scores else {})}
        paths[v], sizes[v] = r.path, r.size_bytes
    record = {
        "config": cfg.model_dump(mode="json"),
        "labels": d.labels, "preprocess": preprocess.model_dump(), "model": t.info,
        "data": {"source": str(d.ds.source), "kind": d.ds.kind, "counts": d.counts, "skipped": len(d.skipped),
                 # every unusable file by name (the console shows the first few)
                 "skipped_files": [{"key": s.key, "reason": s.reason} for s in [*d.ds.skipped, *d.skipped]],
                 "test_split": test_name},
        "audit_warnings": d.warnings, "class_weights": t.class_weights, "training": t.record, "best_lr": t.best_lr,
        "runs": t.runs, "metrics": metrics, "sizes": sizes, "paths": {k: str(v) for k, v in paths.items()},
        "calibration": calib.metadata().model_dump() if calib is not None else None,
        "gate": {v: r.gate_failures for v, r in export.variants.items()},
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    atomic_write_text(out / "convert.json", json.dumps(record, indent=2, default=str))
    return metrics, paths, sizes


def convert(cfg: ConvertConfig, console=None) -> ConvertResult:
    """Run a whole conversion; raises fer_edge errors (DataError, ConfigError, GateError, ...).

    The steps: check the backbone (or load the given model) -> read, audit and split the data -> train ->
    export every variant -> write convert.json and the summary."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from rich.console import Console

    from fer_edge.atomic import ensure_dir
    from fer_edge.convert.distribute import strategy_names

    console = console or Console()
    t_all = time.perf_counter()
    cfg = cfg.resolved()
    timings: dict[str, float] = {}
    if cfg.strategy not in strategy_names():
        from fer_edge.errors import UnknownNameError

        raise UnknownNameError("strategy", cfg.strategy, strategy_names())
    external = cfg.is_model_file
    preprocess = None if external else _check_backbone(cfg, console)
    out = Path(cfg.out) if cfg.out else default_out(cfg.model)
    ensure_dir(out)  # a file in the way or a read-only place fails here, before any training
    console.print(f"output folder: [bold]{out}[/]")

    with _progress(console) as progress:
        import keras  # noqa: F401  (imported here so its start-up cost sits under the spinner)

        labels = None
        if external:
            t0 = time.perf_counter()
            model, info, preprocess, labels = _external_model(cfg, console)
            timings["load_model"] = time.perf_counter() - t0
        d = _read_data(cfg, preprocess, labels, console, progress, timings)
        if external:
            trained = _Trained(model, info)
        else:
            trained = _train_step(cfg, d, preprocess, out, console, progress, timings)
        export, calib, gate_error = _export_step(cfg, d, trained, preprocess, out, console, progress, timings)

    timings["total"] = time.perf_counter() - t_all
    _summary_table(console, export, d.test_name)
    metrics, paths, sizes = _write_record(cfg, d, trained, preprocess, export, calib, out, timings)
    console.print(f"done in {timings['total']:.0f} s. Models in [bold]{out}[/]: "
                  + ", ".join(p.name for p in paths.values()))
    if gate_error is not None:
        raise gate_error
    return ConvertResult(out=out, paths=paths, metrics=metrics, sizes=sizes, best_lr=trained.best_lr,
                         runs=trained.runs, timings=timings, warnings=d.warnings)
