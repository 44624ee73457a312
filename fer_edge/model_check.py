"""A model is checked before it runs: its metadata against its tensors, once, at load.

Everything the pipeline later relies on is checked here, so a mismatch is one clear refusal at
load (a ModelError naming the model, what disagrees and the fix) instead of per-frame failures or
wrong answers: one input and one output; the input shape, colour and dtype the metadata
promises; one output per label; quantization parameters that can be used; and outputs that are
probabilities (non-negative, summing to one) - checked both from the output's quantized range and
by running the model once on a mid-grey input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fer_edge.errors import ModelError

# Dequantized softmax outputs span [0, ~1]; a range reaching below this, or far above 1, is logits.
_PROB_LOW, _PROB_HIGH = -0.02, 1.5


def _fail(path: Path, what: str, fix: str) -> ModelError:
    return ModelError(f"{path}: {what}; {fix}")


def check_model(path: Path, meta: Any, interp: Any, run_probe: bool = True) -> None:
    """Raise ModelError unless `meta` (ModelMetadata) describes the loaded `interp` (allocated)."""
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1:
        raise _fail(path, f"the model has {len(inputs)} inputs; fer-edge feeds one image tensor",
                    "export a single-input classifier")
    if len(outputs) != 1:
        raise _fail(path, f"the model has {len(outputs)} outputs ({', '.join(o['name'] for o in outputs)}); "
                          "fer-edge reads one vector of class probabilities", "export a single-output classifier")
    inp, out = inputs[0], outputs[0]
    labels = list(meta.labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise _fail(path, f"its metadata names labels {labels}; a classifier needs two or more distinct labels",
                    "re-export the model with its labels in output order")

    shape = tuple(int(v) for v in inp["shape"][1:])
    if shape != tuple(meta.preprocess.shape):
        raise _fail(path, f"input shape {shape} disagrees with its metadata {tuple(meta.preprocess.shape)} "
                          f"({meta.preprocess.input_size} px {meta.preprocess.color})", "re-export the model")

    in_dt, out_dt = np.dtype(inp["dtype"]), np.dtype(out["dtype"])
    # The variant the metadata promises must be the one in the file (a sidecar .json copied beside
    # another export would otherwise pass a float model off as int8, or the reverse).
    integer_input = in_dt in (np.int8, np.uint8)
    if (meta.variant == "int8") != integer_input:
        raise _fail(path, f"its metadata says variant {meta.variant}, but the model takes {in_dt.name} input, "
                          f"which is {'an int8 export' if integer_input else 'a float export, not int8'}. The "
                          "metadata belongs to another export (a sidecar .json copied beside the wrong model?)",
                    "re-export, or copy the matching .json")
    for what, declared, actual in (("input", meta.input_dtype, in_dt), ("output", meta.output_dtype, out_dt)):
        if declared and np.dtype(declared) != actual:
            raise _fail(path, f"its metadata says {what} dtype {declared} but the tensor is {actual.name}",
                        "the metadata belongs to another export; re-export the model")
    if in_dt not in (np.float32, np.int8, np.uint8):
        raise _fail(path, f"input dtype {in_dt.name} is not float32, int8 or uint8", "re-export the model")
    if out_dt not in (np.float32, np.int8, np.uint8):
        raise _fail(path, f"output dtype {out_dt.name} is not float32, int8 or uint8", "re-export the model")

    out_shape = [int(v) for v in out["shape"]]
    k = out_shape[-1] if out_shape else 0
    if len(out_shape) != 2 or k != len(labels):
        raise _fail(path, f"the output tensor has shape {out_shape} ({k} values) but its metadata names "
                          f"{len(labels)} labels ({', '.join(labels)})",
                    "the labels must list every output in order: re-export the model, or give the right --labels")

    if integer_input:
        scale, _ = inp["quantization"]
        if not np.isfinite(scale) or scale < 0:
            raise _fail(path, f"input quantization scale {scale} is unusable", "re-export the model")
    if out_dt != np.float32:
        scale, zero = out["quantization"]
        if not np.isfinite(scale) or scale <= 0:
            raise _fail(path, f"output quantization scale {scale} cannot be turned into probabilities",
                        "re-export the model")
        info = np.iinfo(out_dt)
        low, high = (info.min - zero) * scale, (info.max - zero) * scale
        if low < _PROB_LOW or high > _PROB_HIGH:
            raise _fail(path, f"its {out_dt.name} output spans {low:.3g}..{high:.3g} after dequantization, "
                              "so it holds logits or scores, not probabilities",
                        "end the model with a softmax before export")
    if run_probe:
        _probe(path, interp, inp, out, in_dt, out_dt)


def _probe(path: Path, interp: Any, inp: dict[str, Any], out: dict[str, Any], in_dt: np.dtype[Any],
           out_dt: np.dtype[Any]) -> None:
    """Run the model once on a mid-grey image: its outputs must be probabilities."""
    x = np.full([int(v) for v in inp["shape"]], 128, np.uint8)
    if in_dt == np.float32:
        x = x.astype(np.float32)
    elif in_dt == np.int8:
        x = (x.astype(np.int16) - 128).astype(np.int8)
    try:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = np.asarray(interp.get_tensor(out["index"]), np.float32)
    except (ValueError, RuntimeError) as exc:
        raise _fail(path, f"the model fails on a test input ({exc})", "re-export the model") from exc
    tol = 0.02
    if out_dt != np.float32:
        scale, zero = out["quantization"]
        y = (y - zero) * scale
        tol = max(tol, scale * y.size)
    total = float(y.sum())
    if not np.all(np.isfinite(y)) or y.min() < -tol or abs(total - 1.0) > max(tol, 0.05):
        raise _fail(path, f"its outputs are not probabilities (on a grey test image: min {float(y.min()):.3g}, "
                          f"sum {total:.3g}; probabilities are >= 0 and sum to 1)",
                    "end the model with a softmax before export")
