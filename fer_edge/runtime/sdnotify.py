"""systemd's sd_notify protocol in a few lines of stdlib: one datagram per message to $NOTIFY_SOCKET.

Type=notify units wait for READY=1; WatchdogSec= expects WATCHDOG=1 at least every
$WATCHDOG_USEC microseconds or restarts the service; STATUS= shows in `systemctl status`.
Outside systemd (no NOTIFY_SOCKET) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

log = logging.getLogger("fer_edge.runtime.sdnotify")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or ""
        if addr.startswith("@"):  # Linux abstract namespace
            addr = "\0" + addr[1:]
        self.address = addr or None
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._last_ping = 0.0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # Non-blocking, as libsystemd's sd_notify: a manager that stops reading fills the
                # receiver's queue (10 datagrams by default) and a blocking send would hang the daemon.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:  # systemd gone, its queue full, socket unwritable: never fatal for the daemon
            log.debug("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self, force: bool = False) -> bool:
        """WATCHDOG=1, at most twice per watchdog interval (call it freely from the main loop)."""
        if not self.watchdog_s:
            return False
        now = time.monotonic()
        if not force and now - self._last_ping < self.watchdog_s / 2:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
