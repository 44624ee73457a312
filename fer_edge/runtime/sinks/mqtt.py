"""MQTT sink (paho-mqtt 2.x).

Topic layout (``<prefix>`` defaults to ``fer-edge``):

  <prefix>/status                  "online" / "offline", retained. The broker publishes "offline"
                                   itself (last will) if the daemon dies without saying goodbye.
  <prefix>/frame                   every FrameResult as JSON (not retained; ``publish_frames``).
  <prefix>/events                  one JSON object per tracker event: track_started,
                                   expression_changed, track_lost (with frame_index, timestamp).
  <prefix>/summary                 retained: {"faces", "track_id", "expression", "confidence",
                                   "probabilities", "frame_index", "timestamp"} of the primary
                                   (largest) face, expression "none" when nobody is there.
  <prefix>/faces/<track_id>/state  retained per-track state: {"track_id", "expression",
                                   "confidence", "probabilities", "box", "score", "frame_index",
                                   "timestamp"}. An empty retained message clears it when the
                                   track is lost (and for every live track at shutdown, or
                                   when a track has been absent for 30 s without a track_lost).
  <discovery_prefix>/sensor/<node_id>/{expression,confidence,faces}/config
                                   retained Home Assistant MQTT discovery configs (sensors read
                                   <prefix>/summary, availability from <prefix>/status).

Summary and per-track state are published at once when the expression or face count changes,
otherwise at most every ``state_interval_s``.

Never blocking: ``publish`` appends to a bounded buffer and returns; a sender thread hands
messages to paho only while connected, so while the broker is down up to ``buffer_max`` results
wait (the oldest beyond that are dropped and counted as sink_dropped{reason="buffer"}) and go
out in order when paho has reconnected by itself. With qos >= 1 the messages paho already held
at the disconnect are resent first, so the order survives the outage.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

from fer_edge.errors import ConfigError
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks.base import SINKS
from fer_edge.runtime.sinks.config import MqttSinkConfig
from fer_edge.runtime.sinks.encode import dumps, dumps_ready, result_data, result_json

log = logging.getLogger("fer_edge.sinks.mqtt")

# Bounds what paho holds unacknowledged (qos >= 1) so a slow broker backs up into our bounded
# buffer, not into paho's unbounded one.
_MAX_OUTSTANDING = 200
# After a reconnect, how long to wait for paho to resend what it held before sending new results.
_RESYNC_TIMEOUT_S = 5.0
# Per-track state not refreshed for this long while its track is absent is cleared.
_TRACK_TTL_S = 30.0

_NODE_RE = re.compile(r"[^a-zA-Z0-9_-]")


def _primary(faces: list[dict[str, Any]]) -> dict[str, Any] | None:
    def area(f: dict[str, Any]) -> float:
        x0, y0, x1, y1 = (f.get("box") or (0, 0, 0, 0))[:4]
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    return max(faces, key=area) if faces else None


def _auth_hint(reason: str) -> str:
    r = reason.lower()
    if "authori" in r or "password" in r or "user name" in r or "username" in r:
        return " - check the MQTT username/password (mqtt://USER:PASS@HOST or username/password in the config)"
    if "identifier" in r:
        return " - the broker rejected the client_id; set another client_id"
    return ""


@SINKS.register("mqtt")
class MqttSink:
    Config = MqttSinkConfig  # its settings (fer_edge.runtime.sinks.config); built as MqttSink(config, metrics)
    wants_frames = False

    def __init__(self, config: MqttSinkConfig, metrics: Metrics | None = None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._mqtt = mqtt
        self.config = c = config
        self.name = c.name or "mqtt"
        self.metrics = metrics if metrics is not None else Metrics()
        self.prefix = c.prefix
        self.client_id = c.client_id or f"fer-edge-{socket.gethostname()}"
        self.node_id = _NODE_RE.sub("_", c.node_id or self.client_id)
        self.status_topic = f"{self.prefix}/status"
        self._component = f"sink:{self.name}:broker"
        self._where = f"{c.host}:{c.port}"
        self._check_host()

        self._cv = threading.Condition()
        self._buf: deque[tuple[str, str, int, bool]] = deque()
        self._connected = False
        self._resync = False
        self._stopping = False
        self._outstanding: deque[Any] = deque()     # MQTTMessageInfo of qos>=1 messages not yet acked
        self.sent_results = 0
        self.overflow = 0
        self.unflushed = 0
        self.connects = 0
        self.last_error: str | None = None
        self._last_refusal: str | None = None
        # per-track retained state: track_id -> (payload, expression, monotonic time published)
        self._tracks: dict[int, tuple[str, str, float]] = {}
        self._summary: tuple[str, tuple[Any, ...], float] | None = None

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        if c.username is not None:
            client.username_pw_set(c.username, self._password())
        if c.tls is not None:
            try:
                client.tls_set(
                    ca_certs=str(c.tls.ca_file) if c.tls.ca_file else None,
                    certfile=str(c.tls.certfile) if c.tls.certfile else None,
                    keyfile=str(c.tls.keyfile) if c.tls.keyfile else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (ssl.SSLError, OSError, ValueError) as e:
                raise ConfigError(f"mqtt sink '{self.name}': cannot load the TLS files ({e}); "
                                  "check tls.ca_file/certfile/keyfile are PEM files") from None
            if c.tls.insecure:
                client.tls_insecure_set(True)
        # paho annotates these int but only does float arithmetic with them; sub-second delays are valid
        lo, hi = c.reconnect_min_s, max(c.reconnect_max_s, c.reconnect_min_s)
        client.reconnect_delay_set(lo, hi)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self.client = client
        self.metrics.set_health("starting", f"connecting to {self._where}", component=self._component)
        client.connect_async(c.host, c.port, keepalive=c.keepalive)
        client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-{self.name}", daemon=True)
        self._sender.start()

    # ---- setup helpers ---------------------------------------------------------------------

    def _check_host(self) -> None:
        """A host name that cannot exist is a configuration error; a temporary DNS failure
        (no network yet at boot) is not - paho keeps retrying."""
        try:
            socket.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise ConfigError(f"mqtt sink '{self.name}': broker host '{self.config.host}' does not "
                                  f"resolve ({e.strerror}); fix the host in the sink "
                                  f"(mqtt://HOST:PORT/PREFIX)") from None
            log.warning("mqtt: cannot resolve %s yet (%s); will keep retrying", self.config.host, e)

    def _password(self) -> str | None:
        c = self.config
        if c.password_file is not None:
            try:
                return c.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as e:
                raise ConfigError(f"mqtt sink '{self.name}': cannot read password_file {c.password_file}: "
                                  f"{e.strerror}; make it readable by the daemon's user") from None
        return c.password.get_secret_value() if c.password is not None else None

    # ---- paho callbacks (network thread) --------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            reason = str(reason_code)
            msg = f"broker {self._where} refused the connection: {reason}{_auth_hint(reason)}"
            self.last_error = msg
            if msg != self._last_refusal:  # once per distinct reason, not once per retry
                log.error("mqtt sink '%s': %s", self.name, msg)
                self._last_refusal = msg
            self.metrics.set_health("degraded", msg, component=self._component)
            self.metrics.inc("errors")
            return
        self._last_refusal = None
        self.connects += 1
        # Retained state may be gone (a broker restarted without persistence): say it all again.
        if self.config.ha_discovery:
            for topic, payload in self.discovery_messages():
                client.publish(topic, payload, qos=1, retain=True)
        client.publish(self.status_topic, "online", qos=1, retain=True)
        for tid, (payload, _, _) in list(self._tracks.items()):
            client.publish(self._track_topic(tid), payload, qos=1, retain=True)
        if self._summary is not None:
            client.publish(f"{self.prefix}/summary", self._summary[0], qos=1, retain=True)
        if self.connects > 1:
            log.info("mqtt sink '%s': reconnected to %s; %d result(s) buffered", self.name,
                     self._where, len(self._buf))
        self.metrics.set_health("ok", component=self._component)
        with self._cv:
            self._connected = True
            self._resync = True
            self._cv.notify_all()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho does not pass the exception; name the likely causes instead.
        if self.config.tls is not None:
            self._note_down("cannot connect (broker down, or the TLS handshake failed: check tls.ca_file "
                            "and that the broker certificate names this host)")
        else:
            self._note_down("cannot connect (broker down or port closed)")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cv:
            was = self._connected
            self._connected = False
        if self._stopping:
            return
        if was:
            log.warning("mqtt sink '%s': lost the broker at %s (%s); buffering up to %d results",
                        self.name, self._where, reason_code, self.config.buffer_max)
        self._note_down(f"disconnected ({reason_code})")

    def _note_down(self, what: str) -> None:
        if self._stopping:
            return
        if self._last_refusal:  # keep the more useful auth message
            return
        msg = f"broker {self._where} unreachable: {what}; buffering up to {self.config.buffer_max} results"
        self.last_error = msg
        self.metrics.set_health("degraded", msg, component=self._component)

    # ---- messages ---------------------------------------------------------------------------

    def _track_topic(self, track_id: Any) -> str:
        return f"{self.prefix}/faces/{track_id}/state"

    def discovery_messages(self) -> list[tuple[str, str]]:
        from fer_edge import __version__

        device = {"identifiers": [self.node_id], "name": f"fer-edge {self.node_id}",
                  "manufacturer": "fer-edge", "model": "facial expression recognition",
                  "sw_version": __version__}
        common = {"state_topic": f"{self.prefix}/summary", "availability_topic": self.status_topic,
                  "payload_available": "online", "payload_not_available": "offline", "device": device}
        sensors = {
            "expression": {"name": "Expression", "icon": "mdi:emoticon-outline",
                           "value_template": "{{ value_json.expression }}",
                           "json_attributes_topic": f"{self.prefix}/summary"},
            "confidence": {"name": "Expression confidence", "unit_of_measurement": "%",
                           "state_class": "measurement", "icon": "mdi:gauge",
                           "value_template": "{{ ((value_json.confidence or 0) * 100) | round(0) }}"},
            "faces": {"name": "Faces", "state_class": "measurement", "icon": "mdi:account-group",
                      "value_template": "{{ value_json.faces }}"},
        }
        out = []
        for obj, spec in sensors.items():
            # No object_id/default_entity_id: HA renamed that key in 2025.10; the entity id it
            # derives from the device and entity names is stable and readable on every version.
            cfg = {**common, **spec, "unique_id": f"{self.node_id}_{obj}"}
            out.append((f"{self.config.discovery_prefix}/sensor/{self.node_id}/{obj}/config", dumps(cfg)))
        return out

    def _messages(self, result: Any) -> list[tuple[str, str, int, bool]]:
        """The MQTT messages for one result, updating the per-track state it keeps."""
        c = self.config
        d = result_data(result)           # shared with the other sinks: read-only
        now = time.monotonic()
        msgs: list[tuple[str, str, int, bool]] = []
        if c.publish_frames:
            msgs.append((f"{self.prefix}/frame", result_json(result), c.qos, False))
        lost = set()
        for ev in d.get("events") or []:
            msgs.append((f"{self.prefix}/events",
                         dumps_ready({**ev, "frame_index": d.get("frame_index"), "timestamp": d.get("timestamp")}),
                         c.qos, False))
            if ev.get("kind") == "track_lost":
                lost.add(ev.get("track_id"))
        faces = d.get("faces") or []
        for f in faces:
            tid = f.get("track_id")
            if tid in lost:
                continue
            state = {k: f.get(k) for k in ("track_id", "expression", "confidence", "probabilities", "box", "score")}
            state.update(frame_index=d.get("frame_index"), timestamp=d.get("timestamp"))
            prev = self._tracks.get(tid)
            if prev is None or prev[1] != f.get("expression") or now - prev[2] >= c.state_interval_s:
                payload = dumps_ready(state)
                self._tracks[tid] = (payload, f.get("expression"), now)
                msgs.append((self._track_topic(tid), payload, c.qos, True))
        # A track that vanished without a track_lost event (a tracker that forgot to say so)
        # must not leave its retained state, or this dict, growing for months.
        seen = {f.get("track_id") for f in faces}
        for tid, (_, _, t) in list(self._tracks.items()):
            if tid not in seen and now - t > _TRACK_TTL_S:
                lost.add(tid)
        for tid in lost:
            if self._tracks.pop(tid, None) is not None:
                msgs.append((self._track_topic(tid), "", c.qos, True))
        p = _primary(faces)
        key = (len(faces), p.get("expression") if p else "none")
        if self._summary is None or self._summary[1] != key or now - self._summary[2] >= c.state_interval_s:
            summary: dict[str, Any] = {"faces": len(faces), "track_id": p.get("track_id") if p else None,
                       "expression": p.get("expression") if p else "none",
                       "confidence": p.get("confidence") if p else None,
                       "probabilities": p.get("probabilities") if p else {},
                       "frame_index": d.get("frame_index"), "timestamp": d.get("timestamp")}
            payload = dumps_ready(summary)
            self._summary = (payload, key, now)
            msgs.append((f"{self.prefix}/summary", payload, c.qos, True))
        return msgs

    # ---- sender -----------------------------------------------------------------------------

    def publish(self, result: Any) -> None:
        """Queue a result for the broker; never blocks."""
        with self._cv:
            if len(self._buf) >= self.config.buffer_max:
                self._buf.popleft()
                self.overflow += 1
                self.metrics.inc("sink_dropped", sink=self.name, reason="buffer")
            self._buf.append(result)
            self._cv.notify_all()

    def _prune_outstanding(self) -> None:
        out = self._outstanding
        while out and out[0].is_published():
            out.popleft()

    def _ready_locked(self) -> bool:
        return self._connected and bool(self._buf) and not self._resync and len(self._outstanding) < _MAX_OUTSTANDING

    def _send_loop(self) -> None:
        resync_since = 0.0
        while True:
            with self._cv:
                while True:
                    self._prune_outstanding()
                    if self._resync and self._connected:
                        # paho resends what it held at the disconnect right after on_connect;
                        # new results wait for those so the order is kept.
                        resync_since = resync_since or time.monotonic()
                        if not self._outstanding or time.monotonic() - resync_since > _RESYNC_TIMEOUT_S:
                            self._resync, resync_since = False, 0.0
                    if self._ready_locked():
                        break
                    if self._stopping and (not self._buf or not self._connected):
                        return
                    # Acks are polled (is_published), so poll briefly only while they gate sending.
                    gated = self._connected and self._buf and (
                        self._resync or len(self._outstanding) >= _MAX_OUTSTANDING)
                    self._cv.wait(0.01 if gated else 0.5)
                result = self._buf.popleft()
            try:
                msgs = self._messages(result)
            except Exception as exc:  # a malformed result must not kill the sender
                self.metrics.inc("sink_errors", sink=self.name)
                self.metrics.inc("errors")
                log.error("mqtt sink '%s': cannot encode a result: %s", self.name, exc)
                continue
            self._send(result, msgs)

    def _send(self, result: Any, msgs: list[tuple[str, str, int, bool]]) -> None:
        NO_CONN = self._mqtt.MQTT_ERR_NO_CONN
        for i, (topic, payload, qos, retain) in enumerate(msgs):
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc == NO_CONN and qos == 0:
                if i == 0:
                    # Lost the connection just now: keep the result for after the reconnect.
                    with self._cv:
                        self._buf.appendleft(result)
                        self._connected = False
                    return
                continue
            if qos > 0:
                # paho keeps qos>=1 messages across a reconnect, even when rc is NO_CONN.
                with self._cv:
                    self._outstanding.append(info)
        self.sent_results += 1

    # ---- shutdown ---------------------------------------------------------------------------

    def _clear_retained_tracks(self) -> list[Any]:
        infos = []
        for tid in list(self._tracks):
            infos.append(self.client.publish(self._track_topic(tid), "", qos=1, retain=True))
        self._tracks.clear()
        return infos

    def close(self, timeout: float | None = None) -> None:
        """Drain the buffer (while connected), clear the per-track state, say "offline", disconnect.

        Bounded by ``flush_timeout_s``; what is still buffered then is counted as unflushed."""
        timeout = self.config.flush_timeout_s if timeout is None else min(timeout, self.config.flush_timeout_s)
        deadline = time.monotonic() + timeout
        with self._cv:
            if self._stopping:
                return
            self._stopping = True
            self._cv.notify_all()
        self._sender.join(max(0.0, deadline - time.monotonic()))
        with self._cv:
            left = len(self._buf)
            self._buf.clear()
            connected = self._connected
        if left:
            self.unflushed += left
            self.metrics.inc("sink_dropped", left, sink=self.name, reason="unflushed")
            log.warning("mqtt sink '%s': %d buffered result(s) not delivered (broker %s:%d %s)", self.name,
                        left, self.config.host, self.config.port, "connected but slow" if connected else "unreachable")
        if connected:
            infos = self._clear_retained_tracks()
            infos.append(self.client.publish(self.status_topic, "offline", qos=1, retain=True))
            with self._cv:
                infos.extend(self._outstanding)
            for info in infos:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    info.wait_for_publish(remaining)
                except (RuntimeError, ValueError):
                    break
        self.client.disconnect()
        self.client.loop_stop()
        self.metrics.clear_health(self._component)

    def stats(self) -> dict[str, Any]:
        with self._cv:
            return {"connected": self._connected, "buffered": len(self._buf), "sent": self.sent_results,
                    "overflow": self.overflow, "unflushed": self.unflushed, "connects": self.connects,
                    "last_error": self.last_error}
