"""Each frame result is turned into JSON once, however many sinks take it, and what the sinks
write is byte for byte what they wrote before that sharing existed.

The golden file (tests/golden/sink_outputs.json) holds the JSON-lines file and the MQTT messages
that the sinks produced for RESULTS before encoding was shared. An intended change of the output
format regenerates it: FER_EDGE_WRITE_GOLDEN=1 .venv/bin/pytest tests/test_sink_encoding.py
(and the diff of the golden file shows exactly what changed for consumers).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_until
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks import MqttSinkConfig, create_sinks
from fer_edge.runtime.sinks.encode import dumps, result_dict, result_json
from fer_edge.runtime.types import Event, Face, FrameResult
from mosquitto import Collector, broker  # noqa: F401 - fixture

GOLDEN = Path(__file__).parent / "golden" / "sink_outputs.json"
PREFIX = "enc/fer"


def results() -> list[FrameResult]:
    """Frames that exercise every path of the encoder: numpy scalars, a tuple box, NaN, a
    non-ASCII label, two faces, every event kind, an empty frame."""
    probs = {"angry": np.float32(0.125), "überrascht": 0.5, "sad": 0.375}
    a = Face(3, (np.int64(10), 20, 110, 140), np.float32(0.96), "überrascht", 0.5, probs, "sad")
    b = Face(4, (200, 20, 260, 90), 0.81, "uncertain", float("nan"), {"angry": 0.4, "überrascht": 0.3,
                                                                     "sad": 0.3}, "angry")
    return [
        FrameResult(0, 1_700_000_000.25, [a], [Event(3, "track_started", None, "überrascht")], "video:ü.avi",
                    None, {"capture": 1.5, "detect": np.float64(3.25)}),
        FrameResult(1, 1_700_000_000.5, [a, b], [Event(4, "track_started", None, "uncertain")], "video:ü.avi",
                    None, {"capture": 1.5, "detect": 3.0, "classify": float("inf")}),
        FrameResult(2, 1_700_000_000.75, [b], [Event(3, "track_lost", "überrascht", None),
                                               Event(4, "expression_changed", "uncertain", "angry")],
                    "images:/d", "img_2.png", {}),
        FrameResult(3, 1_700_000_001.0, [], [Event(4, "track_lost", "angry", None)], "images:/d", "img_3.png", {}),
    ]


def run_sinks(tmp: Path, port: int) -> dict:
    """RESULTS through a real JSON-lines file and a real MQTT sink; what each wrote/published."""
    sub = Collector(port, f"{PREFIX}/#")
    out = tmp / "out.jsonl"
    # state_interval_s=0: state and summary go out for every frame, so the messages do not depend on timing
    mqtt = MqttSinkConfig(host="127.0.0.1", port=port, prefix=PREFIX, client_id="enc-test", node_id="cam",
                          ha_discovery=False, state_interval_s=0.0, reconnect_min_s=0.1, reconnect_max_s=0.3,
                          flush_timeout_s=10.0)
    sinks = create_sinks([{"type": "jsonl", "path": str(out)}, mqtt], Metrics())
    try:
        # connected first, so a busy machine delays the test instead of failing its flush
        assert wait_until(lambda: sinks.stats()["mqtt"]["sink"]["connected"], 10)
        for r in results():
            sinks.publish(r, wait_s=5)
    finally:
        assert sinks.close(timeout=10) == {"jsonl": 0, "mqtt": 0}
    # 4 frames, 5 events, 4 track states, 2 cleared states, 4 summaries, online, offline
    assert sub.wait_for(lambda: len(sub.messages) >= 4 + 5 + 4 + 2 + 4 + 2, 10), sub.messages
    sub.close()
    per_topic: dict[str, list[str]] = {}
    for topic, payload, _ in sub.messages:   # the broker keeps one client's order per topic
        per_topic.setdefault(topic, []).append(payload.decode("utf-8"))
    return {"jsonl": out.read_text(encoding="utf-8").splitlines(), "mqtt": per_topic}


@pytest.fixture
def to_dict_calls(monkeypatch):
    """How many times a FrameResult is converted: the real to_dict, counted per result."""
    calls: dict[int, int] = {}
    real = FrameResult.to_dict

    def counted(self):
        calls[self.frame_index] = calls.get(self.frame_index, 0) + 1
        return real(self)

    monkeypatch.setattr(FrameResult, "to_dict", counted)
    return calls


def test_two_sinks_encode_each_result_once_and_write_the_same_bytes(broker, tmp_path, to_dict_calls):
    got = run_sinks(tmp_path, broker.port)
    if os.environ.get("FER_EDGE_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert got["jsonl"] == want["jsonl"]
    assert got["mqtt"] == want["mqtt"]
    # the JSON-lines sink and the MQTT sink (which sends the same text on <prefix>/frame) shared one encoding
    assert to_dict_calls == {0: 1, 1: 1, 2: 1, 3: 1}
    assert got["mqtt"][f"{PREFIX}/frame"] == got["jsonl"]
    # and it is the plain one-off encoding: strict JSON, NaN/inf as null, numpy as numbers, UTF-8 kept
    assert got["jsonl"] == [dumps(result_dict(r)) for r in results()]
    first = json.loads(got["jsonl"][1])
    assert first["faces"][1]["confidence"] is None and first["timings_ms"]["classify"] is None
    assert first["faces"][0]["box"] == [10, 20, 110, 140] and "überrascht" in got["jsonl"][0]


def test_concurrent_sinks_get_one_encoding_of_a_result(to_dict_calls):
    r = results()[1]
    start = threading.Barrier(8)
    texts: list[str] = []

    def sink_thread() -> None:
        start.wait()
        texts.append(result_json(r))

    threads = [threading.Thread(target=sink_thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(texts) == 8 and len({id(t) for t in texts}) == 1   # the very same string object
    assert to_dict_calls == {1: 1}
    assert texts[0] == dumps(result_dict(r))


def test_an_encoded_result_still_pickles_and_a_deep_copy_encodes_its_own_content():
    r = results()[0]
    first = result_json(r)
    again = pickle.loads(pickle.dumps(r))
    assert again == r and result_json(again) == first
    changed = copy.deepcopy(r)
    changed.frame_index = 99
    assert result_json(changed).startswith('{"frame_index":99,') and result_json(r) == first


def test_plain_dicts_are_still_accepted_and_not_memoised():
    d = {"frame_index": 7, "timestamp": 1.0, "faces": [], "events": [], "score": np.float32(0.5)}
    assert result_json(d) == '{"frame_index":7,"timestamp":1.0,"faces":[],"events":[],"score":0.5}'
    d["frame_index"] = 8                     # a dict cannot carry a memo, so a changed dict re-encodes
    assert result_json(d).startswith('{"frame_index":8,')
