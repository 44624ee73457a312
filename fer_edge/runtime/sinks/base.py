"""Many sinks at once, none able to stall the pipeline or each other.

Each sink gets a worker thread and a bounded queue. ``SinkSet.publish`` only appends to those
queues, so it costs microseconds whatever the sinks do; a slow sink loses its *oldest* queued
results (counted per sink), a sink that raises is logged and counted and the next result is
tried again. ``close`` drains every queue within a deadline and reports what it could not.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from typing import Any, Iterable, Iterator

from fer_edge.registry import Registry
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks.config import SinkConfig, sink_config

log = logging.getLogger("fer_edge.sinks")

# type name -> sink class; a class is built as cls(config, metrics) and has .name, .publish, .close
# (optionally .wants_frames / .offer_frame(frame_rgb, result) / .stats()).
SINKS: Registry[type] = Registry("sink")


class _RateLimitedLog:
    """The first failure with its traceback, then one line per `every_s` with the count."""

    def __init__(self, every_s: float = 30.0):
        self.every_s = every_s
        self._last = 0.0
        self._suppressed = 0

    def error(self, msg: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self._last == 0.0:
            log.error(msg, exc_info=exc)
            self._last = now
        elif now - self._last >= self.every_s:
            log.error("%s (and %d more since the last report)", msg, self._suppressed)
            self._last, self._suppressed = now, 0
        else:
            self._suppressed += 1


class _Worker:
    def __init__(self, sink: Any, metrics: Metrics, queue_max: int):
        self.sink = sink
        self.name: str = sink.name
        self.metrics = metrics
        self.queue_max = queue_max
        self._q: deque[Any] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self.deadline: float | None = None
        self.published = 0
        self.dropped = 0
        self.errors = 0
        self.unflushed = 0
        self.last_error: str | None = None
        self._failing = False
        self._errlog = _RateLimitedLog()
        self.on_gone: Any = None  # set by SinkSet: called once when the output's reader went away
        self.thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self.thread.start()

    def put(self, result: Any, deadline: float | None = None) -> None:
        with self._cv:
            if self._closing:
                # A result after close() is a caller bug, but it is still accounted for.
                self.dropped += 1
                self.metrics.inc("sink_dropped", sink=self.name, reason="closed")
                return
            if deadline is not None and len(self._q) >= self.queue_max:
                self._cv.wait_for(lambda: len(self._q) < self.queue_max or self._closing,
                                  timeout=max(0.0, deadline - time.monotonic()))
            if len(self._q) >= self.queue_max:
                self._q.popleft()
                self.dropped += 1
                self.metrics.inc("sink_dropped", sink=self.name, reason="queue")
            self._q.append(result)
            self._cv.notify_all()

    def queued(self) -> int:
        with self._cv:
            return len(self._q)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._closing:
                    self._cv.wait()
                if not self._q:
                    break
                item = self._q.popleft()
                self._cv.notify_all()  # a publisher may be waiting for room
            try:
                self.sink.publish(item)
            except Exception as exc:  # a sink must never take the others down
                if type(exc).__name__ == "ReaderGone":  # the pipe's reader left: the end, quietly
                    self.unflushed += len(self._q)
                    if self.on_gone is not None:
                        self.on_gone(self.name)
                    with self._cv:
                        self._q.clear()
                        self._closing = True
                    continue
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.inc("sink_errors", sink=self.name)
                self.metrics.inc("errors")
                self._errlog.error(f"sink '{self.name}' failed to publish: {self.last_error}", exc)
                if not self._failing:
                    self._failing = True
                    self.metrics.set_health("degraded", self.last_error, component=f"sink:{self.name}")
            else:
                self.published += 1
                self.metrics.inc("sink_published", sink=self.name)
                if self._failing:
                    self._failing = False
                    self.metrics.set_health("ok", component=f"sink:{self.name}")
        try:
            if self._close_takes_timeout():
                # what is left of SinkSet.close's deadline, so MQTT does not wait past it
                left = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
                self.sink.close(timeout=left)
            else:
                self.sink.close()
        except Exception as exc:  # a failing sink must never take the others down
            log.warning("sink '%s' failed to close: %s", self.name, exc)
        self.metrics.clear_health(f"sink:{self.name}")

    def _close_takes_timeout(self) -> bool:
        try:
            return "timeout" in inspect.signature(self.sink.close).parameters
        except (TypeError, ValueError):
            return False

    def stop(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        with self._cv:
            self._closing = True
            self._cv.notify()

    def abandon(self) -> int:
        """Drop what is still queued (the deadline passed); the worker then closes its sink."""
        with self._cv:
            n = len(self._q)
            self._q.clear()
            self._cv.notify()
        if n:
            self.unflushed += n
            self.dropped += n
            self.metrics.inc("sink_dropped", n, sink=self.name, reason="unflushed")
        return n


class SinkSet:
    """The pipeline's one handle on its outputs. Thread-safe; ``publish`` never blocks."""

    def __init__(self, sinks: Iterable[Any], metrics: Metrics | None = None, queue_max: int | dict[str, int] = 256):
        self.metrics = metrics if metrics is not None else Metrics()
        self.sinks = list(sinks)
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}")
        self._workers = [
            _Worker(s, self.metrics, queue_max.get(s.name, 256) if isinstance(queue_max, dict) else queue_max)
            for s in self.sinks
        ]
        self._frame_sinks = [s for s in self.sinks if getattr(s, "wants_frames", False)]
        self._closed: dict[str, int] | None = None
        self._lock = threading.Lock()
        # The daemon sets this: called (with the sink's name) when an output's reader went away.
        self.on_reader_gone: Any = None
        for w in self._workers:
            w.on_gone = self._reader_gone

    def _reader_gone(self, name: str) -> None:
        log.info("output '%s': its reader went away; ending", name)
        if self.on_reader_gone is not None:
            self.on_reader_gone(name)

    def reopen(self) -> None:
        """Ask every sink that writes a file to reopen it (SIGHUP after logrotate). Signal-safe: flags only."""
        for s in self.sinks:
            fn = getattr(s, "reopen", None)
            if fn is not None:
                fn()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.sinks)

    def __len__(self) -> int:
        return len(self.sinks)

    def __enter__(self) -> "SinkSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def wants_frames(self) -> bool:
        """True when some sink (the HTTP preview) wants frames; otherwise skip offer_frame entirely."""
        return bool(self._frame_sinks)

    def publish(self, result: Any, wait_s: float = 0.0) -> None:
        """Queue `result` for every sink. With the default wait_s=0 this never blocks: a full
        queue drops its oldest result (live camera: the newest matters). A batch source that
        wants every result may pass wait_s > 0 to wait, at most that long in all, for room."""
        deadline = time.monotonic() + wait_s if wait_s > 0 else None
        for w in self._workers:
            w.put(result, deadline)

    def offer_frame(self, frame_rgb: Any, result: Any) -> None:
        """Hand the newest frame to sinks that show it. They copy what they keep and rate-limit
        themselves, so this stays cheap; a failure here is logged, never raised."""
        for s in self._frame_sinks:
            try:
                s.offer_frame(frame_rgb, result)
            except Exception as exc:  # a sink must never take the others down
                self.metrics.inc("errors")
                log.warning("sink '%s' rejected a frame: %s", s.name, exc)

    def close(self, timeout: float = 2.0) -> dict[str, int]:
        """Flush every queue within `timeout` seconds, then close the sinks.

        Returns {sink name: results that could not be flushed} (also counted in the metrics as
        sink_dropped{reason="unflushed"}). Safe to call twice.
        """
        with self._lock:
            if self._closed is not None:
                return dict(self._closed)
            deadline = time.monotonic() + timeout
            for w in self._workers:
                w.stop(deadline)
            for w in self._workers:
                w.thread.join(max(0.0, deadline - time.monotonic()))
            unflushed = {}
            for w in self._workers:
                n = w.abandon() if w.thread.is_alive() else 0
                unflushed[w.name] = n
                if w.thread.is_alive():
                    log.warning("sink '%s' did not finish within %.1f s; %d result(s) not flushed",
                                w.name, timeout, n)
            self._closed = unflushed
            return dict(unflushed)

    def stats(self) -> dict[str, dict[str, Any]]:
        out = {}
        for w in self._workers:
            st: dict[str, Any] = {
                "queued": w.queued(),
                "published": w.published,
                "dropped": w.dropped,
                "errors": w.errors,
                "unflushed": w.unflushed,
                "last_error": w.last_error,
                "alive": w.thread.is_alive(),
            }
            extra = getattr(w.sink, "stats", None)
            if callable(extra):
                try:
                    st["sink"] = extra()
                except Exception as exc:  # a failing sink must never take the others down
                    st["sink"] = {"error": str(exc)}
            out[w.name] = st
        return out


def create_sinks(configs: Iterable[SinkConfig | dict[str, Any] | str], metrics: Metrics | None = None) -> SinkSet:
    """Build every configured sink (URL strings and dicts are accepted too) into a SinkSet.

    If one sink cannot start (a port in use, a bad TLS file) the ones already started are closed
    and the ConfigError propagates.
    """
    metrics = metrics if metrics is not None else Metrics()
    built: list[Any] = []
    queue_max: dict[str, int] = {}
    seen: dict[str, int] = {}
    try:
        for raw in configs:
            cfg = sink_config(raw)
            base = cfg.name or cfg.type
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}-{seen[base]}"
            cfg = cfg.model_copy(update={"name": name})
            cls = SINKS.get(cfg.type)
            built.append(cls(cfg, metrics))
            queue_max[name] = cfg.queue_max
    except BaseException:
        for s in built:
            try:
                s.close()
            except Exception:  # a failing sink must never take the others down
                pass
        raise
    return SinkSet(built, metrics, queue_max)
