"""One JSON encoding for every sink: numpy scalars and arrays become plain numbers and lists,
non-finite floats become null (strict JSON parsers reject NaN), tuples become lists."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    # numpy without importing it: scalars have .item(), arrays .tolist()
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    return str(obj)


def result_dict(result: Any) -> dict:
    """A FrameResult (or an already converted dict) as plain JSON-ready data."""
    return jsonable(result.to_dict() if hasattr(result, "to_dict") else result)


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), separators=(",", ":"), allow_nan=False, ensure_ascii=False)
