"""HTTP sink over real sockets: health, Prometheus metrics, latest result, the MJPEG preview
(off by default), loopback binding, and the status page rendered by a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_until
from fer_edge.errors import ConfigError
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks import HttpSink, HttpSinkConfig, SinkSet, create_sinks
from fer_edge.runtime.types import Event, Face, FrameResult

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def face(tid=3, expr="happy", conf=0.82, box=(100, 80, 260, 260)) -> Face:
    probs = {"angry": 0.04, "happy": 0.06, "sad": 0.08}
    probs[expr] = conf
    return Face(tid, box, 0.93, expr, conf, probs, expr)


def result(i: int, faces=None, events=()) -> FrameResult:
    return FrameResult(i, 1_700_000_000.0 + i, [face()] if faces is None else faces, list(events), "cam0", None,
                       {"detect": 4.0})


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def served():
    m = Metrics()
    sinks = create_sinks([{"type": "http", "port": 0}], m)
    yield sinks.sinks[0], sinks, m
    sinks.close()


def wait(pred, timeout=3.0) -> bool:
    return wait_until(pred, timeout)


def test_healthz_is_200_when_ok_and_503_with_the_reason_otherwise(served):
    sink, _, m = served
    code, _, body = get(sink.url + "/healthz")
    assert code == 503 and json.loads(body)["status"] == "starting"
    m.set_health("ok")
    code, headers, body = get(sink.url + "/healthz")
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    m.set_health("degraded", "camera /dev/video0 lost; retrying in 4 s")
    code, _, body = get(sink.url + "/healthz")
    h = json.loads(body)
    assert code == 503 and h["status"] == "degraded" and "camera /dev/video0 lost" in h["reason"]


# One sample line of the text format: name, optional {labels}, value (no timestamps here).
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? '
                     r'(-?[0-9.e+-]+|NaN|\+Inf|-Inf)$')


def parse_prometheus(text: str) -> dict[str, float]:
    """Strict line check; returns {"name{labels}": value}."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped") and name not in types
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        name = m.group(1)
        family = re.sub(r"_(sum|count)$", "", name) if types.get(re.sub(r"_(sum|count)$", "", name)) == "summary" else name
        assert family in types, f"{name} has no # TYPE line before it"
        key = name + (m.group(2) or "")
        assert key not in samples, f"duplicate series {key}"
        samples[key] = float(m.group(3))
    return samples


def test_metrics_endpoint_is_prometheus_text_and_counts_what_was_published(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()

    class Failing:
        name = "flaky"

        def publish(self, r):
            raise OSError("network unreachable")

        def close(self):
            pass

    http_sink = HttpSink(HttpSinkConfig(port=0), m)
    from fer_edge.runtime.sinks.jsonl import JsonlSink
    from fer_edge.runtime.sinks.config import JsonlSinkConfig

    sinks = SinkSet([http_sink, JsonlSink(JsonlSinkConfig(path=str(tmp_path / "o.jsonl")), m), Failing()], m)
    n = 25
    m.set_health("ok")
    for i in range(n):
        sinks.publish(result(i))
        m.inc("frames")
        m.observe_stage("detect", 4.0 + i % 5)
        m.observe_stage("classify", 0.3)
    m.inc("frames_dropped", 7)
    m.set_gauge("faces", 1)
    # the metrics, not only the workers' own counts: a worker counts a failure just before the metrics do
    assert wait(lambda: sinks.stats()["jsonl"]["published"] == n and sinks.stats()["flaky"]["errors"] == n
                and m.counter("errors") == n and m.counter("sink_published", sink="http") == n
                and m.counter("sink_published", sink="jsonl") == n and m.counter("sink_errors", sink="flaky") == n)
    try:
        code, headers, body = get(http_sink.url + "/metrics")
        assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        s = parse_prometheus(text)
        assert s["fer_edge_frames_total"] == n
        assert s["fer_edge_frames_dropped_total"] == 7
        assert s["fer_edge_errors_total"] == n  # one per failed publish of the flaky sink
        assert s['fer_edge_sink_published_total{sink="jsonl"}'] == n
        assert s['fer_edge_sink_published_total{sink="http"}'] == n
        assert s['fer_edge_sink_errors_total{sink="flaky"}'] == n
        assert s["fer_edge_faces"] == 1
        assert s['fer_edge_stage_latency_ms{stage="detect",quantile="0.5"}'] == 6.0
        assert s['fer_edge_stage_latency_ms_count{stage="classify"}'] == n
        assert s['fer_edge_stage_latency_ms_sum{stage="classify"}'] == pytest.approx(0.3 * n)
        assert s["fer_edge_fps"] > 0
        # the overall state is the worst component: the failing sink degrades the device
        assert s['fer_edge_health{state="degraded"}'] == 1 and s['fer_edge_health{state="ok"}'] == 0
        assert s['fer_edge_component_health{component="sink:flaky",state="degraded"}'] == 1

        # and the reference parser agrees
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert fams["fer_edge_frames"].type == "counter"
        assert fams["fer_edge_stage_latency_ms"].type == "summary"
        assert {smp.labels.get("state") for smp in fams["fer_edge_health"].samples} == {
            "ok", "starting", "degraded", "stopping"}

        code, _, body = get(http_sink.url + "/api/metrics")
        snap = json.loads(body)
        assert snap["counters"]["frames"] == n and snap["stages"]["detect"]["count"] == n
    finally:
        sinks.close()


def test_api_latest_and_events(served):
    sink, sinks, _ = served
    code, _, body = get(sink.url + "/api/latest")
    assert code == 200 and json.loads(body) is None
    sinks.publish(result(0, events=[Event(3, "track_started", None, "happy")]))
    sinks.publish(result(1, faces=[face(expr="sad", conf=0.7)], events=[Event(3, "expression_changed", "happy", "sad")]))
    assert wait(lambda: json.loads(get(sink.url + "/api/latest")[2]) is not None
                and json.loads(get(sink.url + "/api/latest")[2])["frame_index"] == 1)
    latest = json.loads(get(sink.url + "/api/latest")[2])
    assert latest == json.loads(json.dumps(result(1, faces=[face(expr="sad", conf=0.7)],
                                                  events=[Event(3, "expression_changed", "happy", "sad")]).to_dict()))
    events = json.loads(get(sink.url + "/api/events")[2])
    assert [(e["kind"], e["timestamp"]) for e in events] == [("track_started", 1_700_000_000.0),
                                                            ("expression_changed", 1_700_000_001.0)]
    code, _, body = get(sink.url + "/nope")
    assert code == 404 and "/healthz" in json.loads(body)["endpoints"]


def test_preview_is_off_by_default_and_no_frame_is_kept(served):
    sink, sinks, _ = served
    assert not sink.wants_frames and not sinks.wants_frames
    sink.offer_frame(np.zeros((48, 64, 3), np.uint8), result(0))
    assert sink._frame is None
    for path in ("/preview.mjpg", "/preview.jpg"):
        code, _, body = get(sink.url + path)
        assert code == 404 and "preview is off" in json.loads(body)["error"]
    info = json.loads(get(sink.url + "/api/info")[2])
    assert info["preview"] is False


def _frame(i: int) -> np.ndarray:
    f = np.zeros((480, 640, 3), np.uint8)
    f[:, :, 2] = 90  # blue-ish background (RGB)
    f[200:240, (i * 7) % 600:(i * 7) % 600 + 40] = 255
    return f


def test_mjpeg_preview_streams_jpegs_with_boxes_when_enabled():
    import cv2

    m = Metrics()
    sinks = create_sinks(["http://127.0.0.1:0?preview=true&preview_fps=30"], m)
    sink = sinks.sinks[0]
    assert sinks.wants_frames
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            r = result(i)
            sinks.publish(r)
            sinks.offer_frame(_frame(i), r)
            i += 1
            time.sleep(1 / 60)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=5)
        conn.request("GET", "/preview.mjpg")
        resp = conn.getresponse()
        assert resp.status == 200
        ctype = resp.getheader("Content-Type")
        assert ctype.startswith("multipart/x-mixed-replace; boundary=")
        boundary = ctype.split("boundary=")[1].encode()
        jpegs = []
        while len(jpegs) < 3:
            line = resp.fp.readline()
            assert line, "stream ended"
            if line.strip() != b"--" + boundary:
                continue
            headers = {}
            while (h := resp.fp.readline().strip()):
                k, v = h.decode().split(":", 1)
                headers[k.lower()] = v.strip()
            assert headers["content-type"] == "image/jpeg"
            jpegs.append(resp.fp.read(int(headers["content-length"])))
        conn.close()
        for j in jpegs:
            assert j[:2] == b"\xff\xd8" and j[-2:] == b"\xff\xd9"  # SOI ... EOI
        assert len(set(jpegs)) == 3  # new frames, not one image repeated
        img = cv2.imdecode(np.frombuffer(jpegs[-1], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (480, 640, 3)
        # the box's right edge is drawn in the "happy" colour (BGR 60,200,250), the background is not
        def happy_px(region):
            return int((np.abs(region.astype(int) - (60, 200, 250)).max(axis=2) < 60).sum())
        # a line along the box's right edge (JPEG chroma blur leaves ~1 clean px of the 2 drawn)
        assert happy_px(img[120:250, 254:266]) >= 130
        assert happy_px(img[120:250, 290:330]) == 0
        assert np.abs(img[400, 500].astype(int) - (90, 0, 0)).max() < 30

        code, headers, body = get(sink.url + "/preview.jpg")
        assert code == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    finally:
        stop.set()
        t.join()
        t0 = time.perf_counter()
        sinks.close()
        assert time.perf_counter() - t0 < 2.5  # an open stream does not hold up shutdown


def test_listens_on_loopback_by_default_and_rejects_foreign_host_names(served):
    sink, _, _ = served
    assert HttpSinkConfig().host == "127.0.0.1"
    assert sink.server.socket.getsockname()[0] == "127.0.0.1"
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the API
    conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=5)
    conn.request("GET", "/api/latest", headers={"Host": f"evil.example:{sink.port}"})
    r = conn.getresponse()
    assert r.status == 421
    r.read()
    conn.request("GET", "/api/latest", headers={"Host": f"localhost:{sink.port}"})
    assert conn.getresponse().status == 200
    conn.close()
    code, headers, _ = get(sink.url + "/")
    assert code == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def test_port_in_use_is_a_config_error_naming_the_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError) as e:
            create_sinks([f"http://127.0.0.1:{port}"])
        msg = str(e.value)
        assert f"port {port}" in msg and "already in use" in msg and f"127.0.0.1:{port + 1}" in msg


def test_close_frees_the_port():
    sink = HttpSink(HttpSinkConfig(port=0))
    port = sink.port
    sink.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# ---- the status page in a real browser -------------------------------------------------------

def _chromium(tmp_path: Path, url: str, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--window-size=1000,800", "--virtual-time-budget=3000", *mode, url],
        capture_output=True, timeout=60)


def test_status_page_renders_live_data_in_headless_chromium(tmp_path):
    import cv2

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    m = Metrics()
    sinks = create_sinks([HttpSinkConfig(port=0, preview=True, preview_fps=10)], m)
    sink = sinks.sinks[0]
    m.set_health("ok")
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            r = result(i, faces=[face(7, "surprise", 0.91), face(9, "sad", 0.55, box=(380, 100, 500, 230))],
                       events=[Event(7, "expression_changed", "neutral", "surprise")] if i == 0 else [])
            sinks.publish(r)
            m.inc("frames")
            for stage, ms in (("capture", 1.3), ("detect", 4.5), ("classify", 0.3)):
                m.observe_stage(stage, ms)
            sinks.offer_frame(_frame(i), r)
            i += 1
            time.sleep(1 / 30)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        assert wait(lambda: m.fps() > 5)
        dom = _chromium(tmp_path, sink.url + "/", "--dump-dom")
        html = dom.stdout.decode()
        assert dom.returncode == 0 and "<html" in html, dom.stderr.decode()[-2000:]
        exprs = re.findall(r'<span class="face-expr">([^<]*)</span>', html)
        assert exprs == ["surprise", "sad"], "the page did not render the faces from /api/latest"
        assert re.search(r'class="face-meta">#7 · 91%', html)
        fps = re.search(r'id="fps">([^<]*)<', html).group(1)
        assert float(fps) > 5, f"FPS not populated by JS: {fps!r}"
        assert 'class="badge ok" id="health"' in html
        assert re.search(r"<td>detect</td>", html)
        assert 'src="/preview.mjpg"' in html
        assert "neutral → surprise" in html
        row = re.search(r'<span class="dot ok"></span>http</td><td class="num">(\d+)</td>', html)
        assert row and int(row.group(1)) > 5, "the outputs card did not list the http sink"

        png = tmp_path / "status.png"
        shot = _chromium(tmp_path, sink.url + "/", f"--screenshot={png}")
        assert png.is_file(), shot.stderr.decode()[-2000:]
        img = cv2.imread(str(png))
        assert img.shape == (800, 1000, 3)
        assert img.std() > 20  # not a blank page
        # the green "ok" badge (#2ea043) and the "surprise" colour (#39c5cf) are on screen
        def count(rgb):
            return int((np.abs(img.astype(int) - rgb[::-1]).max(axis=2) < 12).sum())
        assert count((0x2E, 0xA0, 0x43)) > 150
        assert count((0x39, 0xC5, 0xCF)) > 150
    finally:
        stop.set()
        t.join()
        sinks.close()
