"""Sink plumbing: sink URLs, JSON lines (with rotation), isolation of slow and failing sinks,
and the live metrics (FPS, quantiles, Prometheus text)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from fer_edge.errors import ConfigError, UnknownNameError
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks import (
    SINKS,
    HttpSinkConfig,
    JsonlSinkConfig,
    MqttSinkConfig,
    SinkSet,
    create_sinks,
    parse_sink_url,
    sink_config,
)
from fer_edge.runtime.sinks.jsonl import JsonlSink
from fer_edge.runtime.types import Event, Face, FrameResult


def result(i: int, n_faces: int = 1) -> FrameResult:
    faces = [Face(t, (10 * t, 10, 10 * t + 50, 60), 0.9, "happy", 0.75, {"happy": 0.75, "sad": 0.25}, "happy")
             for t in range(n_faces)]
    return FrameResult(i, 1000.0 + i, faces, [Event(0, "track_started", None, "happy")] if i == 0 else [],
                       "video.mp4", None, {"detect": 4.5, "classify": 0.3})


# ---- sink URLs -----------------------------------------------------------------------------

def test_sink_urls_parse_into_typed_configs():
    assert parse_sink_url("jsonl:-") == JsonlSinkConfig(path="-")
    assert parse_sink_url("jsonl:/var/log/fer/out.jsonl").path == "/var/log/fer/out.jsonl"
    c = parse_sink_url("mqtt://cam:p%40ss@broker.lan:1884/home/fer")
    assert isinstance(c, MqttSinkConfig)
    assert (c.host, c.port, c.prefix, c.username) == ("broker.lan", 1884, "home/fer", "cam")
    assert c.password.get_secret_value() == "p@ss" and "p@ss" not in repr(c)
    assert (c.tls, c.qos) == (None, 1)
    d = parse_sink_url("mqtt://broker")
    assert (d.port, d.prefix) == (1883, "fer-edge")
    t = parse_sink_url("mqtts://broker/x?insecure=true&qos=0")
    assert (t.port, t.tls.insecure, t.tls.ca_file, t.qos) == (8883, True, None, 0)
    h = parse_sink_url("http://127.0.0.1:8080")
    assert isinstance(h, HttpSinkConfig) and (h.host, h.port, h.preview) == ("127.0.0.1", 8080, False)
    assert parse_sink_url("http://0.0.0.0:9000?preview=true&preview_fps=2").preview is True
    assert HttpSinkConfig().host == "127.0.0.1" and HttpSinkConfig().preview is False


@pytest.mark.parametrize("bad, why", [
    ("stdout", "no scheme"),
    ("jsonl:", "no path"),
    ("mqtt://", "no broker host"),
    ("mqtt://broker:99999/x", "out of range"),
    ("mqtt://broker/x?qos=3", "qos"),
    ("mqtt://broker/x?colour=red", "colour: unknown key"),
    ("mqtt://broker/a+b", "prefix"),
    ("http://127.0.0.1", "no port"),
    ("https://127.0.0.1:8443", "reverse proxy"),
    ("ftp://x:1", "unknown scheme 'ftp'"),
])
def test_bad_sink_urls_name_the_string_and_the_valid_forms(bad, why):
    with pytest.raises(ConfigError) as e:
        parse_sink_url(bad)
    msg = str(e.value)
    assert f"'{bad}'" in msg and why in msg
    assert "jsonl:PATH" in msg and "mqtt://[USER:PASS@]HOST[:PORT][/PREFIX]" in msg and "http://HOST:PORT" in msg


def test_config_dicts_are_validated_and_unknown_keys_rejected(tmp_path):
    assert isinstance(sink_config({"type": "http", "port": 0}), HttpSinkConfig)
    with pytest.raises(ConfigError, match="prot: unknown key"):
        sink_config({"type": "http", "prot": 80})
    with pytest.raises(ConfigError, match="type"):
        sink_config({"type": "kafka"})
    with pytest.raises(ConfigError, match="ca_file"):
        sink_config({"type": "mqtt", "tls": {"ca_file": "/nonexistent/ca.pem"}})
    pw = tmp_path / "pw"
    pw.write_text("x")
    with pytest.raises(ConfigError, match="password or password_file, not both"):
        sink_config({"type": "mqtt", "password": "a", "password_file": str(pw)})
    assert sink_config({"type": "mqtt", "tls": {}}).port == 8883  # TLS without a port: the TLS port
    with pytest.raises(UnknownNameError, match="Did you mean 'mqtt'"):
        SINKS.get("mqqt")
    assert SINKS.names() == ["http", "jsonl", "mqtt"]


# ---- JSON lines ----------------------------------------------------------------------------

def test_jsonl_file_lines_parse_and_carry_numpy_values(tmp_path):
    out = tmp_path / "sub" / "results.jsonl"
    sinks = create_sinks([f"jsonl:{out}"])
    r = result(0, 2)
    r.faces[0].probabilities = {"happy": np.float32(0.5), "sad": np.float64("nan")}  # NaN is not JSON
    r.faces[0].box = tuple(np.array([1, 2, 3, 4], np.int64))
    sinks.publish(r)
    for i in range(1, 5):
        sinks.publish(result(i))
    assert sinks.close() == {"jsonl": 0}
    lines = out.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["frame_index"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["faces"][0]["probabilities"] == {"happy": 0.5, "sad": None}
    assert rows[0]["faces"][0]["box"] == [1, 2, 3, 4]
    assert rows[0]["events"] == [{"track_id": 0, "kind": "track_started", "previous": None, "current": "happy",
                                  "reason": None}]
    assert rows[1] == json.loads(json.dumps(result(1).to_dict()))


def test_jsonl_stdout(capsys):
    sink = JsonlSink(JsonlSinkConfig(path="-"))
    sink.publish(result(7))
    sink.close()
    assert json.loads(capsys.readouterr().out)["frame_index"] == 7


def test_jsonl_rotation_keeps_n_files(tmp_path):
    out = tmp_path / "r.jsonl"
    frames = range(10, 30)  # two-digit indices: every line has the same length
    line_len = len(json.dumps(result(10).to_dict(), separators=(",", ":"))) + 1
    # room for 3.5 lines: 3 lines per file
    sink = JsonlSink(JsonlSinkConfig(path=str(out), rotate_mb=3.5 * line_len / 2**20, keep=2))
    for i in frames:
        sink.publish(result(i))
    assert sink.rotations == 6
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    idx = {name: [json.loads(x)["frame_index"] for x in (tmp_path / name).read_text().splitlines()]
           for name in files}
    # newest in the live file, the two before in .1 and .2, nothing older kept, no line split
    assert idx["r.jsonl"] == [28, 29]
    assert idx["r.jsonl.1"] == [25, 26, 27]
    assert idx["r.jsonl.2"] == [22, 23, 24]
    # reopening appends rather than truncating
    sink = JsonlSink(JsonlSinkConfig(path=str(out), rotate_mb=None))
    sink.publish(result(30))
    sink.close()
    assert [json.loads(x)["frame_index"] for x in out.read_text().splitlines()] == [28, 29, 30]


def test_jsonl_unwritable_path_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=str(blocker / "out.jsonl")):
        JsonlSink(JsonlSinkConfig(path=str(blocker / "out.jsonl")))


# ---- isolation -----------------------------------------------------------------------------

class Raising:
    name = "raising"

    def __init__(self):
        self.calls = 0
        self.closed = False

    def publish(self, result):
        self.calls += 1
        raise RuntimeError("disk on fire")

    def close(self):
        self.closed = True


class Blocking:
    name = "blocking"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = threading.Event()
        self.got: list[int] = []

    def publish(self, result):
        self.started.set()
        time.sleep(self.seconds)
        self.got.append(result.frame_index)

    def close(self):
        pass


def test_a_raising_and_a_blocking_sink_do_not_stall_a_healthy_one(tmp_path):
    m = Metrics()
    out = tmp_path / "ok.jsonl"
    healthy = JsonlSink(JsonlSinkConfig(path=str(out), name="healthy"), m)
    raising, blocking = Raising(), Blocking(5.0)
    sinks = SinkSet([raising, blocking, healthy], m, queue_max={"raising": 16, "blocking": 8, "healthy": 1000})
    n, slowest = 300, 0.0
    sinks.publish(result(0))
    assert blocking.started.wait(2)  # the blocking sink now sleeps on result 0
    for i in range(1, n):
        t0 = time.perf_counter()
        sinks.publish(result(i))
        slowest = max(slowest, time.perf_counter() - t0)
    # the blocking sink sleeps 5 s: a publish that waited for it would take seconds. The bound is far
    # from both, so a loaded machine cannot fail it (10 ms here once did, under a full test run)
    assert slowest < 1.0, f"publish blocked {slowest * 1000:.1f} ms"

    # the healthy sink gets everything, in order, while the blocking one is still asleep
    deadline = time.monotonic() + 3
    while sinks.stats()["healthy"]["published"] < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert blocking.started.is_set() and blocking.got == []
    assert [json.loads(x)["frame_index"] for x in out.read_text().splitlines()] == list(range(n))

    st = sinks.stats()
    assert st["raising"]["errors"] == raising.calls > 0 and "disk on fire" in st["raising"]["last_error"]
    assert st["raising"]["published"] == 0
    assert st["blocking"]["dropped"] == n - 1 - 8  # one in the sleeping publish, the newest 8 queued
    assert m.counter("sink_dropped", sink="blocking", reason="queue") == n - 9
    assert m.counter("sink_errors", sink="raising") == raising.calls
    assert m.counter("sink_published", sink="healthy") == n
    state, reason = m.health()
    assert state == "degraded" and "sink:raising" in reason and "disk on fire" in reason

    t0 = time.perf_counter()
    unflushed = sinks.close(timeout=0.5)
    took = time.perf_counter() - t0
    assert took < 3.0, f"close took {took:.2f} s"   # its 0.5 s timeout, not the sleeping sink's 5 s
    assert unflushed == {"raising": 0, "blocking": 8, "healthy": 0}
    assert m.counter("sink_dropped", sink="blocking", reason="unflushed") == 8
    assert raising.closed
    # every result is accounted for: published, failed, dropped (queue) or unflushed
    for name in ("raising", "blocking", "healthy"):
        s = sinks.stats()[name]
        in_flight = 1 if name == "blocking" else 0
        assert s["published"] + s["errors"] + s["dropped"] + in_flight == n, (name, s)
    assert sinks.close() == unflushed  # idempotent


def test_close_flushes_everything_queued_within_the_timeout(tmp_path):
    slowish = Blocking(0.002)
    sinks = SinkSet([slowish], queue_max=1000)
    for i in range(200):
        sinks.publish(result(i))
    assert sinks.close(timeout=3.0) == {"blocking": 0}
    assert slowish.got == list(range(200))


def test_frames_are_offered_only_when_a_sink_wants_them():
    class Viewer:
        name, wants_frames = "viewer", True

        def __init__(self):
            self.frames = 0

        def offer_frame(self, frame, result):
            self.frames += 1

        def publish(self, result):
            pass

        def close(self):
            pass

    plain = SinkSet([Blocking(0)])
    assert not plain.wants_frames
    plain.offer_frame(np.zeros((4, 4, 3), np.uint8), result(0))  # a no-op, no error
    plain.close()
    v = Viewer()
    with SinkSet([v]) as s:
        assert s.wants_frames
        s.offer_frame(np.zeros((4, 4, 3), np.uint8), result(0))
    assert v.frames == 1


def test_create_sinks_names_repeats_and_closes_what_it_built_on_failure(tmp_path):
    s = create_sinks([f"jsonl:{tmp_path}/a.jsonl", {"type": "jsonl", "path": str(tmp_path / "b.jsonl")}])
    assert [x.name for x in s] == ["jsonl", "jsonl-2"]
    s.close()
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(ConfigError):
        create_sinks([f"jsonl:{tmp_path}/c.jsonl", f"jsonl:{blocker}/x.jsonl"])


# ---- metrics -------------------------------------------------------------------------------

def test_metrics_fps_quantiles_and_health():
    m = Metrics(fps_window_s=1.0)
    for v in range(1, 101):
        m.observe_stage("detect", float(v))
    snap = m.snapshot()
    st = snap["stages"]["detect"]
    assert st["p50"] == pytest.approx(50.5) and st["p95"] == pytest.approx(95.05)
    assert st["mean"] == pytest.approx(50.5) and st["count"] == 100
    assert snap["fps"] == 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        m.inc("frames")
        time.sleep(0.01)
    assert 60 < m.fps() < 110  # ~90 with the sleep overhead
    time.sleep(1.1)
    assert m.fps() == 0.0  # a stall reads as 0 FPS, not the last rate

    assert m.health() == ("starting", "pipeline")
    m.set_health("ok")
    assert m.health() == ("ok", "")
    m.set_health("degraded", "camera lost, retrying in 2 s")
    m.set_health("degraded", "broker down", component="sink:mqtt")
    state, reason = m.health()
    assert state == "degraded" and "camera lost" in reason and "broker down" in reason
    m.set_health("ok")
    m.clear_health("sink:mqtt")
    assert m.health() == ("ok", "")
    with pytest.raises(ValueError, match="sleepy"):
        m.set_health("sleepy")
    json.dumps(m.snapshot(), allow_nan=False)  # the snapshot is strict JSON


def test_publish_can_wait_for_room_instead_of_dropping():
    slow = Blocking(0.01)
    sinks = SinkSet([slow], queue_max=2)
    t0 = time.perf_counter()
    for i in range(30):
        sinks.publish(result(i), wait_s=1.0)
    took = time.perf_counter() - t0
    assert sinks.close(timeout=2.0) == {"blocking": 0}
    assert slow.got == list(range(30)) and sinks.stats()["blocking"]["dropped"] == 0
    assert took > 0.2  # it did wait for the slow sink
    stuck = Blocking(5.0)
    sinks = SinkSet([stuck], queue_max=1)
    sinks.publish(result(0))
    assert stuck.started.wait(2)
    sinks.publish(result(1))
    t0 = time.perf_counter()
    sinks.publish(result(2), wait_s=0.2)  # the bound holds even when the sink never frees room
    assert 0.15 < time.perf_counter() - t0 < 1.5   # waited its 0.2 s, not the sink's 5 s
    assert sinks.stats()["blocking"]["dropped"] == 1
    sinks.close(timeout=0.1)
