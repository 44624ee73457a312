"""A real mosquitto broker on loopback for the MQTT tests, and a paho subscriber that collects.

The broker is benchmarks/_broker.py's (persistence on, in the test's tmp dir, so that a restart
keeps retained messages and persistent subscriber sessions - as a production broker would); this
module adds the pytest side: skips, the `broker` fixture and the Collector.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_broker_module():
    """benchmarks/_broker.py (the broker starter the soak uses too), loaded by path: benchmarks/
    is not a package and tests must not depend on the working directory."""
    name = "fer_edge_bench_broker"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "_broker.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_broker = _load_broker_module()
MOSQUITTO, free_port, port_open = _broker.MOSQUITTO, _broker.free_port, _broker.port_open


class Broker(_broker.Broker):
    """The shared broker; a test that needs what this machine lacks is skipped, not failed."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, tls: dict[str, Path] | None = None):
        need_mosquitto()
        if users and not _broker.MOSQUITTO_PASSWD:
            pytest.skip("mosquitto_passwd not installed (Debian package mosquitto)")
        super().__init__(workdir, users=users, tls=tls)


def need_mosquitto() -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")


@pytest.fixture
def broker(tmp_path):
    need_mosquitto()
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


class Collector:
    """A paho subscriber that keeps every message (topic, payload, retain flag), in arrival order.

    ``persistent=True`` uses a fixed client id and clean_session=False so messages published
    while it is reconnecting (a broker restart) are queued for it by the broker."""

    def __init__(self, port: int, topics: str | list[str] = "#", client_id: str | None = None,
                 persistent: bool = False, username: str | None = None, password: str | None = None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cv = threading.Condition()
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.connected = threading.Event()
        cid = client_id or f"collector-{os.getpid()}-{id(self)}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid,
                                  clean_session=not persistent)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 0.3)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(5):
            raise RuntimeError("collector could not connect to the test broker")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            for t in self.topics:
                client.subscribe(t, qos=1)
            self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self._cv:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cv.notify_all()

    def on(self, topic: str) -> list[bytes]:
        with self._cv:
            return [p for t, p, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.on(topic) if p]

    def wait_for(self, pred: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
