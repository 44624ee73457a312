"""The end of a finite source closes its tracks: a generated video through the real daemon (YuNet,
a real TFLite classifier, the tracker), a real JSON-lines file and a real mosquitto on loopback.
A consumer sees a track_lost for every track_started, including the face still in view when the
video ends."""

from __future__ import annotations

import json

import cv2
import numpy as np

from fer_edge.runtime.config import load_config
from fer_edge.runtime.daemon import Daemon
from mosquitto import Collector, broker  # noqa: F401 - fixture
from test_runtime_support import face_frame, face_video  # noqa: F401 - fixture

PREFIX = "end/fer"


def run_daemon(model, video, tmp_path, port=None):
    out = tmp_path / "out.jsonl"
    outputs = [{"type": "jsonl", "path": str(out)}]
    if port is not None:
        outputs.append({"type": "mqtt", "host": "127.0.0.1", "port": port, "prefix": PREFIX,
                        "client_id": "end-test", "ha_discovery": False, "flush_timeout_s": 10.0})
    cfg = load_config(None, {"classifier": {"model": str(model), "threads": 1},
                             "source": {"type": "video", "path": str(video)}, "outputs": outputs})
    assert Daemon(cfg).run() == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_video_ending_with_a_face_in_view_reports_its_track_lost(tmp_path, face_video, tiny_tflite, broker):
    video, truth = face_video
    sub = Collector(broker.port, f"{PREFIX}/#")
    results = run_daemon(tiny_tflite["int8"], video, tmp_path, broker.port)

    *frames, end = results
    assert [r["frame_index"] for r in frames] == list(range(len(truth)))
    (tid,) = {f["track_id"] for r in frames for f in r["faces"]}
    assert frames[-1]["faces"][0]["track_id"] == tid               # in view on the very last frame
    assert [e["kind"] for r in frames for e in r["events"] if e["track_id"] == tid].count("track_lost") == 0
    assert end["frame_index"] == len(truth) and end["faces"] == [] and end["source"] == frames[0]["source"]
    assert end["events"] == [{"track_id": tid, "kind": "track_lost", "previous": frames[-1]["faces"][0]["expression"],
                              "current": None, "reason": "source ended"}]

    # the MQTT sink published it before closing: on the events topic, and the retained state cleared
    assert sub.wait_for(lambda: b"offline" in sub.on(f"{PREFIX}/status"), 10)
    lost = [e for e in sub.json_on(f"{PREFIX}/events") if e["kind"] == "track_lost"]
    assert lost == [{**end["events"][0], "frame_index": len(truth), "timestamp": end["timestamp"]}]
    states = sub.on(f"{PREFIX}/faces/{tid}/state")
    assert states[-1] == b"" and states.count(b"") == 1
    order = [(t, p) for t, p, _ in sub.messages]
    lost_at = next(i for i, (t, p) in enumerate(order) if t == f"{PREFIX}/events" and b"track_lost" in p)
    assert lost_at < order.index((f"{PREFIX}/status", b"offline"))
    sub.close()


def test_a_face_that_left_before_the_end_is_lost_once_and_no_end_result_is_added(tmp_path, tiny_tflite):
    video = tmp_path / "leaves.avi"
    w, h = 320, 240
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (w, h))
    for i in range(20):
        frame = face_frame(w, h, 40 + 3 * i, 30, 0.7)[0] if i < 8 else np.full((h, w, 3), 90, np.uint8)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()

    results = run_daemon(tiny_tflite["fp32"], video, tmp_path)
    assert [r["frame_index"] for r in results] == list(range(20))   # nothing after the last frame
    assert all(r["faces"] for r in results[:8]) and not any(r["faces"] for r in results[8:])
    events = [(r["frame_index"], e["kind"], e["reason"]) for r in results for e in r["events"]
              if e["kind"] != "expression_changed"]
    # missed on frames 8..13 (max_missed 5): lost on the 6th miss, for that reason, and only then
    assert events == [(0, "track_started", None), (13, "track_lost", "not seen")]


def test_a_source_that_fails_for_good_loses_its_tracks_as_failed(tmp_path, face_video, tiny_tflite):
    """A video whose reads fail with an error the capture must not retry (a FerEdgeError, e.g. the file
    vanished): the open track is still closed, with reason "source failed", and the error surfaces."""
    import pytest

    from fer_edge.errors import DataError
    from fer_edge.runtime.sources import VideoSource

    video, truth = face_video

    class FailsAfterFive(VideoSource):
        def read(self):
            if self.position >= 5:
                raise DataError(f"{video}: gone")
            return super().read()

    out = tmp_path / "out.jsonl"
    cfg = load_config(None, {"classifier": {"model": str(tiny_tflite["int8"]), "threads": 1},
                             "source": {"type": "video", "path": str(video)},
                             "outputs": [{"type": "jsonl", "path": str(out)}]})
    with pytest.raises(DataError, match="gone"):
        Daemon(cfg, source=FailsAfterFive(str(video))).run()
    *frames, end = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame_index"] for r in frames] == list(range(5))
    (tid,) = {f["track_id"] for r in frames for f in r["faces"]}
    assert [(e["track_id"], e["kind"], e["reason"]) for e in end["events"]] == [(tid, "track_lost", "source failed")]
