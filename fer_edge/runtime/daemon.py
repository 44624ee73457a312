"""The daemon: capture thread -> pipeline (main thread) -> sinks, with health, metrics and systemd.

Lifecycle: build everything (a bad model or config fails here, before READY=1), start the
capture thread, tell systemd READY=1, then loop: take the newest frame, process it, publish the
result. It ends when a finite source is exhausted (its open tracks are then lost: one last result
with their track_lost events, reason "source ended", or "source failed" when the capture stopped on an
error it cannot retry; exit 0 once every result is published) or on
SIGTERM/SIGINT: capture stops, the frame in hand is finished, and the sinks are flushed within
the 2 s budget. A camera that fails is reopened with backoff by the capture thread while health
is "degraded"; a frame the pipeline fails on is logged, counted and skipped.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from fer_edge.errors import FerEdgeError
from fer_edge.runtime.capture import END, Backoff, CaptureThread, Mailbox
from fer_edge.runtime.config import DaemonConfig
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.pipeline import Pipeline
from fer_edge.runtime.sdnotify import Notifier
from fer_edge.runtime.sources import Frame, Source, build_source
from fer_edge.runtime.tracker import LOST_SOURCE_ENDED, LOST_SOURCE_FAILED, Tracker

if TYPE_CHECKING:  # annotations only: build_pipeline imports them when it builds them
    from fer_edge.detectors import Detector
    from fer_edge.runtime.classifier import Classifier

log = logging.getLogger("fer_edge.runtime.daemon")

STOP_BUDGET_S = 2.0          # SIGTERM -> exit, everything flushed


def interactive() -> bool:
    """Started from a terminal by a person, not by systemd (which sets INVOCATION_ID) or a pipeline."""
    import os
    import sys

    if os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def build_pipeline(config: DaemonConfig, source_name: str = "", detector: Detector | None = None,
                   classifier: Classifier | None = None) -> Pipeline:
    """Detector, classifier and tracker, each built from its own section of the config."""
    from fer_edge.detectors import build_detector
    from fer_edge.runtime.classifier import Classifier

    if classifier is None:
        classifier = Classifier.from_config(config.classifier, config.require_model())
    if detector is None:
        detector = build_detector(config.detector)
    tracker = Tracker(classifier.labels, config.tracker)
    return Pipeline(detector, classifier, tracker, detect_every=config.detector.every, align=config.classifier.align,
                    source_name=source_name)


class Daemon:
    def __init__(self, config: DaemonConfig, *, source: Source | None = None, pipeline: Pipeline | None = None,
                 sinks: Any = None, metrics: Metrics | None = None, notifier: Notifier | None = None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self._source, self._pipeline, self._sinks = source, pipeline, sinks
        self._capture: CaptureThread | None = None
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.stop_requested_at: float | None = None
        self.results = 0
        self.errors = 0
        self._active_sinks: Any = None
        self._stall_reported = False  # _loop resets it for each run

    # --- control --------------------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """Safe from a signal handler or another thread."""
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_requested_at = time.monotonic()
            self.stop_event.set()

    def _install_signals(self) -> dict[signal.Signals, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old: dict[signal.Signals, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda s, _f: self.stop(signal.Signals(s).name))
        # SIGHUP (logrotate's postrotate, `systemctl reload`): reopen output files, keep running.
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda _s, _f: self._reopen_outputs())
        return old

    def _reopen_outputs(self) -> None:
        sinks = self._active_sinks
        if sinks is not None and hasattr(sinks, "reopen"):
            sinks.reopen()

    def _thread_excepthook(self, args: threading.ExceptHookArgs) -> None:
        # A helper thread that dies must be loud: logged with its traceback and counted.
        self.metrics.inc("errors")
        self.metrics.inc("thread_errors")
        # exc_value may be None (typeshed's ExceptHookArgs), which logging's exc_info is not typed to take but
        # handles (the type and traceback are still printed)
        exc_info: Any = (args.exc_type, args.exc_value, args.exc_traceback)
        log.error("thread %s died: %s", getattr(args.thread, "name", "?"), args.exc_value, exc_info=exc_info)

    # --- health ---------------------------------------------------------------------------
    def _source_failed(self, exc: BaseException, attempt: int, delay: float) -> None:
        self.metrics.inc("errors")
        self.metrics.inc("source_errors")
        self.metrics.set_health("degraded", f"source failing ({type(exc).__name__}: {exc}); retry {attempt} "
                                f"in {delay:.1f} s", component="source")
        self.notifier.status(f"degraded: source failing, retry {attempt} in {delay:.1f} s")

    def _source_recovered(self) -> None:
        self.metrics.set_health("ok", component="source")
        self.notifier.status("running")

    def _image_skipped(self, name: str, reason: str) -> None:
        self.metrics.inc("errors")
        log.warning("skipped %s: %s", name, reason)

    # --- main -----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until the source ends or stop(); returns the exit status (0). Library errors raise.

        Start-up is three steps - the source and pipeline, the sinks, the capture thread - then the loop;
        shutting down undoes them in reverse whatever happened (`_shut_down`)."""
        cfg = self.config
        self.metrics.set_health("starting", "loading models")
        old_signals = self._install_signals()
        old_hook = threading.excepthook
        threading.excepthook = self._thread_excepthook
        sinks = capture = None
        try:
            source = self._source or build_source(cfg.source, on_skip=self._image_skipped,
                                                  detect_width=cfg.detector.input_width)
            pipeline = self._pipeline or build_pipeline(cfg, source_name=source.name)
            if not pipeline.source_name:
                pipeline.source_name = source.name
            sinks = self._open_sinks()
            capture = self._start_capture(source)
            self.metrics.set_health("ok")
            self.notifier.ready(f"running: {source.name}")
            log.info("running: source %s (%s), outputs: %s", source.name,
                     "newest frame only" if capture.mailbox.drop else "every frame",
                     ", ".join(o.type for o in cfg.outputs) or "none")
            self._loop(pipeline, capture.mailbox, sinks, stall_s=cfg.source.stall_s if source.live else None)
        finally:
            self._shut_down(capture, sinks, old_hook, old_signals)
        if capture is not None and capture.fatal is not None:
            if isinstance(capture.fatal, FerEdgeError):
                raise capture.fatal
            log.error("capture ended with %r", capture.fatal)
            return 1
        log.info("stopped (%s): %d results", self.stop_reason or "source finished", self.results)
        return 0

    def _open_sinks(self) -> Any:
        """The configured outputs (or the ones given to the constructor); a closed pipe stops the run."""
        if self._sinks is not None:
            sinks = self._sinks
        else:
            from fer_edge.runtime.sinks import create_sinks

            sinks = create_sinks(self.config.outputs, self.metrics)
        self._active_sinks = sinks
        if hasattr(sinks, "on_reader_gone"):
            sinks.on_reader_gone = lambda name: self.stop(f"output {name} closed by its reader")
        return sinks

    def _start_capture(self, source: Source) -> CaptureThread:
        """The capture thread and its mailbox: a live source keeps only the newest frame unless told otherwise;
        an interactive camera that cannot deliver fails fast instead of retrying."""
        scfg = self.config.source
        drop = scfg.drop_stale if scfg.drop_stale is not None else source.live
        wait = scfg.wait_for_source
        fail_fast = scfg.type in ("camera", "picamera2") and (not wait if wait is not None else interactive())
        capture = CaptureThread(
            source, Mailbox(drop=drop), self.stop_event, loop=scfg.loop,
            backoff=Backoff(scfg.retry_initial_s, scfg.retry_max_s),
            max_frames=scfg.max_frames, on_error=self._source_failed, on_recover=self._source_recovered,
            fail_fast=fail_fast)
        self._capture = capture
        capture.start()
        return capture

    def _shut_down(self, capture: CaptureThread | None, sinks: Any, old_hook: Any,
                   old_signals: dict[signal.Signals, Any]) -> None:
        """Stop the capture, flush the sinks within the stop budget, restore the hooks and signals."""
        self.metrics.set_health("stopping", self.stop_reason)
        self.notifier.stopping(self.stop_reason or "source finished")
        self.stop_event.set()
        if capture is not None:
            capture.mailbox.close()
            capture.join(timeout=0.5)
        if sinks is not None:
            spent = time.monotonic() - (self.stop_requested_at or time.monotonic())
            unflushed = sinks.close(timeout=max(0.3, STOP_BUDGET_S - 0.2 - spent))
            if unflushed and any(unflushed.values()):
                log.warning("results not flushed at exit: %s", unflushed)
        threading.excepthook = old_hook
        for sig, handler in old_signals.items():
            signal.signal(sig, handler)
        self.notifier.close()

    def _finish_tracks(self, pipeline: Pipeline, sinks: Any) -> None:
        """Publish the track_lost of every track still open, before the sinks close, so a
        consumer never keeps a face that the video simply stopped showing. The capture sets its
        fatal error before it posts END, so the reason tells an end from a failure."""
        failed = self._capture is not None and self._capture.fatal is not None
        result = pipeline.finish(LOST_SOURCE_FAILED if failed else LOST_SOURCE_ENDED)
        if result is None:
            return
        sinks.publish(result)
        self.results += 1
        for ev in result.events:
            self.metrics.inc("events", kind=ev.kind)
        self.metrics.set_gauge("faces", 0)
        self.metrics.set_gauge("tracks", len(pipeline.tracker.tracks))

    def _stalled(self, stall_s: float | None, last_frame: float) -> bool:
        """No frame from a live source for stall_s seconds: degraded, the watchdog starves (systemd
        restarts a service whose camera hangs inside a driver call), and the capture reopens it."""
        if stall_s is None:
            return False
        quiet = time.monotonic() - last_frame
        if quiet < stall_s:
            if self._stall_reported:
                self._stall_reported = False
                self.metrics.set_health("ok", component="stall")
                log.info("source delivers again")
            return False
        if not self._stall_reported:
            self._stall_reported = True
            self.metrics.inc("source_stalls")
            self.metrics.set_health("degraded", f"no frame for {quiet:.0f} s (stall_s {stall_s:g}); reconnecting",
                                    component="stall")
            self.notifier.status(f"degraded: no frame for {quiet:.0f} s")
            log.warning("source stalled: no frame for %.0f s; reconnecting (watchdog no longer fed)", quiet)
            if self._capture is not None:
                self._capture.request_reopen()
        return True

    def _loop(self, pipeline: Pipeline, mailbox: Mailbox, sinks: Any, stall_s: float | None = None) -> None:
        consecutive_errors = 0
        dropped_seen = 0
        last_status = time.monotonic()
        last_frame = time.monotonic()
        self._stall_reported = False
        while True:
            if not self._stalled(stall_s, last_frame):
                self.notifier.watchdog()
            item = mailbox.get(timeout=0.1)
            if isinstance(item, Frame):
                last_frame = time.monotonic()
            if mailbox.dropped != dropped_seen:
                self.metrics.inc("frames_dropped", mailbox.dropped - dropped_seen)
                dropped_seen = mailbox.dropped
            if self.stop_event.is_set() and item is not END and not isinstance(item, Frame):
                return
            if item is None:
                continue
            if item is END:
                self.stop_reason = self.stop_reason or "source finished"
                if not self.stop_event.is_set():   # the source really ended; a stop is not an end
                    self._finish_tracks(pipeline, sinks)
                return
            frame: Frame = item  # type: ignore[assignment]
            try:
                result = pipeline.process(frame)
            except Exception as exc:  # one bad frame must not end a months-long run
                self.errors += 1
                consecutive_errors += 1
                self.metrics.inc("errors")
                self.metrics.inc("pipeline_errors")
                log.error("frame %d failed: %s", frame.index, exc, exc_info=consecutive_errors == 1)
                if consecutive_errors == 3:
                    self.metrics.set_health("degraded", f"pipeline failing: {exc}")
                continue
            if consecutive_errors:
                if consecutive_errors >= 3:
                    self.metrics.set_health("ok")
                consecutive_errors = 0
            t0 = time.perf_counter()
            sinks.publish(result)
            if sinks.wants_frames:
                sinks.offer_frame(frame.image, result)
            publish_ms = (time.perf_counter() - t0) * 1000
            self.results += 1
            for stage, ms in result.timings_ms.items():
                self.metrics.observe_stage(stage, ms)
            self.metrics.observe_stage("publish", publish_ms)
            self.metrics.inc("frames")
            self.metrics.set_gauge("faces", len(result.faces))
            self.metrics.set_gauge("tracks", len(pipeline.tracker.tracks))
            if result.events:
                for ev in result.events:
                    self.metrics.inc("events", kind=ev.kind)
            now = time.monotonic()
            if now - last_status >= 5.0:
                last_status = now
                self.notifier.status(f"fps={self.metrics.fps():.1f} faces={len(result.faces)} "
                                     f"health={self.metrics.health()[0]}")
            if self.stop_event.is_set():
                return
