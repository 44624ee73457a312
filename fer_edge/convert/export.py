"""Export: the float reference (.keras) and TFLite variants (fp32, fp16, dynamic, int8), each with metadata.

One path only (TOOLCHAIN): `model.export(dir)` to a SavedModel, then
`tf.lite.TFLiteConverter.from_saved_model(dir)` per variant, builtin ops only. Not
`from_concrete_functions` (converts Keras 3 models to NaN) and not `format="litert"` (enables
Flex ops that LiteRT wheels cannot run). Every variant is checked after conversion: builtin ops
only, and integer tensors where the variant promises them.

Atomicity: everything is written into a staging folder inside the output folder and renamed
into place only after every variant converted, verified, evaluated and passed the gate, so an
interrupted or failed convert never leaves a half-written model where a good one is expected.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fer_edge.errors import GateError, ModelError
from fer_edge.metadata import Calibration, ModelMetadata, sidecar_path, tool_versions, write_tflite
from fer_edge.metrics import Scores, gate, score
from fer_edge.ops import KernelReport, analyse_tflite
from fer_edge.registry import Registry

VARIANT_ORDER = ("fp32", "fp16", "dynamic", "int8")


@dataclass
class VariantResult:
    variant: str
    path: Path
    size_bytes: int
    input_dtype: str
    output_dtype: str
    ops: dict[str, int]
    convert_seconds: float
    scores: Scores | None = None
    test_scores: Scores | None = None
    gate_failures: list[str] = field(default_factory=list)


# -- calibration -------------------------------------------------------------------------------------------

@dataclass
class CalibrationSet:
    x: np.ndarray                     # uint8 (N,S,S,C), exactly what the device feeds
    per_class: dict[str, int]
    sha256: str
    on_yield: Callable[[], None] | None = None   # progress hook, called per crop the converter reads

    def metadata(self) -> Calibration:
        return Calibration(n_images=len(self.x), sha256=self.sha256, per_class=self.per_class)


def calibration_set(x: np.ndarray, y: np.ndarray, labels: list[str], n: int = 300, seed: int = 0) -> CalibrationSet:
    """Up to `n` training crops drawn class-balanced (round robin over classes, random within a class).

    The crops are the uint8 arrays training used, i.e. the device's own preprocessing output; the
    hash covers their bytes in order, so two exports calibrated alike can be recognised.
    """
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in range(len(labels))]
    picked: list[int] = []
    n = min(n, len(y))
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    idx = np.array(sorted(picked), np.int64)
    crops = np.ascontiguousarray(x[idx], dtype=np.uint8)
    counts = np.bincount(y[idx], minlength=len(labels))
    per_class = {lab: int(counts[i]) for i, lab in enumerate(labels)}
    return CalibrationSet(crops, per_class, hashlib.sha256(crops.tobytes()).hexdigest())


# -- converters --------------------------------------------------------------------------------------------

CONFIGURERS: Registry[Callable] = Registry("variant")


@CONFIGURERS.register("fp32")
def _fp32(conv, tf, calib, int8_output):
    return "float32", "float32"


@CONFIGURERS.register("fp16")
def _fp16(conv, tf, calib, int8_output):
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return "float32", "float32"


@CONFIGURERS.register("dynamic")
def _dynamic(conv, tf, calib, int8_output):
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return "float32", "float32"


@CONFIGURERS.register("int8")
def _int8(conv, tf, calib, int8_output):
    if calib is None or not len(calib.x):
        raise ModelError("int8 export needs calibration images (training crops); none were given")
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    # float32 of the uint8 crops: the model's own input scaling is part of the graph being calibrated.
    def representative():
        for i in range(len(calib.x)):
            if calib.on_yield is not None:
                calib.on_yield()
            yield [calib.x[i:i + 1].astype(np.float32)]

    conv.representative_dataset = representative
    if int8_output == "float":
        # Calibrate only; `_float_head_int8` quantizes everything but the head afterwards.
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.experimental_mlir_quantizer = True
        conv._experimental_calibrate_only = True
        return "int8", "float32"
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # uint8 input: the board feeds raw pixels; the quantization parameters absorb the model's scaling.
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8 if int8_output == "uint8" else tf.int8
    return "uint8", int8_output


# The head of a classifier (the last dense layer and its softmax) stays float32 in an int8 model with
# int8_output="float": a uint8 softmax output has 1/256 steps, and on ~3% of FER2013 PublicTest images the
# top two scores tied (argmax then takes the lower index); its dense layer is 0.1% of the arithmetic.
FLOAT_HEAD_OPS = ("FULLY_CONNECTED", "SOFTMAX")
INT8_OUTPUTS = ("float", "uint8", "int8")
DEFAULT_INT8_OUTPUT = INT8_OUTPUTS[0]


def _float_head_int8(calibrated: bytes, tf) -> bytes:
    """A calibrated model -> int8 body, float32 head, int8 pixels in (TFLite selective quantization)."""
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.python import util as tfl_util

    quantized = tfl_convert.mlir_quantize(calibrated, fully_quantize=False, denylisted_ops=list(FLOAT_HEAD_OPS))
    # int8 pixels in (scale 1, zero -128: the wrapper flips the top bit of a uint8 crop): a uint8 input needs a
    # QUANTIZE op that XNNPACK does not take, left alone on the builtin kernels (measured).
    return tfl_util.modify_model_io_type(quantized, tf.int8, tf.float32)


def export_saved_model(model, directory: Path) -> Path:
    import tensorflow as tf

    try:
        model.export(str(directory), format="tf_saved_model", verbose=False)
    except tf.errors.ResourceExhaustedError as exc:
        # TensorFlow's own file writer reports a full disk as ResourceExhaustedError, not OSError.
        raise OSError(errno.ENOSPC, "No space left on device", str(directory)) from exc
    return directory


def convert_variant(saved_model: Path, variant: str, calib: CalibrationSet | None = None,
                    int8_output: str = DEFAULT_INT8_OUTPUT) -> tuple[bytes, str, str]:
    import tensorflow as tf

    configure = CONFIGURERS.get(variant)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    in_dt, out_dt = configure(conv, tf, calib, int8_output)
    try:
        data = conv.convert()
        if variant == "int8" and int8_output == "float":
            data = _float_head_int8(data, tf)
    except Exception as exc:  # the converter raises ConverterError and others
        raise ModelError(f"TFLite conversion to {variant} failed: {exc}") from exc
    return data, in_dt, out_dt


def verify(variant: str, rep: KernelReport) -> None:
    """Builtin ops only; int8 integer everywhere; dynamic int8 weights with float I/O (the core's op analysis)."""
    bad = [op for op in rep.ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]
    if bad:
        raise ModelError(f"{variant} export contains non-builtin ops {bad}: LiteRT on the board cannot run them")
    if variant == "int8" and rep.output_dtype == "float32":
        # float head: integer pixels in, every convolution int8, float only after the last DEQUANTIZE.
        if rep.input_dtype not in ("uint8", "int8") or rep.conv_weight_dtypes != ["int8"]:
            raise ModelError(f"int8 export (float head) is not integer in its body: input {rep.input_dtype}, "
                             f"convolution weights {rep.conv_weight_dtypes}")
        if rep.float_ops_outside_head:
            raise ModelError(f"int8 export (float head) runs {rep.float_ops_outside_head} in float outside the head")
    elif variant == "int8":
        if rep.input_dtype not in ("uint8", "int8") or rep.output_dtype not in ("uint8", "int8"):
            raise ModelError(f"int8 export has {rep.input_dtype} input / {rep.output_dtype} output")
        if rep.float_tensors or set(rep.weight_dtypes) - {"int8"}:
            raise ModelError(
                f"int8 export is not fully integer: {rep.float_tensors} float32 tensors, weight dtypes "
                f"{rep.weight_dtypes}"
            )
    if variant == "dynamic" and "int8" not in rep.weight_dtypes:
        raise ModelError(f"dynamic-range export has no int8 weights (weights: {rep.weight_dtypes})")


# -- evaluation --------------------------------------------------------------------------------------------

def evaluate_tflite(path: Path, x: np.ndarray, progress=None, description: str = "evaluate",
                    threads: int | None = None) -> np.ndarray:
    from fer_edge.interpreter import TFLiteModel

    m = TFLiteModel(path, threads=threads)
    task = progress.add_task(description, total=len(x), stats="") if progress is not None else None
    out = np.zeros((len(x), len(m.labels)), np.float32)
    for i in range(len(x)):
        out[i] = m.predict_one(x[i])
        if task is not None and (i % 64 == 63 or i == len(x) - 1):
            progress.update(task, completed=i + 1)
    if task is not None:
        progress.remove_task(task)
    return out


def metrics_dict(s: Scores | None) -> dict:
    if s is None:
        return {}
    return {"n": s.n, "accuracy": s.accuracy, "mean_recall": s.mean_recall, "macro_f1": s.macro_f1,
            "agreement": s.agreement, "recall": s.recall}


# -- the whole export --------------------------------------------------------------------------------------

@dataclass
class ExportInputs:
    model: object                     # keras inference model on uint8-valued input
    labels: list[str]
    preprocess: object                # PreprocessSpec
    backbone: str
    weights: str
    variants: list[str]
    calib: CalibrationSet | None
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    test_name: str = "test"
    int8_output: str = DEFAULT_INT8_OUTPUT
    tta: str = "none"
    extra: dict = field(default_factory=dict)
    max_drop: float | None = None
    max_class_drop: float | None = None


@dataclass
class ExportResult:
    float_path: Path
    float_scores: Scores
    float_test_scores: Scores | None
    variants: dict[str, VariantResult]
    seconds: dict[str, float]


def _staging_dir(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _sweep_stale_staging(out)
    return Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=out))


def _sweep_stale_staging(out: Path) -> None:
    """Remove the staging folders of exports whose process is gone (SIGKILL, power loss): each holds a
    whole SavedModel plus models nobody will publish. A live process's folder is left alone."""
    for d in out.glob(".staging-*-*"):
        pid = d.name.split("-")[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def export_all(inp: ExportInputs, out: Path, progress=None, log: Callable[[str], None] | None = None,
               before_publish: Callable[[], None] | None = None) -> ExportResult:
    """Float reference + every requested variant, evaluated on validation (and test when given), gated,
    then published atomically into `out`."""
    from fer_edge.convert.train import predict_probs

    log = log or (lambda m: None)
    variants = [v for v in VARIANT_ORDER if v in inp.variants]
    for v in inp.variants:
        CONFIGURERS.get(v)  # unknown variant names fail before any work
    out = Path(out)
    staging = _staging_dir(out)
    seconds: dict[str, float] = {}
    published_any = False
    try:
        t0 = time.perf_counter()
        float_probs = predict_probs(inp.model, inp.x_val)
        float_scores = score(inp.y_val, float_probs, inp.labels)
        float_test_probs = float_test = None
        if inp.x_test is not None and len(inp.x_test):
            float_test_probs = predict_probs(inp.model, inp.x_test)
            float_test = score(inp.y_test, float_test_probs, inp.labels)
        seconds["evaluate_float"] = time.perf_counter() - t0

        base = dict(labels=inp.labels, preprocess=inp.preprocess, backbone=inp.backbone, weights=inp.weights,
                    tool_versions=tool_versions(), tta=inp.tta)
        float_meta = ModelMetadata(
            variant="float", input_dtype="float32", output_dtype="float32",
            metrics={"val": metrics_dict(float_scores), **({inp.test_name: metrics_dict(float_test)} if float_test else {})},
            extra=inp.extra, **base)
        staged_float = staging / "model_float.keras"
        inp.model.save(staged_float)
        sidecar_path(staged_float).write_text(float_meta.to_json(), encoding="utf-8")

        t0 = time.perf_counter()
        saved = export_saved_model(inp.model, staging / "saved_model")
        seconds["saved_model"] = time.perf_counter() - t0

        results: dict[str, VariantResult] = {}
        task = progress.add_task("convert", total=len(variants), stats="") if progress is not None else None
        for v in variants:
            if progress is not None:
                progress.update(task, description=f"convert {v}")
            t0 = time.perf_counter()
            ctask = None
            if v == "int8" and inp.calib is not None and progress is not None:
                ctask = progress.add_task("calibrate int8", total=len(inp.calib.x), stats="")
                inp.calib.on_yield = functools.partial(progress.advance, ctask)  # bound now, not late
            try:
                data, in_dt, out_dt = convert_variant(saved, v, inp.calib if v == "int8" else None,
                                                      inp.int8_output)
            finally:
                if ctask is not None:
                    progress.remove_task(ctask)
                    inp.calib.on_yield = None
            info = analyse_tflite(data)
            verify(v, info)
            conv_s = time.perf_counter() - t0
            seconds[f"convert_{v}"] = conv_s
            meta = ModelMetadata(variant=v, input_dtype=info.input_dtype, output_dtype=info.output_dtype,
                                 calibration=inp.calib.metadata() if (v == "int8" and inp.calib) else None,
                                 extra=inp.extra, **base)
            path = staging / f"model_{v}.tflite"
            write_tflite(path, data, meta)
            t0 = time.perf_counter()
            probs = evaluate_tflite(path, inp.x_val, progress, f"evaluate {v} (validation)")
            s = score(inp.y_val, probs, inp.labels, ref_probs=float_probs)
            ts = None
            if float_test_probs is not None:
                tp = evaluate_tflite(path, inp.x_test, progress, f"evaluate {v} ({inp.test_name})")
                ts = score(inp.y_test, tp, inp.labels, ref_probs=float_test_probs)
            seconds[f"evaluate_{v}"] = time.perf_counter() - t0
            meta.metrics = {"val": metrics_dict(s), **({inp.test_name: metrics_dict(ts)} if ts else {})}
            write_tflite(path, data, meta)  # again, now with its own validation metrics inside
            fails = [str(f) for f in gate(float_scores, s, inp.max_drop, inp.max_class_drop)]
            results[v] = VariantResult(v, out / path.name, path.stat().st_size, info.input_dtype,
                                       info.output_dtype, info.ops, conv_s, s, ts, fails)
            if progress is not None:
                progress.advance(task)
            log(f"{v}: validation accuracy {s.accuracy:.2%}, mean recall {s.mean_recall:.2%}, "
                f"agreement with float {s.agreement:.2%}")
        if progress is not None:
            progress.remove_task(task)
        shutil.rmtree(saved, ignore_errors=True)

        failed = {v: r for v, r in results.items() if r.gate_failures}
        if before_publish is not None:
            before_publish()
        # Publish: only models that passed the gate land at the paths a user expects.
        published = [staging / "model_float.keras", sidecar_path(staging / "model_float.keras")]
        for v, r in results.items():
            if v not in failed:
                published += [staging / r.path.name, sidecar_path(staging / r.path.name)]
        for f in published:
            os.replace(f, out / f.name)
            published_any = True
        if failed:
            rejected = out / "rejected"
            rejected.mkdir(exist_ok=True)
            for r in failed.values():
                for f in (staging / r.path.name, sidecar_path(staging / r.path.name)):
                    os.replace(f, rejected / f.name)
                r.path = rejected / r.path.name
        result = ExportResult(out / "model_float.keras", float_scores, float_test, results, seconds)
        if failed:
            msg = "; ".join(f"{v}: " + ", ".join(r.gate_failures) for v, r in failed.items())
            err = GateError(f"quantized model(s) failed the accuracy gate - {msg}. They were written to "
                            f"{out / 'rejected'} for inspection, not beside the float model. "
                            "Loosen --max-drop/--max-class-drop, calibrate on more images, or train longer.")
            err.result = result  # the caller still records what was measured
            raise err
        return result
    except OSError as exc:
        # A full disk (ENOSPC), a quota or a read-only mount. Until publishing (renames within one
        # folder) began nothing was replaced, so the models already in `out` are still the old ones.
        state = ("some models were already replaced by the new ones" if published_any else
                 f"nothing was replaced: the models already in {out} are untouched")
        raise ModelError(
            f"could not write the exported models in {out} ({exc.strerror or exc}"
            f"{': ' + str(exc.filename) if exc.filename else ''}); {state}. Free some space there or "
            "choose another --out, then rerun.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
