"""The one op analysis of a .tflite: which kernels it runs on, and the dtypes its export is checked by.

Used by the converter (an export's checks: integer body, float head, no Flex ops), the bench (the kernel
report per model and thread count), `fer-edge doctor` on the board (the model's ops and the XNNPACK probe)
and `TFLiteModel.kernel_report()`. Nothing else walks a model's ops.

The interpreter lists the model's original ops followed by one DELEGATE node per partition
XNNPACK took over. A DELEGATE node's inputs are the tensors entering the partition (activations
and weights) and its outputs the tensors leaving it; an original op belongs to a partition when
walking back from the partition's outputs reaches it without leaving through one of its inputs.
Whatever is not reached ran on the (slower) builtin kernels - int8 HARD_SWISH on MobileNetV3, for one.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INT_KINDS = (np.int8, np.uint8, np.int16)
FLOAT_KINDS = (np.float32, np.float16)
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass
class KernelReport:
    ops: dict[str, int] = field(default_factory=dict)          # original ops by name (no DELEGATE nodes)
    delegate_partitions: int = 0
    delegated_ops: int = 0
    not_delegated: dict[str, int] = field(default_factory=dict)
    int8_ops: int = 0
    float_ops: int = 0
    other_ops: int = 0                                           # int32 shape arithmetic and the like
    # dtypes, for the export's checks (fer_edge.convert.export.verify)
    input_dtype: str = ""
    output_dtype: str = ""
    weight_dtypes: list[str] = field(default_factory=list)      # of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED
    conv_weight_dtypes: list[str] = field(default_factory=list)  # the convolutions' alone
    float_ops_outside_head: list[str] = field(default_factory=list)  # float32 ops before the last DEQUANTIZE
    float_tensors: int = 0

    @property
    def xnnpack(self) -> bool:
        return self.delegate_partitions > 0

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    def as_dict(self) -> dict[str, Any]:
        """The kernel report as the bench records it (bench.json `kernels`)."""
        return {
            "ops": self.ops, "delegate_partitions": self.delegate_partitions, "delegated_ops": self.delegated_ops,
            "not_delegated": self.not_delegated, "int8_ops": self.int8_ops, "float_ops": self.float_ops,
            "other_ops": self.other_ops, "xnnpack": self.xnnpack,
        }


def _op_kind(op: dict[str, Any], dtypes: dict[int, np.dtype[Any]]) -> str:
    """int8 / float / other by the op's first activation input (else its first output)."""
    for idx in list(op["inputs"])[:1] + list(op["outputs"])[:1]:
        dt = dtypes.get(int(idx))
        if dt is None:
            continue
        if dt in INT_KINDS:
            return "int8"
        if dt in FLOAT_KINDS:
            return "float"
        return "other"
    return "other"


def _delegated(original: list[dict[str, Any]], delegates: list[dict[str, Any]]) -> set[int]:
    """Indices of the original ops inside some DELEGATE partition (the walk in the module docstring)."""
    producer: dict[int, dict[str, Any]] = {}
    for op in original:
        for t in op["outputs"]:
            producer[int(t)] = op
    covered: set[int] = set()
    for d in delegates:
        boundary = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary:
                continue
            seen.add(t)
            prod = producer.get(t)
            if prod is None or int(prod["index"]) in covered:
                continue
            covered.add(int(prod["index"]))
            stack.extend(int(i) for i in prod["inputs"] if int(i) >= 0)
    return covered


def analyse_ops(ops: list[dict[str, Any]], tensors: list[dict[str, Any]], inputs: list[dict[str, Any]] | None = None,
                outputs: list[dict[str, Any]] | None = None) -> KernelReport:
    """The report from `interpreter._get_ops_details()` and `get_tensor_details()` (and, for the I/O dtypes,
    `get_input_details()` / `get_output_details()`)."""
    dtypes = {int(t["index"]): np.dtype(t["dtype"]) for t in tensors}
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    covered = _delegated(original, delegates)
    rep = KernelReport(delegate_partitions=len(delegates), delegated_ops=len(covered))
    names: Counter[str] = Counter()
    left: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    weights: set[str] = set()
    conv_weights: set[str] = set()
    last_deq = max((i for i, op in enumerate(original) if op["op_name"] == "DEQUANTIZE"), default=len(original))
    for i, op in enumerate(original):
        name = op["op_name"]
        names[name] += 1
        kinds[_op_kind(op, dtypes)] += 1
        if int(op["index"]) not in covered:
            left[name] += 1
        if name in WEIGHTED_OPS and len(op["inputs"]) > 1 and int(op["inputs"][1]) in dtypes:
            w = dtypes[int(op["inputs"][1])].name
            weights.add(w)
            if name != "FULLY_CONNECTED":
                conv_weights.add(w)
        first = int(op["inputs"][0]) if len(op["inputs"]) else -1
        if (first >= 0 and dtypes.get(first) == np.float32 and i < last_deq
                and name not in ("QUANTIZE", "DEQUANTIZE")):
            rep.float_ops_outside_head.append(name)
    rep.ops, rep.not_delegated = dict(names), dict(left)
    rep.int8_ops, rep.float_ops, rep.other_ops = kinds["int8"], kinds["float"], kinds["other"]
    rep.weight_dtypes, rep.conv_weight_dtypes = sorted(weights), sorted(conv_weights)
    rep.float_tensors = sum(dt == np.float32 for dt in dtypes.values())
    if inputs:
        rep.input_dtype = np.dtype(inputs[0]["dtype"]).name
    if outputs:
        rep.output_dtype = np.dtype(outputs[0]["dtype"]).name
    return rep


def analyse_interpreter(interp: Any) -> KernelReport:
    """The report of an interpreter whose tensors are allocated (its delegates applied)."""
    return analyse_ops(interp._get_ops_details(), interp.get_tensor_details(), interp.get_input_details(),
                       interp.get_output_details())


def analyse_tflite(model: str | os.PathLike[str] | bytes, threads: int = 1, runtime: str | None = None) -> KernelReport:
    """Load a .tflite (a path, or the flatbuffer's bytes) in its own interpreter, default delegates on as
    TFLiteModel runs it, and report."""
    from fer_edge.interpreter import find_runtime

    rt = find_runtime(runtime)
    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    interp = rt.interpreter_cls(**source, num_threads=threads)
    interp.allocate_tensors()
    return analyse_interpreter(interp)
