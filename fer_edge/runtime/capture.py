"""The capture thread: reads a source, hands frames to inference through a one-slot mailbox.

A live camera keeps producing whether or not inference keeps up, so the mailbox holds only the
newest frame and counts the stale ones it replaces (never an unbounded queue, never growing
latency). A finite source (video file, image folder) must lose nothing, so there the producer
waits until the slot is free instead. A source that raises is closed and reopened with
exponential backoff, resuming at the position it reached; health is "degraded" meanwhile.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable
from typing import Iterator

from fer_edge.errors import FerEdgeError
from fer_edge.runtime.sources import Frame, Source, SourceConfig

log = logging.getLogger("fer_edge.runtime.capture")

END = object()  # the source is exhausted; nothing more will come


class Mailbox:
    """One slot. `drop=True`: put() overwrites (stale frame dropped and counted). `drop=False`: put() waits."""

    def __init__(self, drop: bool):
        self.drop = drop
        self._item: object | None = None
        self._cond = threading.Condition()
        self.dropped = 0
        self._closed = False

    def put(self, item: object, stop: threading.Event | None = None) -> bool:
        """Deliver `item`; False if the mailbox was closed (or `stop` set) before it could be."""
        with self._cond:
            if not self.drop or item is END:
                while self._item is not None and not self._closed and not (stop and stop.is_set()):
                    self._cond.wait(0.05)
                if self._closed or (stop and stop.is_set() and self._item is not None):
                    return False
            elif self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> object | None:
        """The newest item, or None if nothing arrived within `timeout` seconds."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Backoff:
    initial: float = SourceConfig.model_fields["retry_initial_s"].default   # the source's retry settings
    maximum: float = SourceConfig.model_fields["retry_max_s"].default
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        d = self.initial
        while True:
            yield d
            d = min(self.maximum, d * self.factor)


class CaptureThread(threading.Thread):
    """Runs `source` until it ends or `stop` is set; every frame goes to `mailbox`.

    on_error(exc, attempt, delay) and on_recover() let the daemon drive health and metrics;
    on_frame(frame) counts frames. Library errors (missing file, bad config) are fatal: retrying
    a missing file cannot help, so they end the capture with `fatal` set.
    """

    def __init__(self, source: Source, mailbox: Mailbox, stop: threading.Event, loop: bool = False,
                 backoff: Backoff | None = None, max_frames: int | None = None,
                 on_error: Callable[[BaseException, int, float], None] | None = None,
                 on_recover: Callable[[], None] | None = None,
                 on_frame: Callable[[Frame], None] | None = None, fail_fast: bool = False):
        super().__init__(name="fer-edge-capture", daemon=True)
        self.source, self.mailbox, self.stop = source, mailbox, stop
        self.loop, self.backoff, self.max_frames = loop, backoff or Backoff(), max_frames
        self.on_error, self.on_recover, self.on_frame = on_error, on_recover, on_frame
        self.fatal: BaseException | None = None
        self.frames = 0
        self.errors = 0
        self.fail_fast = fail_fast       # a source that never delivered: stop at its first failure
        self._reopen = threading.Event()

    def request_reopen(self) -> None:
        """Close and reopen the source after its current read returns (the daemon saw a stall)."""
        self._reopen.set()

    def run(self) -> None:
        try:
            self._run()
        except FerEdgeError as exc:  # typed, with its fix: the daemon raises it, the CLI prints its one line
            self.fatal = exc
        except BaseException as exc:  # a dead capture thread must never be silent
            log.exception("capture thread failed")
            self.fatal = exc
        finally:
            try:
                self.source.close()
            except Exception:
                log.exception("closing the source failed")
            self.mailbox.put(END, self.stop)

    def _run(self) -> None:
        delays = None
        attempt = 0
        opened = False
        resume = 0
        pass_start = 0
        while not self.stop.is_set():
            if self.max_frames is not None and self.frames >= self.max_frames:
                return
            try:
                if self._reopen.is_set():
                    self._reopen.clear()
                    if opened:
                        raise TimeoutError("stalled: no frame within stall_s")
                if not opened:
                    self.source.open(resume=resume)
                    opened = True
                frame = self.source.read()
            except FerEdgeError:
                raise
            except Exception as exc:
                if self.fail_fast and self.frames == 0:
                    from fer_edge.errors import DataError

                    raise DataError(f"{self.source.name} cannot deliver frames: {exc}. Check the camera and "
                                    "--source; as a service (or with source.wait_for_source: true) fer-edge "
                                    "keeps retrying instead") from None
                self.errors += 1
                attempt += 1
                if delays is None:
                    delays = self.backoff.delays()
                delay = next(delays)
                resume = getattr(self.source, "position", 0) if self.source.finite else 0
                log.warning("source %s failed (%s: %s); retry %d in %.1f s", self.source.name,
                            type(exc).__name__, exc, attempt, delay)
                if self.on_error:
                    self.on_error(exc, attempt, delay)
                try:
                    self.source.close()
                except Exception:
                    log.exception("closing the failed source raised")
                opened = False
                self.stop.wait(delay)
                continue
            if frame is None:  # finite source ended
                if self.loop:
                    if self.frames == pass_start:
                        # a whole pass without one usable frame: looping would spin (and log) forever
                        from fer_edge.errors import DataError

                        raise DataError(f"--loop: a whole pass over {self.source.name} gave no usable frame "
                                        "(every file was skipped); fix or replace the files")
                    pass_start = self.frames
                    self.source.close()
                    opened, resume = False, 0
                    continue
                return
            if delays is not None:
                delays, attempt = None, 0
                log.info("source %s recovered", self.source.name)
                if self.on_recover:
                    self.on_recover()
            frame.index = self.frames
            self.frames += 1
            if self.on_frame:
                self.on_frame(frame)
            if not self.mailbox.put(frame, self.stop):
                return

