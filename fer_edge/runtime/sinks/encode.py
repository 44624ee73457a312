"""One JSON encoding for every sink: numpy scalars and arrays become plain numbers and lists,
non-finite floats become null (strict JSON parsers reject NaN), tuples become lists.

A frame result is encoded once however many sinks take it: `result_data` / `result_json` keep
the encoded form on the FrameResult itself, computed by whichever sink thread asks first (the
pipeline thread never pays for it) while the others wait for it instead of encoding again. A
result is therefore frozen once published - the daemon never changes one after that - and the
shared dict must be treated as read-only by every sink.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
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
    """A FrameResult (or an already converted dict) as plain JSON-ready data (not memoised)."""
    return jsonable(result.to_dict() if hasattr(result, "to_dict") else result)


def dumps(obj: Any) -> str:
    return dumps_ready(jsonable(obj))


def dumps_ready(data: Any) -> str:
    """`dumps` for data that is already JSON-ready (jsonable's output, or built from it): the
    same text, without walking the data a second time."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


class _Memo:
    __slots__ = ("lock", "data", "text")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict | None = None
        self.text: str | None = None

    # A pickled or deep-copied result (a consumer may change the copy) starts with no encoding;
    # a lock could not be copied anyway.
    def __reduce__(self):
        return (_Memo, ())

    def __deepcopy__(self, memo: dict) -> "_Memo":
        return _Memo()


_MEMO_ATTR = "_fer_edge_json"
_install = threading.Lock()


def _memo(result: Any) -> _Memo | None:
    memo = getattr(result, _MEMO_ATTR, None)
    if memo is not None or isinstance(result, dict):
        return memo
    with _install:   # two sink threads may ask at once: both must get the same memo
        memo = getattr(result, _MEMO_ATTR, None)
        if memo is None:
            memo = _Memo()
            try:
                setattr(result, _MEMO_ATTR, memo)
            except AttributeError:   # __slots__ or frozen: encode per call, as before
                return None
        return memo


def _data(result: Any, memo: _Memo) -> dict:
    if memo.data is None:
        memo.data = result_dict(result)
    return memo.data


def result_data(result: Any) -> dict:
    """`result_dict(result)`, computed once per FrameResult and shared. Read-only."""
    memo = _memo(result)
    if memo is None:
        return result_dict(result)
    with memo.lock:
        return _data(result, memo)


def result_json(result: Any) -> str:
    """`dumps(result_dict(result))` - the compact JSON text of a result - computed once per
    FrameResult and shared by every sink that writes the whole result."""
    memo = _memo(result)
    if memo is None:
        return dumps(result_dict(result))
    with memo.lock:
        if memo.text is None:
            memo.text = dumps_ready(_data(result, memo))
        return memo.text
