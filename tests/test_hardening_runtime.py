"""Faults on the device: a stream that goes away and comes back, a video with damaged frames, a
video that ends - through the real daemon, the real OpenCV/FFmpeg reader and the real HTTP sink.
(A source that raises once, a missing camera, a dying helper thread and failing frames are in
test_daemon.py; a raising or blocking sink in test_sinks.py.)"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fer_edge.runtime.config import load_config
from fer_edge.runtime.daemon import Daemon
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks import HttpSink, HttpSinkConfig, SinkSet
from test_runtime_support import ListSink, frame_results, make_face_video


def frame_offsets(data: bytes) -> list[int]:
    """Where each MJPG frame (a JPEG) starts inside the AVI."""
    return [m.start() for m in re.finditer(b"\xff\xd8\xff", data)]


def damaged_video(tmp_path: Path, n: int, bad: list[int], cut_tail: bool = False) -> Path:
    clean = tmp_path / "clean.avi"
    make_face_video(clean, n=n)
    data = bytearray(clean.read_bytes())
    starts = frame_offsets(data)
    assert len(starts) == n
    for i in bad:                     # wipe the JPEG header: the decoder cannot read that frame
        data[starts[i]:starts[i] + 600] = b"\0" * 600
    if cut_tail:                      # the file ends in the middle of its last frame (copy interrupted)
        data = data[:starts[-1] + 300]
    out = tmp_path / "damaged.avi"
    out.write_bytes(bytes(data))
    return out


def run_daemon(model: Path, video: str, **source) -> tuple[ListSink, Metrics, Daemon]:
    cfg = load_config(None, {"classifier": {"model": str(model), "threads": 1},
                             "source": {"type": "video", "path": video, **source}})
    metrics, sink = Metrics(), ListSink()
    d = Daemon(cfg, sinks=SinkSet([sink], metrics), metrics=metrics)
    assert d.run() == 0
    return sink, metrics, d


def test_damaged_frames_are_skipped_and_named_not_taken_for_the_end(tmp_path, tiny_tflite, caplog):
    """Before: OpenCV's False on frame 10 ended the run there as if the file were over (10 of 30)."""
    video = damaged_video(tmp_path, 30, bad=[10, 11, 20])
    caplog.set_level(logging.WARNING)
    sink, metrics, _ = run_daemon(tiny_tflite["int8"], str(video))
    assert [r.frame_index for r in frame_results(sink.results)] == list(range(27))   # every readable frame, in order
    assert metrics.counter("errors") == 3
    for i in (10, 11, 20):
        assert f"skipped frame {i}: could not be decoded" in caplog.text


def test_a_video_cut_inside_its_last_frame_ends_cleanly(tmp_path, tiny_tflite):
    video = damaged_video(tmp_path, 12, bad=[], cut_tail=True)
    sink, metrics, d = run_daemon(tiny_tflite["int8"], str(video))
    frames = frame_results(sink.results)
    n = len(frames)
    assert n in (11, 12)                       # FFmpeg may conceal the cut frame; the end is the end either way
    assert [r.frame_index for r in frames] == list(range(n))
    assert d.stop_reason == "source finished" and metrics.counter("errors") == 0


# ------------------------------------------------------------------------------------------------
# a network stream that goes away and comes back


class VideoServer:
    """Serves one video file over HTTP on a fixed loopback port; can be stopped and restarted."""

    def __init__(self, data: bytes):
        self.data = data
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "VideoServer":
        data = self.data

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "video/x-msvideo")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="video-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def healthz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait(pred, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def test_stream_lost_and_back_reconnects_with_backoff_and_health_says_degraded(tmp_path, tiny_tflite):
    video = tmp_path / "v.avi"
    make_face_video(video, n=24)
    server = VideoServer(video.read_bytes()).start()
    url = f"http://127.0.0.1:{server.port}/cam.avi"
    cfg = load_config(None, {"classifier": {"model": str(tiny_tflite["int8"]), "threads": 1},
                             "source": {"type": "video", "path": url, "retry_initial_s": 0.05,
                                        "retry_max_s": 0.4}})
    metrics, results = Metrics(), ListSink()
    http = HttpSink(HttpSinkConfig(port=0), metrics)
    d = Daemon(cfg, sinks=SinkSet([http, results], metrics), metrics=metrics)
    reasons: list[str] = []
    runner = threading.Thread(target=d.run, name="daemon")
    runner.start()
    try:
        # 1. the stream delivers
        assert wait(lambda: len(results.results) >= 10, 60), "no results from the stream"
        # 2. the stream goes away: the daemon keeps retrying with growing delays, health is degraded
        server.stop()
        errors_at_loss = metrics.counter("source_errors")

        def degraded_for_a_while() -> bool:
            code, body = healthz(http.url)
            if code == 503 and body["status"] == "degraded":
                reasons.append(body["reason"])
            return metrics.counter("source_errors") >= errors_at_loss + 5

        assert wait(degraded_for_a_while, 30, step=0.05), "the daemon stopped retrying"
        code, body = healthz(http.url)
        assert code == 503 and body["status"] == "degraded"
        assert f"127.0.0.1:{server.port}" in body["reason"] and "could not be opened" in body["reason"]
        delays = [float(m.group(1)) for r in reasons for m in [re.search(r"in (\d+\.\d+) s", r)] if m]
        assert delays and max(delays) == pytest.approx(0.4) and min(delays) < 0.4    # backoff grew to its cap
        capture = [t for t in threading.enumerate() if t.name == "fer-edge-capture"]
        assert capture and capture[0].is_alive(), "the capture thread died during the outage"
        n_lost = len(results.results)
        # 3. the stream comes back on the same address: frames flow again, health recovers by itself
        server.start()
        assert wait(lambda: len(results.results) >= n_lost + 10, 60), "no results after the stream came back"
        assert wait(lambda: healthz(http.url)[0] == 200, 10), "health never recovered"
        assert metrics.counter("thread_errors") == 0
    finally:
        d.stop("test")
        runner.join(10)
        server.stop()
    assert not runner.is_alive()
    indices = [r.frame_index for r in results.results]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
