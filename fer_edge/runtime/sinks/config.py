"""Sink configuration: pydantic models (validated once, unknown keys are errors) and sink URLs.

A sink is written either as a config-file entry (``{"type": "mqtt", "host": ...}``) or, on the
command line, as a URL:

    jsonl:-                                 JSON lines on stdout
    jsonl:PATH                              JSON lines appended to PATH (rotated by size)
    mqtt://[USER:PASS@]HOST[:PORT][/PREFIX] MQTT (port 1883, prefix "fer-edge" by default)
    mqtts://[USER:PASS@]HOST[:PORT][/PREFIX] MQTT over TLS (port 8883, system CAs)
    http://HOST:PORT                        status page, health, metrics (loopback unless HOST says otherwise)

Any other field of the model can follow as a query string, e.g.
``mqtt://broker/fer?qos=0&ha_discovery=false`` or ``http://0.0.0.0:8080?preview=true``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from fer_edge.errors import ConfigError

VALID_FORMS = (
    "jsonl:-",
    "jsonl:PATH",
    "mqtt://[USER:PASS@]HOST[:PORT][/PREFIX]",
    "mqtts://[USER:PASS@]HOST[:PORT][/PREFIX]",
    "http://HOST:PORT[?preview=true]",
)

_TOPIC_LEVEL_RE = re.compile(r"^[^#+\x00]+$")


class _SinkBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Shown in logs and metric labels; defaults to the type (then "-2", "-3" for repeats).
    name: str | None = None
    # Results waiting for this sink; when it falls behind, the oldest are dropped and counted.
    queue_max: int = Field(256, ge=1, le=1_000_000)


class JsonlSinkConfig(_SinkBase):
    type: Literal["jsonl"] = "jsonl"
    path: str = "-"                                   # "-" = stdout
    rotate_mb: float | None = Field(64.0, gt=0)       # None = never rotate
    keep: int = Field(5, ge=1, le=1000)               # rotated files kept beside the live one


class MqttTlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = None        # None = the system's CA store
    certfile: Path | None = None       # client certificate (mutual TLS)
    keyfile: Path | None = None
    # Skip the check that the broker's certificate names the host we connected to. The chain is
    # still verified; use this only for a broker addressed by an IP its certificate does not list.
    insecure: bool = False

    @field_validator("ca_file", "certfile", "keyfile")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"file {v} does not exist (give the path of a PEM file)")
        return Path(v).expanduser() if v is not None else None


class MqttSinkConfig(_SinkBase):
    type: Literal["mqtt"] = "mqtt"
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "fer-edge"
    client_id: str | None = None                      # default: fer-edge-<hostname>
    username: str | None = None
    password: SecretStr | None = None                 # never printed in logs or reprs
    # The password read from a file (mode 0600, or a systemd credential) instead of the config
    # or the command line, where `ps` and backups would show it.
    password_file: Path | None = None
    tls: MqttTlsConfig | None = None
    qos: int = Field(1, ge=0, le=2)
    keepalive: int = Field(30, ge=5, le=65535)
    # Results held while the broker is unreachable; beyond this the oldest are dropped and counted.
    buffer_max: int = Field(2000, ge=1, le=1_000_000)
    publish_frames: bool = True                       # <prefix>/frame for every frame
    # Retained per-track state and the summary are republished at most this often while unchanged
    # (an expression change is published at once).
    state_interval_s: float = Field(1.0, ge=0.0)
    ha_discovery: bool = True
    discovery_prefix: str = "homeassistant"
    node_id: str | None = None                        # Home Assistant device id; default from client_id
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    # How long close() waits for the buffer to drain and the broker to acknowledge.
    flush_timeout_s: float = Field(1.5, ge=0)

    @field_validator("password_file")
    @classmethod
    def _password_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"file {v} does not exist (a file holding the MQTT password)")
        return Path(v).expanduser() if v is not None else None

    @model_validator(mode="after")
    def _one_password(self) -> "MqttSinkConfig":
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    @model_validator(mode="after")
    def _tls_port(self) -> "MqttSinkConfig":
        # TLS with no port given means the TLS port, as mqtts:// does.
        if self.tls is not None and "port" not in self.model_fields_set:
            self.port = 8883
        return self

    @field_validator("prefix", "discovery_prefix")
    @classmethod
    def _topic_prefix(cls, v: str) -> str:
        v = v.strip("/")
        if not v or not _TOPIC_LEVEL_RE.match(v):
            raise ValueError(f"topic prefix {v!r} must be non-empty and contain no '#', '+' or NUL")
        return v


class HttpSinkConfig(_SinkBase):
    type: Literal["http"] = "http"
    # Loopback by default: the page has no authentication. Set "0.0.0.0" (or a LAN address) to let
    # other machines in, deliberately.
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)           # 0 = any free port (tests)
    # MJPEG preview of the camera with boxes drawn. Off by default: no frame leaves the process
    # unless this is set.
    preview: bool = False
    preview_fps: float = Field(5.0, gt=0, le=60)
    preview_quality: int = Field(80, ge=10, le=100)
    preview_width: int | None = Field(640, ge=64)    # frames wider than this are scaled down


SinkConfig = Union[JsonlSinkConfig, MqttSinkConfig, HttpSinkConfig]
SinkConfigT = Annotated[SinkConfig, Field(discriminator="type")]
_ADAPTER: TypeAdapter[SinkConfig] = TypeAdapter(SinkConfigT)


def validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(value)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def sink_config(value: object) -> SinkConfig:
    """A sink config from a model, a dict (config file) or a URL string (command line)."""
    if isinstance(value, (JsonlSinkConfig, MqttSinkConfig, HttpSinkConfig)):
        return value
    if isinstance(value, str):
        return parse_sink_url(value)
    try:
        return _ADAPTER.validate_python(value)
    except ValidationError as e:
        raise ConfigError(f"invalid sink {redacted(value)!r}: {validation_message(e)}") from None


def redacted(value: Any, _path: tuple[int, ...] = ()) -> Any:
    """`value` as an error message may quote it: passwords masked (messages end up in logs); a YAML
    alias that contains itself is shown once."""
    if isinstance(value, (dict, list)):
        if id(value) in _path:
            return "..."
        _path = (*_path, id(value))
    if isinstance(value, dict):
        return {k: "***" if "password" in str(k) and not str(k).endswith("_file") else redacted(v, _path)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, _path) for v in value]
    return value


def _masked(text: str) -> str:
    """A sink URL with its password replaced (error messages end up in logs and the journal)."""
    text = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@?#]*:)[^@/?#]*@", r"\1***@", text)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", text)


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"cannot read sink '{_masked(text)}': {why}. Valid forms: {' | '.join(VALID_FORMS)}")


def _build(text: str, model: type[JsonlSinkConfig] | type[MqttSinkConfig] | type[HttpSinkConfig],
           fields: dict[str, Any]) -> SinkConfig:
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        raise _bad(text, validation_message(e)) from None


_AUTHORITY_KEYS = {"host", "hostname", "port", "bind", "address", "username", "password"}


def parse_sink_url(text: str) -> SinkConfig:
    """``jsonl:-``, ``jsonl:PATH``, ``mqtt[s]://...``, ``http://HOST:PORT`` -> a sink config."""
    s = text.strip()
    if s.lower().startswith("jsonl:"):
        path = s[len("jsonl:"):]
        if not path:
            raise _bad(text, "no path after 'jsonl:' (use jsonl:- for stdout)")
        return _build(text, JsonlSinkConfig, {"path": path})
    if "://" not in s:
        raise _bad(text, "no scheme")
    try:
        u = urlsplit(s)
        port = u.port
    except ValueError as e:
        raise _bad(text, str(e)) from None
    scheme = u.scheme.lower()
    pairs = parse_qsl(u.query, keep_blank_values=True)
    # Where a sink connects or binds comes from the URL's host and port, never from its query string:
    # `http://127.0.0.1:8080?host=0.0.0.0` must not open the page to every interface.
    for key, _ in pairs:
        if key.strip().lower() in _AUTHORITY_KEYS:
            raise _bad(text, f"'{key}' may not be set in the query string; the host and port are the URL's own "
                             f"(write them as {scheme}://HOST:PORT)")
    dupes = sorted({k for k, _ in pairs if [p for p, _ in pairs].count(k) > 1})
    if dupes:
        raise _bad(text, f"query key(s) {', '.join(dupes)} given twice")
    query = dict(pairs)
    if scheme in ("mqtt", "mqtts"):
        if not u.hostname:
            raise _bad(text, "no broker host")
        fields: dict[str, Any] = {"host": u.hostname}
        if port is not None:
            fields["port"] = port
        elif scheme == "mqtts":
            fields["port"] = 8883
        if u.path.strip("/"):
            fields["prefix"] = unquote(u.path.strip("/"))
        if u.username:
            fields["username"] = unquote(u.username)
        if u.password is not None:
            fields["password"] = unquote(u.password)
        if scheme == "mqtts":
            fields["tls"] = {}
        for key in ("ca_file", "certfile", "keyfile", "insecure"):
            if key in query:
                fields.setdefault("tls", {})[key] = query.pop(key)
        fields.update(query)
        return _build(text, MqttSinkConfig, fields)
    if scheme == "http":
        if not u.hostname:
            raise _bad(text, "no host (use http://127.0.0.1:PORT for this machine only)")
        if port is None:
            raise _bad(text, "no port")
        if u.path.strip("/"):
            raise _bad(text, f"a path ({u.path}) is not supported")
        return _build(text, HttpSinkConfig, {"host": u.hostname, "port": port, **query})
    if scheme == "https":
        raise _bad(text, "the built-in server speaks plain HTTP; put a TLS reverse proxy in front of "
                         "http://127.0.0.1:PORT instead")
    raise _bad(text, f"unknown scheme '{u.scheme}'")
