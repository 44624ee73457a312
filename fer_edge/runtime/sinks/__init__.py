"""Output sinks: JSON lines, MQTT, HTTP - by name, several at once, isolated from each other.

    sinks = create_sinks(["jsonl:-", "mqtt://broker/fer-edge", "http://127.0.0.1:8080"], metrics)
    sinks.publish(result)                 # never blocks
    if sinks.wants_frames:                # only when the HTTP preview is on
        sinks.offer_frame(frame_rgb, result)
    sinks.close(timeout=2.0)              # flush, then close; returns what could not be flushed

The MQTT topic layout is documented in fer_edge/runtime/sinks/mqtt.py.
"""

from fer_edge.runtime.sinks.base import SINKS, SinkSet, create_sinks
from fer_edge.runtime.sinks.config import (
    VALID_FORMS,
    HttpSinkConfig,
    JsonlSinkConfig,
    MqttSinkConfig,
    MqttTlsConfig,
    SinkConfig,
    SinkConfigT,
    parse_sink_url,
    sink_config,
)

# Importing the modules registers their classes; none of them imports paho or cv2 at import time.
from fer_edge.runtime.sinks.jsonl import JsonlSink
from fer_edge.runtime.sinks.mqtt import MqttSink
from fer_edge.runtime.sinks.http import HttpSink

__all__ = [
    "SINKS", "SinkSet", "create_sinks", "VALID_FORMS", "HttpSinkConfig", "JsonlSinkConfig",
    "MqttSinkConfig", "MqttTlsConfig", "SinkConfig", "SinkConfigT", "parse_sink_url", "sink_config",
    "JsonlSink", "MqttSink", "HttpSink",
]
