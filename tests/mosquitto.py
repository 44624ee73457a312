"""A real mosquitto broker on loopback for the MQTT tests, and a paho subscriber that collects.

The broker runs with persistence on (in the test's tmp dir) so that a restart keeps retained
messages and persistent subscriber sessions - as a production broker would.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    def __init__(self, workdir: Path, users: dict[str, str] | None = None, tls: dict[str, Path] | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.users = users
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mosquitto.log"
        self.conf = self.dir / "mosquitto.conf"
        # Started as root, mosquitto drops to the "mosquitto" user, which cannot read the test's
        # private tmp dir; naming the current user keeps it (ignored when not root).
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {self.dir}/", f"log_dest file {self.log}", "log_type all"]
        if users:
            if not MOSQUITTO_PASSWD:
                pytest.skip("mosquitto_passwd not installed (Debian package mosquitto)")
            pw = self.dir / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 5.0) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {err}\n{log[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        # The port must be free before a restart binds it again.
        deadline = time.monotonic() + 5
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> "Broker":
        self.stop()
        return self.start()


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
