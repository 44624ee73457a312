"""One JSON encoding for every sink: numpy scalars and arrays become plain numbers and lists,
non-finite floats become null (strict JSON parsers reject NaN), tuples become lists.

A frame result is encoded once however many sinks take it: `result_data` / `result_json` keep
the encoded form on the FrameResult itself, computed by whichever sink thread asks first (the
pipeline thread never pays for it) while the others wait for it instead of encoding again. A
result is therefore frozen once published - the daemon never changes one after that - and the
shared dict must be treated as read-only by every sink.

The text comes from orjson where it is installed (the device extra pins it): ~50x faster than
asdict + the walk + json.dumps on the daemon's records and the same bytes (benchmarks/lib_swaps.py).
Dataclasses and numpy values reach orjson's `default` hook, which gives exactly what `jsonable`
would (a dataclass's fields, `.item()` / `.tolist()`, `to_dict()`, else `str`); whatever orjson
refuses (a non-string key, an integer beyond 64 bits, a lone surrogate) goes through the stdlib
path as before. Two differences left, neither in what the daemon publishes: a float below 1e-4 is
written 0.00001 instead of 1e-05 (the same number; the daemon rounds to 1e-4 or coarser), and a
plain Enum member is written as its value instead of str(member).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from typing import Any, Callable

try:
    import orjson
except ImportError:  # a core-only install: the stdlib encoder, same text
    orjson = None  # type: ignore[assignment]

from fer_edge.runtime.types import FrameResult

# FrameResult.to_dict is asdict: its fields, read directly. A subclass (or a test) that replaces
# to_dict is asked through to_dict, as `jsonable` does.
_PLAIN_TO_DICT = FrameResult.to_dict
_FIELDS: dict[type, tuple[str, ...]] = {}


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


def result_dict(result: Any) -> dict[str, Any]:
    """A FrameResult (or an already converted dict) as plain JSON-ready data (not memoised)."""
    data: dict[str, Any] = jsonable(result.to_dict() if hasattr(result, "to_dict") else result)
    return data


def _default(obj: Any) -> Any:
    """orjson's hook for what it does not encode itself: one step of `jsonable`, same order."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "to_dict") and getattr(type(obj), "to_dict", None) is not _PLAIN_TO_DICT:
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELDS.get(type(obj))
        if names is None:
            names = _FIELDS[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
        return {n: getattr(obj, n) for n in names}
    return str(obj)


# Dataclasses and datetimes go to _default (orjson would write every __dict__ entry of a dataclass,
# and RFC 3339 for a datetime, where the stdlib path writes the fields and str()).
_OPTS = (orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME) if orjson is not None else 0


def _stdlib(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _fast_or_none(obj: Any) -> str | None:
    if orjson is None:
        return None
    try:
        return orjson.dumps(obj, default=_default, option=_OPTS).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None


def _fast(obj: Any, slow: Callable[[Any], str]) -> str:
    text = _fast_or_none(obj)
    return slow(obj) if text is None else text


def _stdlib_obj(obj: Any) -> str:
    return _stdlib(jsonable(obj))


def dumps(obj: Any) -> str:
    """Compact JSON of anything `jsonable` takes: NaN/inf as null, UTF-8 kept."""
    return _fast(obj, _stdlib_obj)


def dumps_ready(data: Any) -> str:
    """`dumps` for data that is already JSON-ready (jsonable's output, or built from it): the
    same text, without walking the data a second time."""
    return _fast(data, _stdlib)


def encode_text(result: Any) -> str:
    """`dumps(result_dict(result))` without the memo (what result_json computes once)."""
    return _fast(result, lambda r: _stdlib(result_dict(r)))


class _Memo:
    __slots__ = ("lock", "data", "text", "fast")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Any] | None = None
        self.text: str | None = None
        self.fast = False   # text is orjson's (so orjson reads it back exactly)

    # A pickled or deep-copied result (a consumer may change the copy) starts with no encoding;
    # a lock could not be copied anyway.
    def __reduce__(self) -> tuple[type[_Memo], tuple[()]]:
        return (_Memo, ())

    def __deepcopy__(self, memo: dict[int, Any]) -> "_Memo":
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


def _text(result: Any, memo: _Memo) -> str:
    if memo.text is None:
        text = _fast_or_none(result)
        memo.fast = text is not None
        if text is None:
            memo.data = result_dict(result)
            text = _stdlib(memo.data)
        memo.text = text
    return memo.text


def _data(result: Any, memo: _Memo) -> dict[str, Any]:
    # Read back from orjson's text: the same dict result_dict gives (NaN as None, tuples as lists,
    # numpy as numbers, key order kept) for a fraction of asdict + the walk, and one encoding.
    # Not from the stdlib's text: orjson would read an integer beyond 64 bits as a float.
    if memo.data is None:
        text = _text(result, memo)
        memo.data = orjson.loads(text) if memo.fast else result_dict(result)
    return memo.data


def result_data(result: Any) -> dict[str, Any]:
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
        return encode_text(result)
    with memo.lock:
        return _text(result, memo)
