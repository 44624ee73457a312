"""Repeated identical log lines are rate-limited: the first one, then a count per interval.

A bad source under `--loop`, a camera that fails 30 times a second, a broker that is down: each
would otherwise write the same warning without end (measured: 34 MB of log in 8 s). The filter
sits on the handler, so it holds for every logger in the process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

INTERVAL_S = 60.0
_MAX_KEYS = 1024  # distinct messages remembered; the oldest is forgotten first


class RepeatFilter(logging.Filter):
    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._seen: OrderedDict[tuple[Any, ...], list[float]] = OrderedDict()  # key -> [window start, suppressed count]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is the logging module's to report
            return True
        key = (record.name, record.levelno, text)
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None:
                self._seen[key] = [now, 0]
                if len(self._seen) > _MAX_KEYS:
                    self._seen.popitem(last=False)
                return True
            self._seen.move_to_end(key)
            if now - entry[0] < self.interval_s:
                entry[1] += 1
                return False
            count, entry[0], entry[1] = entry[1], now, 0
        if count:
            record.msg, record.args = f"{text} (repeated {count} more times in the last {self.interval_s:.0f} s)", None
            record.exc_info = record.exc_text = None  # the traceback was shown the first time
        return True


def install(handler: logging.Handler, interval_s: float = INTERVAL_S) -> RepeatFilter:
    f = RepeatFilter(interval_s)
    handler.addFilter(f)
    return f
