"""HTTP sink: status page, health, Prometheus metrics, latest result, optional MJPEG preview.

Endpoints (all GET):
  /               status page (self-contained: HTML + CSS + JS from the package, no CDN)
  /healthz        200 {"status": "ok", ...} when healthy, 503 with the reason otherwise
  /metrics        Prometheus text exposition format
  /api/latest     the latest FrameResult as JSON (null before the first)
  /api/metrics    the metrics snapshot as JSON (what the status page shows)
  /api/events     the last 50 tracker events
  /api/info       version, preview on/off
  /preview.mjpg   multipart MJPEG with boxes and labels - only when ``preview`` is on, else 404
  /preview.jpg    one JPEG of the same - only when ``preview`` is on, else 404

Security: it binds to 127.0.0.1 unless configured otherwise and has no authentication. While on
loopback it also rejects requests whose Host header is not a loopback name, so a web page in
the user's browser cannot reach it through DNS rebinding. No frame is kept or served unless
``preview`` is on.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable
from contextlib import AbstractContextManager

from fer_edge.errors import ConfigError
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks.base import SINKS
from fer_edge.runtime.sinks.config import HttpSinkConfig
from fer_edge.runtime.sinks.encode import dumps, result_dict, result_json

log = logging.getLogger("fer_edge.sinks.http")

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
_BOUNDARY = "fer-edge-frame"
# Each stream holds a thread; a board has few cores to spare.
_MAX_VIEWERS = 8


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _load_static() -> dict[str, bytes]:
    pkg = resources.files("fer_edge.runtime") / "static"
    return {name: (pkg / name).read_bytes() for name, _ in set(_STATIC.values())}


_MAX_CONNECTIONS = 32  # handler threads at once; more connections are refused at accept time


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on its per-connection threads: a connection beyond
    _MAX_CONNECTIONS gets a 503 from the accepting thread and is closed, so a flood of clients (or
    idle keep-alive sockets) cannot grow threads and memory without limit."""

    daemon_threads = True
    sink: "HttpSink"

    def __init__(self, *args: Any, **kwargs: Any):
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        self.refused = 0
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.settimeout(1.0)
                body = b'{"error": "too many connections; retry shortly"}'
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "fer-edge"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections release their thread

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)

    # ---- plumbing -------------------------------------------------------------------------

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, (dumps(obj) + "\n").encode("utf-8"), "application/json")

    def _host_ok(self) -> bool:
        if not self.server.sink.loopback_only:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[: host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if ":" in host else host
        return name in _LOOPBACK_NAMES or _is_loopback(name)

    def do_HEAD(self) -> None:  # stdlib naming
        self.do_GET()

    def do_GET(self) -> None:  # stdlib naming
        if not self._host_ok():
            self._json(421, {"error": "this server answers loopback host names only (it listens on "
                                      "127.0.0.1); configure host: 0.0.0.0 to serve other machines"})
            return
        path = self.path.split("?", 1)[0]
        route: Callable[[], None] | None = self._routes().get(path)
        if route is None:
            if path in _STATIC:
                name, ctype = _STATIC[path]
                extra = {"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"} if ctype.startswith("text/html") else None
                self._send(200, self.server.sink.static[name], ctype, extra)
                return
            self._json(404, {"error": f"no such endpoint {path}",
                             "endpoints": sorted(list(self._routes()) + ["/"])})
            return
        try:
            route()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # one bad request must not hurt the server
            log.exception("http: %s failed", path)
            self.server.sink.metrics.inc("errors")
            try:
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})
            except OSError:
                self.close_connection = True

    def _routes(self) -> dict[str, Callable[[], None]]:
        return {
            "/healthz": self._healthz,
            "/metrics": self._metrics,
            "/api/latest": self._latest,
            "/api/metrics": self._api_metrics,
            "/api/events": self._events,
            "/api/info": self._info,
            "/preview.mjpg": self._mjpeg,
            "/preview.jpg": self._jpeg,
        }

    # ---- endpoints --------------------------------------------------------------------------

    def _healthz(self) -> None:
        m = self.server.sink.metrics
        snap = m.snapshot()
        h = snap["health"]
        body = {"status": h["state"], "reason": h["reason"], "components": h["components"],
                "fps": snap["fps"], "uptime_s": snap["uptime_s"]}
        self._json(200 if h["state"] == "ok" else 503, body)

    def _metrics(self) -> None:
        self._send(200, self.server.sink.metrics.prometheus_text().encode("utf-8"),
                   "text/plain; version=0.0.4; charset=utf-8")

    def _latest(self) -> None:
        self._send(200, self.server.sink.latest_json(), "application/json")

    def _api_metrics(self) -> None:
        self._json(200, self.server.sink.metrics.snapshot())

    def _events(self) -> None:
        self._json(200, list(self.server.sink.events))

    def _info(self) -> None:
        from fer_edge import __version__

        s = self.server.sink
        self._json(200, {"name": "fer-edge", "version": __version__, "sink": s.name,
                         "preview": s.config.preview, "preview_fps": s.config.preview_fps})

    def _preview_off(self) -> bool:
        if self.server.sink.config.preview:
            return False
        self._json(404, {"error": "the preview is off (privacy default); enable it with preview: true "
                                  "in the http sink or http://HOST:PORT?preview=true"})
        return True

    def _jpeg(self) -> None:
        if self._preview_off():
            return
        jpeg, _ = self.server.sink.preview_jpeg(wait_s=1.0, after_seq=-1)
        if jpeg is None:
            self._json(503, {"error": "no frame yet"})
            return
        self._send(200, jpeg, "image/jpeg")

    def _mjpeg(self) -> None:
        if self._preview_off():
            return
        sink = self.server.sink
        # Take the viewer slot before answering, atomically: check-then-increment let concurrent
        # connects all pass the check and exceed the cap.
        if not sink.take_viewer():
            self._json(503, {"error": f"{_MAX_VIEWERS} preview streams are open already; close one"})
            return
        try:
            self._stream(sink)
        finally:
            sink.release_viewer()

    def _stream(self, sink: "HttpSink") -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        seq = -1
        while not sink.closing:
            jpeg, new_seq = sink.preview_jpeg(wait_s=1.0, after_seq=seq)
            if jpeg is None or new_seq == seq:
                continue
            seq = new_seq
            self.wfile.write(
                f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                + jpeg + b"\r\n")
            self.wfile.flush()


@SINKS.register("http")
class HttpSink:
    Config = HttpSinkConfig  # its settings (fer_edge.runtime.sinks.config); built as HttpSink(config, metrics)
    def __init__(self, config: HttpSinkConfig, metrics: Metrics | None = None):
        self.config = config
        self.name = config.name or "http"
        self.metrics = metrics if metrics is not None else Metrics()
        self.wants_frames = bool(config.preview)
        self.loopback_only = _is_loopback(config.host)
        self.static = _load_static()
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.closing = False
        self._latest: Any = None
        self._latest_json: bytes | None = b"null\n"
        self._lock = threading.Lock()
        self._frame_cv = threading.Condition()
        self._frame: Any = None
        self._frame_result: Any = None
        self._frame_seq = 0
        self._frame_time = 0.0
        self._jpeg: bytes | None = None
        self._encode_lock = threading.Lock()
        self._jpeg_seq = -1
        self._viewers = 0
        try:
            self.server = _Server((config.host, config.port), _Handler)
        except OSError as e:
            raise self._bind_error(e) from None
        self.server.sink = self
        host, self.port = self.server.server_address[:2]
        self.host = host.decode() if isinstance(host, bytes) else host   # str for AF_INET/AF_INET6
        self.url = f"http://{self.host if ':' not in str(self.host) else f'[{self.host}]'}:{self.port}"
        if not self.loopback_only:
            log.warning("http sink '%s' listens on %s (not loopback): anyone on the network can read "
                        "the status page%s; it has no authentication", self.name, self.url,
                        " and the camera preview" if config.preview else "")
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"http-{self.name}", daemon=True)
        self._thread.start()
        log.info("status page on %s", self.url)

    def _bind_error(self, e: OSError) -> ConfigError:
        c = self.config
        where = f"{c.host}:{c.port}"
        if e.errno == errno.EADDRINUSE:
            return ConfigError(f"http sink: port {c.port} on {c.host} is already in use (another fer-edge "
                               f"or web server?); pick a free port, e.g. http://{c.host}:{c.port + 1}, or stop "
                               f"the program holding it (ss -ltnp 'sport = :{c.port}')")
        if e.errno == errno.EACCES:
            return ConfigError(f"http sink: not allowed to listen on {where} (ports below 1024 need root); "
                               f"use a port of 1024 or more")
        if e.errno == errno.EADDRNOTAVAIL:
            return ConfigError(f"http sink: {c.host} is not an address of this machine; use 127.0.0.1 "
                               "(this machine only) or 0.0.0.0 (all interfaces)")
        return ConfigError(f"http sink: cannot listen on {where}: {e.strerror or e}")

    # ---- sink protocol ------------------------------------------------------------------------

    def publish(self, result: Any) -> None:
        with self._lock:
            self._latest = result
            self._latest_json = None
        evs = result.events if hasattr(result, "events") else (result.get("events") or [])
        if evs:
            ts = getattr(result, "timestamp", None) if not isinstance(result, dict) else result.get("timestamp")
            for ev in evs:
                d = result_dict(ev) if not isinstance(ev, dict) else dict(ev)
                d["timestamp"] = ts
                self.events.append(d)

    def latest_json(self) -> bytes:
        with self._lock:
            if self._latest_json is None:
                self._latest_json = (result_json(self._latest) + "\n").encode("utf-8")
            return self._latest_json

    def offer_frame(self, frame_rgb: Any, result: Any) -> None:
        """Keep the newest frame for the preview, at most preview_fps times a second (a copy, so
        the pipeline may reuse its buffer)."""
        if not self.config.preview:
            return
        now = time.monotonic()
        if now - self._frame_time < 1.0 / self.config.preview_fps:
            return
        frame = frame_rgb.copy()
        with self._frame_cv:
            self._frame, self._frame_result = frame, result
            self._frame_seq += 1
            self._frame_time = now
            self._frame_cv.notify_all()

    def preview_jpeg(self, wait_s: float, after_seq: int) -> tuple[bytes | None, int]:
        """The JPEG of the newest frame, waiting up to wait_s for one newer than after_seq. Each
        frame is encoded once however many viewers there are, and never under the lock that
        offer_frame takes, so the pipeline does not wait for an encode."""
        from fer_edge.runtime.sinks.preview import render_jpeg

        with self._frame_cv:
            self._frame_cv.wait_for(
                lambda: self.closing or (self._frame is not None and self._frame_seq > after_seq),
                timeout=wait_s)
            if self._frame is None:
                return None, after_seq
            frame, result, seq = self._frame, self._frame_result, self._frame_seq
        with self._encode_lock:
            if self._jpeg_seq < seq:
                c = self.config
                self._jpeg = render_jpeg(frame, result, c.preview_quality, c.preview_width)
                self._jpeg_seq = seq
            return self._jpeg, self._jpeg_seq

    @property
    def viewers(self) -> int:
        return self._viewers

    def take_viewer(self) -> bool:
        """Claim one of the _MAX_VIEWERS preview slots; False when all are taken."""
        with self._frame_cv:
            if self._viewers >= _MAX_VIEWERS:
                return False
            self._viewers += 1
            return True

    def release_viewer(self) -> None:
        with self._frame_cv:
            self._viewers -= 1

    def viewer(self) -> AbstractContextManager[None]:
        sink = self

        class _Viewer:
            def __enter__(self) -> None:
                with sink._frame_cv:
                    sink._viewers += 1

            def __exit__(self, *exc: object) -> None:
                with sink._frame_cv:
                    sink._viewers -= 1

        return _Viewer()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        with self._frame_cv:
            self._frame_cv.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(2.0)

    def stats(self) -> dict[str, Any]:
        return {"url": self.url, "preview": self.config.preview, "viewers": self._viewers,
                "connections_refused": self.server.refused}

