"""The daemon: SIGTERM, retries with health, stale-frame dropping, failing frames, sd_notify."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fer_edge.runtime.config import load_config
from fer_edge.runtime.daemon import Daemon, build_pipeline
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sdnotify import Notifier
from fer_edge.runtime.sinks import SinkSet
from fer_edge.runtime.sources import VideoSource
from test_runtime_support import ListSink, face_video, iou  # noqa: F401  (fixture)


def config(model, video, **source):
    return load_config(None, {"classifier": {"model": str(model), "threads": 1},
                              "source": {"type": "video", "path": str(video), **source}})


def test_sigterm_mid_run_stops_fast_with_everything_flushed(tmp_path, face_video, tiny_tflite):
    video, _ = face_video
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fer_edge.cli", "run", "--model", str(tiny_tflite["fp32"]), "--source", str(video),
         "--loop", "--output", f"jsonl:{out}", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.read_text().count("\n") >= 40:   # past the first loop of the video
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        else:
            pytest.fail("the daemon produced no results")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert code == 0, stderr[-2000:]
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"
    lines = out.read_text().splitlines()
    results = [json.loads(line) for line in lines]                 # every line complete JSON
    reported = int(re.search(r"stopped \(SIGTERM\): (\d+) results", stderr).group(1))
    assert len(results) == reported > 40                          # every produced result was flushed
    assert [r["frame_index"] for r in results] == list(range(reported))


class RecordingMetrics(Metrics):
    """The real Metrics, also keeping every health transition (the test reads the sequence)."""

    def __init__(self):
        super().__init__()
        self.transitions = []

    def set_health(self, state, reason="", component="pipeline"):
        self.transitions.append((component, state))
        super().set_health(state, reason, component)


class RaisingOnce(VideoSource):
    """A real video source whose read fails once at `fail_at`, as a camera that drops off the bus."""

    def __init__(self, path, fail_at):
        super().__init__(path)
        self.fail_at, self.failed, self.opens = fail_at, False, []

    def open(self, resume=0):
        self.opens.append(resume)
        super().open(resume)

    def read(self):
        if self.position == self.fail_at and not self.failed:
            self.failed = True
            raise OSError("VIDIOC_DQBUF: No such device")
        return super().read()


def test_source_that_raises_mid_stream_is_retried_and_health_recovers(face_video, tiny_tflite):
    video, truth = face_video
    cfg = config(tiny_tflite["fp32"], video, retry_initial_s=0.05)
    metrics = RecordingMetrics()
    src = RaisingOnce(video, fail_at=7)
    sink = ListSink()
    assert Daemon(cfg, source=src, sinks=SinkSet([sink], metrics), metrics=metrics).run() == 0
    assert src.opens == [0, 7]                                   # reopened where it failed
    *results, end = sink.results
    assert [r.frame_index for r in results] == list(range(len(truth)))   # nothing lost
    assert all(iou(r.faces[0].box, b) > 0.5 for r, b in zip(results, truth))
    assert [(e.kind, e.reason) for e in end.events] == [("track_lost", "source ended")]
    source_states = [s for c, s in metrics.transitions if c == "source"]
    assert source_states == ["degraded", "ok"]
    assert metrics.counter("source_errors") == 1 and metrics.counter("errors") == 1
    assert [s for c, s in metrics.transitions if c == "pipeline"] == ["starting", "ok", "stopping"]


class SlowDetector:
    """Wraps the real detector and takes 40 ms, so a live source outruns inference."""

    name = "slow"

    def __init__(self, inner):
        self.inner = inner

    def detect(self, frame, detect_image=None):
        time.sleep(0.04)
        return self.inner.detect(frame, detect_image)


class PacedVideo(VideoSource):
    """A video played at camera speed (200 fps) and marked live, like a camera."""

    def __init__(self, path):
        super().__init__(path)
        self.live = True

    def read(self):
        time.sleep(0.005)
        return super().read()


def test_live_source_drops_stale_frames_and_counts_them(face_video, tiny_tflite):
    video, truth = face_video
    cfg = config(tiny_tflite["fp32"], video)
    metrics = Metrics()
    pipe = build_pipeline(cfg)
    pipe.detector = SlowDetector(pipe.detector)
    sink = ListSink()
    assert Daemon(cfg, source=PacedVideo(video), pipeline=pipe, sinks=SinkSet([sink], metrics),
                  metrics=metrics).run() == 0
    *results, end = sink.results                                 # a file marked live still ends
    assert end.events and {(e.kind, e.reason) for e in end.events} == {("track_lost", "source ended")}
    processed = [r.frame_index for r in results]
    dropped = metrics.counter("frames_dropped")
    assert dropped > 0 and len(processed) + dropped == len(truth)
    assert processed == sorted(processed) and processed[-1] == len(truth) - 1   # newest frame always wins
    for r in results:                                             # boxes still belong to their frames
        assert iou(r.faces[0].box, truth[r.frame_index]) > 0.5


class FailsOnFrame:
    name = "fails"

    def __init__(self, inner, bad):
        self.inner, self.bad, self.calls = inner, set(bad), 0

    def detect(self, frame, detect_image=None):
        i = self.calls
        self.calls += 1
        if i in self.bad:
            raise RuntimeError("detector blew up")
        return self.inner.detect(frame, detect_image)


def test_failing_frames_are_logged_counted_and_skipped(face_video, tiny_tflite, caplog):
    video, truth = face_video
    cfg = config(tiny_tflite["fp32"], video)
    metrics = RecordingMetrics()
    pipe = build_pipeline(cfg)
    pipe.detector = FailsOnFrame(pipe.detector, bad={3, 10, 11, 12})
    sink = ListSink()
    assert Daemon(cfg, pipeline=pipe, sinks=SinkSet([sink], metrics), metrics=metrics).run() == 0
    got = [r.frame_index for r in sink.results[:-1]]             # the last one closes the track
    assert got == [i for i in range(len(truth)) if i not in {3, 10, 11, 12}]
    assert metrics.counter("pipeline_errors") == 4
    assert "frame 3 failed: detector blew up" in caplog.text
    # three failures in a row degrade health; the next good frame restores it
    assert [s for c, s in metrics.transitions if c == "pipeline"] == ["starting", "ok", "degraded", "ok", "stopping"]


def test_stop_from_another_thread_flushes(face_video, tiny_tflite):
    video, _ = face_video
    cfg = config(tiny_tflite["fp32"], video, loop=True)
    sink = ListSink()
    d = Daemon(cfg, sinks=SinkSet([sink]))
    threading.Timer(0.5, d.stop, args=("test",)).start()
    t0 = time.monotonic()
    assert d.run() == 0
    assert time.monotonic() - t0 < 0.5 + 2.0 + 1.0   # model load included
    assert sink.closed and d.results == len(sink.results) > 0
    # a stop is not the end of the source: no track is reported lost for it
    assert not [e for r in sink.results for e in r.events if e.reason == "source ended"]


def test_sd_notify_ready_watchdog_stopping(tmp_path, face_video, tiny_tflite):
    video, _ = face_video
    addr = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(addr)
    server.settimeout(0.5)
    notifier = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "100000"})
    assert notifier.watchdog_s == 0.1
    cfg = config(tiny_tflite["fp32"], video)
    msgs: list[str] = []
    done = threading.Event()

    def manager() -> None:  # reads while the daemon runs, as systemd does (the queue holds only ~10)
        while True:
            try:
                msgs.append(server.recv(4096).decode())
            except socket.timeout:
                if done.is_set():
                    return

    reader = threading.Thread(target=manager)
    reader.start()
    assert Daemon(cfg, sinks=SinkSet([ListSink()]), notifier=notifier).run() == 0
    done.set()
    reader.join()
    server.close()
    assert msgs[0].startswith("READY=1\nSTATUS=running: video:")
    assert any(m == "WATCHDOG=1" for m in msgs)
    assert msgs[-1].startswith("STOPPING=1")
    assert msgs.index(next(m for m in msgs if m == "WATCHDOG=1")) > 0   # no watchdog before READY


def test_a_manager_that_stops_reading_cannot_block_the_daemon(tmp_path):
    """The receiver's queue fills (net.unix.max_dgram_qlen, 10 by default): sends fail at once, not hang."""
    addr = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(addr)
    notifier = Notifier({"NOTIFY_SOCKET": addr})
    try:
        sent = [notifier.status(f"frame {i}") for i in range(500)]
    finally:
        notifier.close()
        server.close()
    assert sent[0] is True
    assert sent.count(False) > 0 and all(not ok for ok in sent[sent.index(False):])


def test_notifier_outside_systemd_is_silent_and_abstract_socket_names():
    assert not Notifier({}).enabled and Notifier({}).ready() is False and Notifier({}).watchdog() is False
    n = Notifier({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify"})
    assert n.address == "\0/org/freedesktop/systemd1/notify"
    assert Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_dead_helper_thread_is_logged_and_counted(face_video, tiny_tflite, caplog):
    video, _ = face_video
    cfg = config(tiny_tflite["fp32"], video)
    metrics = Metrics()

    class StartsAThread(ListSink):
        def publish(self, result):
            super().publish(result)
            if result.frame_index == 2:
                t = threading.Thread(target=lambda: 1 / 0, name="helper")
                t.start()
                t.join()

    assert Daemon(cfg, sinks=SinkSet([StartsAThread()], metrics), metrics=metrics).run() == 0
    assert metrics.counter("thread_errors") == 1
    assert "thread helper died: division by zero" in caplog.text


def test_missing_video_is_a_data_error_not_a_retry(tmp_path, tiny_tflite):
    from fer_edge.errors import DataError

    cfg = config(tiny_tflite["fp32"], tmp_path / "missing.avi")
    t0 = time.monotonic()
    with pytest.raises(DataError, match="video file not found"):
        Daemon(cfg, sinks=SinkSet([ListSink()])).run()
    assert time.monotonic() - t0 < 5


def test_frames_are_rgb_all_the_way(face_video, tiny_tflite):
    """The classifier sees the same crop whether the frame came through the video adaptor or was
    built in RGB directly: proof that the adaptor converted BGR once and nothing converts again."""
    from fer_edge.preprocess import crop_face
    from test_runtime_support import face_track

    video, _ = face_video
    src = VideoSource(video)
    src.open()
    decoded = src.read().image
    src.close()
    original, box = next(face_track(1))
    x0, y0, x1, y1 = (int(v) for v in box)
    dec, orig = decoded[y0:y1, x0:x1].astype(int), original[y0:y1, x0:x1].astype(int)
    assert np.abs(dec - orig).mean() < 6                                  # MJPG loss only
    assert np.abs(dec[..., 0] - orig[..., 2]).mean() > 20                 # and not B,G,R
    spec = build_pipeline(config(tiny_tflite["fp32"], video)).spec
    a, b = crop_face(decoded, box, spec), crop_face(original, box, spec)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 6


def test_missing_camera_is_retried_with_backoff_while_degraded(tiny_tflite):
    """The real V4L2 adaptor on a camera that is not there (unplugged): the daemon keeps retrying with
    growing delays, health says degraded with the reason, and a stop still ends it at once."""
    cfg = load_config(None, {"classifier": {"model": str(tiny_tflite["fp32"]), "threads": 1},
                             "source": {"type": "camera", "device": "/dev/video97", "retry_initial_s": 0.05,
                                        "retry_max_s": 0.2}})
    metrics = Metrics()
    d = Daemon(cfg, sinks=SinkSet([ListSink()], metrics), metrics=metrics)
    t = threading.Thread(target=d.run)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while metrics.counter("source_errors") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        state, reason = metrics.health()
        assert metrics.counter("source_errors") >= 4
        assert state == "degraded" and "/dev/video97 does not exist" in reason
        assert "retry" in reason
    finally:
        t0 = time.monotonic()
        d.stop("test")
        t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 2.0
