"""MQTT sink against a real mosquitto broker on loopback (no mocks): topics, retained state,
Home Assistant discovery, the last will of a killed process, a broker outage, authentication."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import wait_until
from fer_edge.errors import ConfigError
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks import MqttSink, MqttSinkConfig, create_sinks
from fer_edge.runtime.types import Event, Face, FrameResult
from mosquitto import Broker, Collector, broker, need_mosquitto  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]


def face(tid: int, expr: str, conf: float = 0.8, box=(10, 20, 110, 140)) -> Face:
    probs = {"angry": 0.05, "happy": 0.1, "sad": 0.05}
    probs[expr] = conf
    return Face(tid, box, 0.95, expr, conf, probs, expr)


def result(i: int, faces=(), events=()) -> FrameResult:
    return FrameResult(i, 1_700_000_000.0 + i / 30, list(faces), list(events), "test", None, {"detect": 1.0})


def cfg(port: int, **kw) -> MqttSinkConfig:
    base = dict(host="127.0.0.1", port=port, prefix="test/fer", client_id="fer-edge-test", node_id="cam1",
                reconnect_min_s=0.1, reconnect_max_s=0.3, state_interval_s=0.0)
    base.update(kw)
    return MqttSinkConfig(**base)


def wait(pred, timeout=5.0) -> bool:
    return wait_until(pred, timeout)


def test_documented_topics_carry_the_results(broker):
    sub = Collector(broker.port, "test/fer/#")
    m = Metrics()
    sinks = create_sinks([cfg(broker.port)], m)
    try:
        sinks.publish(result(0, [face(3, "happy", 0.7)], [Event(3, "track_started", None, "happy")]))
        sinks.publish(result(1, [face(3, "sad", 0.6)], [Event(3, "expression_changed", "happy", "sad")]))
        assert sub.wait_for(lambda: len(sub.on("test/fer/frame")) == 2 and len(sub.on("test/fer/summary")) >= 2)

        frames = sub.json_on("test/fer/frame")
        assert [f["frame_index"] for f in frames] == [0, 1]
        assert frames[1]["faces"][0]["expression"] == "sad"
        assert frames[1]["faces"][0]["box"] == [10, 20, 110, 140]

        events = sub.json_on("test/fer/events")
        assert [(e["kind"], e["previous"], e["current"], e["frame_index"]) for e in events] == [
            ("track_started", None, "happy", 0), ("expression_changed", "happy", "sad", 1)]

        states = sub.json_on("test/fer/faces/3/state")
        assert [s["expression"] for s in states] == ["happy", "sad"]
        assert states[-1]["confidence"] == pytest.approx(0.6)
        assert states[-1]["probabilities"]["sad"] == pytest.approx(0.6)

        summary = sub.json_on("test/fer/summary")[-1]
        assert (summary["faces"], summary["expression"], summary["track_id"]) == (1, "sad", 3)
        assert sub.on("test/fer/status")[-1] == b"online"
    finally:
        assert sinks.close() == {"mqtt": 0}
        sub.close()
    assert m.counter("sink_published", sink="mqtt") == 2


def test_retained_state_and_discovery_reach_a_late_subscriber(broker):
    m = Metrics()
    sink = MqttSink(cfg(broker.port), m)
    try:
        sink.publish(result(0, [face(7, "happy"), face(8, "angry", 0.9, box=(0, 0, 300, 300))]))
        assert wait(lambda: sink.stats()["sent"] == 1 and sink.stats()["connected"])
        assert wait(lambda: all(i.is_published() for i in list(sink._outstanding)))

        late = Collector(broker.port, ["test/fer/#", "homeassistant/#"])
        assert late.wait_for(lambda: len(late.messages) >= 7)
        retained = {t: p for t, p, r in late.messages if r}
        assert retained["test/fer/status"] == b"online"
        assert json.loads(retained["test/fer/faces/7/state"])["expression"] == "happy"
        assert json.loads(retained["test/fer/faces/8/state"])["expression"] == "angry"
        # the primary face is the largest one
        assert json.loads(retained["test/fer/summary"])["expression"] == "angry"
        assert "test/fer/frame" not in retained  # per-frame results are not retained

        configs = {t: json.loads(p) for t, p in retained.items() if t.startswith("homeassistant/")}
        assert set(configs) == {f"homeassistant/sensor/cam1/{o}/config" for o in ("expression", "confidence", "faces")}
        for obj, c in ((t.split("/")[3], c) for t, c in configs.items()):
            assert c["state_topic"] == "test/fer/summary"
            assert c["availability_topic"] == "test/fer/status"
            assert c["unique_id"] == f"cam1_{obj}"
            assert c["device"]["identifiers"] == ["cam1"]
            assert "value_json" in c["value_template"]
        late.close()

        # A lost track's retained state is cleared: the next late subscriber does not see it.
        sink.publish(result(1, [face(8, "angry", 0.9)], [Event(7, "track_lost", "happy", None)]))
        assert wait(lambda: sink.stats()["sent"] == 2)
        assert wait(lambda: all(i.is_published() for i in list(sink._outstanding)))
        later = Collector(broker.port, "test/fer/faces/#")
        assert later.wait_for(lambda: len(later.messages) >= 1)
        time.sleep(0.2)
        assert {t for t, _, _ in later.messages} == {"test/fer/faces/8/state"}
        later.close()
    finally:
        sink.close()

    # After a clean close: status offline (retained) and no stale per-track state.
    after = Collector(broker.port, "test/fer/#")
    assert after.wait_for(lambda: any(t == "test/fer/status" for t, _, _ in after.messages))
    time.sleep(0.2)
    retained = {t: p for t, p, r in after.messages if r}
    assert retained["test/fer/status"] == b"offline"
    assert not [t for t in retained if "/faces/" in t]
    after.close()


CHILD = textwrap.dedent("""
    import sys, time
    from fer_edge.runtime.metrics import Metrics
    from fer_edge.runtime.sinks import MqttSink, MqttSinkConfig
    from fer_edge.runtime.types import FrameResult
    sink = MqttSink(MqttSinkConfig(host="127.0.0.1", port=int(sys.argv[1]), prefix="will/fer",
                                   client_id="will-child", keepalive=60), Metrics())
    sink.publish(FrameResult(0, time.time()))
    while sink.stats()["sent"] < 1:
        time.sleep(0.01)
    print("ready", flush=True)
    time.sleep(60)
""")


def test_last_will_says_offline_when_the_process_is_killed(broker):
    sub = Collector(broker.port, "will/fer/status")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(broker.port)], stdout=subprocess.PIPE,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == b"ready"
        assert sub.wait_for(lambda: sub.on("will/fer/status")[-1:] == [b"online"])
        child.send_signal(signal.SIGKILL)  # no goodbye: only the broker can say it
        child.wait(5)
        assert sub.wait_for(lambda: sub.on("will/fer/status")[-1:] == [b"offline"], timeout=5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        sub.close()
    late = Collector(broker.port, "will/fer/status")  # the will was published retained
    assert late.wait_for(lambda: late.messages[-1:] == [("will/fer/status", b"offline", True)])
    late.close()


def test_broker_outage_buffers_in_order_counts_overflow_and_resumes(broker):
    buffer_max = 40
    # A persistent session: messages the sink publishes while the collector is still
    # reconnecting after the restart are queued for it by the broker.
    sub = Collector(broker.port, "test/fer/frame", client_id="outage-collector", persistent=True)
    m = Metrics()
    sink = MqttSink(cfg(broker.port, buffer_max=buffer_max, qos=1), m)
    n, slowest = 0, 0.0

    def pub():
        nonlocal n, slowest
        t0 = time.perf_counter()
        sink.publish(result(n, [face(1, "happy")]))
        slowest = max(slowest, time.perf_counter() - t0)
        n += 1

    try:
        for _ in range(10):
            pub()
        assert sub.wait_for(lambda: len(sub.on("test/fer/frame")) == 10)

        broker.stop()
        assert wait(lambda: not sink.stats()["connected"], 5)
        for _ in range(3 * buffer_max):  # ~2 s at ~50 results/s while the broker is down; counted, not
            pub()                        # timed: a loaded machine published only 73 in a timed 2 s
            time.sleep(0.02)
        outage_n = n - 10
        assert outage_n > 2 * buffer_max
        st = sink.stats()
        assert st["buffered"] == buffer_max
        assert st["overflow"] == outage_n - buffer_max
        assert m.counter("sink_dropped", sink="mqtt", reason="buffer") == outage_n - buffer_max
        state, reason = m.health()
        assert state == "degraded" and "127.0.0.1" in reason and "buffering" in reason

        broker.start()  # same port, same persistence directory
        assert sub.wait_for(lambda: len({json.loads(p)["frame_index"] for p in sub.on("test/fer/frame")})
                            == 10 + buffer_max, timeout=10)
        assert wait(lambda: m.health()[0] != "degraded", 5)
        # publishing goes on normally after the outage
        pub()
        assert sub.wait_for(lambda: any(json.loads(p)["frame_index"] == n - 1 for p in sub.on("test/fer/frame")))
    finally:
        sink.close()
        sub.close()

    got = [json.loads(p)["frame_index"] for p in sub.on("test/fer/frame")]
    unique = list(dict.fromkeys(got))  # qos 1 may deliver a duplicate; order of first arrival
    assert unique == sorted(unique), "results arrived out of order"
    # exactly the newest buffer_max results of the outage survived, nothing else was lost
    assert unique == list(range(10)) + list(range(n - 1 - buffer_max, n - 1)) + [n - 1]
    # a publish that waited on the broken connection would take the connect/keepalive timeouts (seconds);
    # the bound sits far from those and from a loaded machine's scheduling noise
    assert slowest < 0.5, f"publish() blocked for {slowest * 1000:.1f} ms"


def test_username_password_and_a_clear_error_for_a_wrong_one(tmp_path):
    need_mosquitto()
    b = Broker(tmp_path / "auth", users={"cam": "s3cret"}).start()
    try:
        sub = Collector(b.port, "auth/#", username="cam", password="s3cret")
        secret = tmp_path / "mqtt.pass"
        secret.write_text("s3cret\n")
        good = MqttSink(cfg(b.port, prefix="auth/ok", username="cam", password_file=secret), Metrics())
        good.publish(result(0, [face(1, "happy")]))
        assert sub.wait_for(lambda: len(sub.on("auth/ok/frame")) == 1)
        good.close()

        # the URL form authenticates as well
        url = create_sinks([f"mqtt://cam:s3cret@127.0.0.1:{b.port}/auth/url?client_id=url"], Metrics())
        url.publish(result(1))
        assert sub.wait_for(lambda: len(sub.on("auth/url/frame")) == 1)
        url.close()

        m = Metrics()
        bad = MqttSink(cfg(b.port, prefix="auth/bad", username="cam", password="wrong", client_id="bad"), m)
        assert wait(lambda: m.health()[0] == "degraded", 5)
        state, reason = m.health()
        assert "refused" in reason and "username/password" in reason, reason
        assert "wrong" not in reason  # the secret is never echoed
        assert "wrong" not in repr(bad.config)
        t0 = time.perf_counter()
        bad.publish(result(0))
        assert time.perf_counter() - t0 < 0.5  # never waits on the network
        t0 = time.perf_counter()
        bad.close()
        assert time.perf_counter() - t0 < 3
        assert bad.stats()["unflushed"] == 1 and m.counter("sink_dropped", sink="mqtt", reason="unflushed") == 1
        assert sub.on("auth/bad/frame") == []
        sub.close()
    finally:
        b.stop()


def _make_tls_files(d: Path) -> dict[str, Path]:
    import shutil

    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl not installed")
    d.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run([openssl, *a], check=True, capture_output=True, cwd=d)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
        "-subj", "/CN=fer-edge test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key"}


def test_tls_with_a_private_ca(tmp_path):
    need_mosquitto()
    tls = _make_tls_files(tmp_path / "pki")
    b = Broker(tmp_path / "tls", tls=tls).start()
    try:
        m = Metrics()
        sinks = create_sinks([f"mqtts://127.0.0.1:{b.port}/tls/fer?ca_file={tls['ca']}&reconnect_min_s=0.1"], m)
        sink = sinks.sinks[0]
        sinks.publish(result(0, [face(2, "sad")]))
        assert wait(lambda: sink.stats()["sent"] == 1 and sink.stats()["connected"], 10)
        sinks.close()
        # the broker's log shows a TLS client, so the bytes really went over TLS
        assert wait(lambda: "fer-edge-" in b.log.read_text(errors="replace"), 2)

        # A client that does not trust the CA is refused, and says so in the health reason.
        m2 = Metrics()
        untrusted = MqttSink(cfg(b.port, tls={}, client_id="untrusted"), m2)
        assert wait(lambda: m2.health()[0] == "degraded", 5)
        assert untrusted.stats()["sent"] == 0
        untrusted.close()
    finally:
        b.stop()


def test_unresolvable_host_is_a_config_error():
    with pytest.raises(ConfigError, match="no-such-broker.invalid"):
        MqttSink(MqttSinkConfig(host="no-such-broker.invalid"), Metrics())


def test_unreachable_broker_never_blocks_and_reports_degraded():
    from mosquitto import free_port

    m = Metrics()
    sink = MqttSink(cfg(free_port(), buffer_max=5), m)  # nothing listens there
    try:
        t0 = time.perf_counter()
        for i in range(20):
            sink.publish(result(i))
        assert time.perf_counter() - t0 < 0.5  # never waits on the network
        assert wait(lambda: m.health()[0] == "degraded", 5)
        assert "unreachable" in m.health()[1]
        assert sink.stats()["buffered"] == 5 and sink.stats()["overflow"] == 15
    finally:
        t0 = time.perf_counter()
        sink.close()
        assert time.perf_counter() - t0 < 2.5


def test_a_track_gone_without_track_lost_is_cleared_after_the_ttl(broker, monkeypatch):
    import fer_edge.runtime.sinks.mqtt as mqtt_mod

    monkeypatch.setattr(mqtt_mod, "_TRACK_TTL_S", 0.2)
    sink = MqttSink(cfg(broker.port), Metrics())
    sub = Collector(broker.port, "test/fer/faces/#")
    try:
        sink.publish(result(0, [face(4, "happy"), face(5, "sad")]))
        assert sub.wait_for(lambda: len(sub.on("test/fer/faces/4/state")) == 1)
        time.sleep(0.3)
        sink.publish(result(1, [face(5, "sad")]))  # track 4 vanished, no event said so
        assert sub.wait_for(lambda: sub.on("test/fer/faces/4/state")[-1:] == [b""])
        assert set(sink._tracks) == {5}
    finally:
        sink.close()
        sub.close()
