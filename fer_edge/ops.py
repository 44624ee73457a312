"""Which kernels a .tflite runs on: XNNPACK delegate partitions, ops left on builtin kernels, int8 vs float.

The interpreter lists the model's original ops followed by one DELEGATE node per partition
XNNPACK took over. A DELEGATE node's inputs are the tensors entering the partition (activations
and weights) and its outputs the tensors leaving it; an original op belongs to a partition when
walking back from the partition's outputs reaches it without leaving through one of its inputs.
Whatever is not reached ran on the (slower) builtin kernels - int8 HARD_SWISH on MobileNetV3, for one.

In the core: the bench records it per model and `fer-edge doctor` reports it on the board.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INT_KINDS = (np.int8, np.uint8, np.int16)
FLOAT_KINDS = (np.float32, np.float16)


@dataclass
class KernelReport:
    ops: dict[str, int] = field(default_factory=dict)          # original ops by name
    delegate_partitions: int = 0
    delegated_ops: int = 0
    not_delegated: dict[str, int] = field(default_factory=dict)
    int8_ops: int = 0
    float_ops: int = 0
    other_ops: int = 0                                           # int32 shape arithmetic and the like

    @property
    def xnnpack(self) -> bool:
        return self.delegate_partitions > 0

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    def as_dict(self) -> dict[str, Any]:
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


def analyse_ops(ops: list[dict[str, Any]], tensors: list[dict[str, Any]]) -> KernelReport:
    """Build the report from `interpreter._get_ops_details()` and `get_tensor_details()` lists."""
    dtypes = {int(t["index"]): np.dtype(t["dtype"]) for t in tensors}
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    producer = {}
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
    rep = KernelReport(delegate_partitions=len(delegates), delegated_ops=len(covered))
    names: Counter[str] = Counter()
    left: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for op in original:
        names[op["op_name"]] += 1
        kinds[_op_kind(op, dtypes)] += 1
        if int(op["index"]) not in covered:
            left[op["op_name"]] += 1
    rep.ops, rep.not_delegated = dict(names), dict(left)
    rep.int8_ops, rep.float_ops, rep.other_ops = kinds["int8"], kinds["float"], kinds["other"]
    return rep


def analyse_tflite(path: str, threads: int = 1, runtime: str | None = None) -> KernelReport:
    """Load the model in its own interpreter (default delegates on, as TFLiteModel runs it) and report."""
    from fer_edge.interpreter import find_runtime

    rt = find_runtime(runtime)
    interp = rt.interpreter_cls(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    return analyse_ops(interp._get_ops_details(), interp.get_tensor_details())
