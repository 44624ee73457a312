"""A real mosquitto on loopback, persistence on: shared by benchmarks/soak.py and the MQTT tests
(tests/mosquitto.py loads this file and adds the pytest fixture and a collecting subscriber).

Test and benchmark tooling, so it lives here rather than in the fer_edge package (the daemon
never starts a broker); it needs nothing beyond the standard library, so both a pytest run and a
plain script can import it. Failures raise BrokerError naming what to install or read.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """mosquitto listening on 127.0.0.1:<a free port>, persistence in `workdir`, so a restart on
    the same port keeps retained messages and persistent subscriber sessions - as a production
    broker would. `extra` lines are appended to the generated mosquitto.conf. `log_all` logs
    every packet (what a failing test wants to read); a long soak turns it off, or the log would
    grow by every message of the run."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, tls: dict[str, Path] | None = None,
                 extra: tuple[str, ...] | list[str] = (), log_all: bool = True):
        if MOSQUITTO is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.users = users
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mosquitto.log"
        self.conf = self.dir / "mosquitto.conf"
        # Started as root, mosquitto drops to the "mosquitto" user, which cannot read a private
        # tmp dir; naming the current user keeps it (ignored when not root).
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {self.dir}/", f"log_dest file {self.log}"]
        if log_all:
            lines.append("log_type all")
        if users:
            if not MOSQUITTO_PASSWD:
                raise BrokerError("mosquitto_passwd is not installed (Debian package mosquitto)")
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
        lines += list(extra)
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 5.0) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise BrokerError(f"mosquitto exited ({self.proc.returncode}): {err}\n{log[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout}s; see {self.log}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        # The port must be free before a restart binds it again.
        deadline = time.monotonic() + timeout
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> "Broker":
        self.stop()
        return self.start()
