"""End to end: a generated video of a real moving, growing face -> real YuNet/BlazeFace -> a real
TFLite classifier -> tracker -> the real JSON-lines sink, through `fer-edge run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from fer_edge.cli import main
from fer_edge.runtime.config import load_config
from fer_edge.runtime.daemon import Daemon
from fer_edge.runtime.sinks import SinkSet
from test_runtime_support import ListSink, face_track, face_video, iou  # noqa: F401  (fixture)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_end(end, frames):
    """The source ended with a face in view: one last result, numbered one past the last frame,
    with no faces and a track_lost ("source ended") for each track still open - so every
    track_started has its track_lost."""
    assert end["frame_index"] == frames[-1]["frame_index"] + 1 and end["faces"] == [] and end["timings_ms"] == {}
    events = [e for r in frames for e in r["events"]]
    still_open = ({e["track_id"] for e in events if e["kind"] == "track_started"}
                  - {e["track_id"] for e in events if e["kind"] == "track_lost"})
    assert still_open
    last = {f["track_id"]: f["expression"] for r in frames for f in r["faces"]}
    assert end["events"] == [{"track_id": t, "kind": "track_lost", "previous": last[t], "current": None,
                              "reason": "source ended"} for t in sorted(still_open)]


def check_track(results, truth, min_iou=0.5):
    *results, end = results
    assert [r["frame_index"] for r in results] == list(range(len(truth)))
    ids = set()
    for r, box in zip(results, truth):
        assert len(r["faces"]) == 1, r
        face = r["faces"][0]
        assert iou(face["box"], box) > min_iou, (r["frame_index"], face["box"], box)
        ids.add(face["track_id"])
        assert face["expression"] in ("angry", "happy", "sad", "uncertain")
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=0.01)
    assert len(ids) == 1, f"track id changed: {ids}"
    assert [e["kind"] for e in results[0]["events"]] == ["track_started"]
    check_end(end, results)


def test_video_end_to_end_through_cli(tmp_path, face_video, tiny_tflite):
    video, truth = face_video
    out = tmp_path / "out.jsonl"
    code = main(["run", "--model", str(tiny_tflite["fp32"]), "--source", str(video), "--output", f"jsonl:{out}",
                 "--threads", "1"])
    assert code == 0
    results = read_jsonl(out)
    assert len(results) == len(truth) + 1                   # finite source: every frame's result, then the end
    check_track(results, truth)
    r = results[5]
    assert r["source"] == f"video:{video}" and r["file"] is None
    assert set(r["timings_ms"]) == {"capture", "detect", "crop", "classify", "smooth"}
    assert all(v >= 0 for v in r["timings_ms"].values())


@pytest.mark.parametrize("detector,every", [("yunet", 3), ("blazeface", 1)])
def test_detect_every_and_blazeface(face_video, tiny_tflite, detector, every):
    video, truth = face_video
    cfg = load_config(None, {"classifier": {"model": str(tiny_tflite["int8"]), "threads": 1},
                             "source": {"type": "video", "path": str(video)},
                             "detector": {"type": detector, "every": every}})
    sink = ListSink()
    assert Daemon(cfg, sinks=SinkSet([sink])).run() == 0
    results = [r.to_dict() for r in sink.results]
    check_track(results, truth)
    detected = [r["frame_index"] for r in results if "detect" in r["timings_ms"]]
    # a new track is detected twice (to learn its velocity), then every Nth frame; in between, the
    # tracked boxes are moved by their velocity and reused
    expected = [0] + list(range(1, len(truth), every)) if every > 1 else list(range(len(truth)))
    assert detected == expected


def test_image_folder_results_name_their_files(tmp_path, tiny_tflite):
    folder = tmp_path / "imgs"
    folder.mkdir()
    frames = list(face_track(3))
    for i, (frame, _) in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "img_9_empty.png"), np.full((240, 320, 3), 90, np.uint8))
    out = tmp_path / "out.jsonl"
    assert main(["run", "--model", str(tiny_tflite["fp32"]), "--source", str(folder),
                 "--output", f"jsonl:{out}", "--align"]) == 0
    results = read_jsonl(out)
    assert [r["file"] for r in results] == ["img_0.png", "img_1.png", "img_2.png", "img_9_empty.png"]
    # photos, not video (issue 12): no tracks across files, so no track events and no closing record
    assert all(r["events"] == [] for r in results)
    for r, (_, box) in zip(results, frames):
        assert iou(r["faces"][0]["box"], box) > 0.5
    assert results[-1]["faces"] == []


def test_loop_replays_until_max_frames(face_video, tiny_tflite, tmp_path):
    video, truth = face_video
    out = tmp_path / "out.jsonl"
    assert main(["run", "--model", str(tiny_tflite["fp32"]), "--source", str(video), "--output", f"jsonl:{out}",
                 "--loop", "--max-frames", "30"]) == 0
    *results, end = read_jsonl(out)
    assert [r["frame_index"] for r in results] == list(range(30))
    check_end(end, results)                                    # --max-frames ends the source too
    assert iou(results[len(truth)]["faces"][0]["box"], truth[0]) > 0.5   # frame 24 is the video's frame 0


def test_config_file_run(tmp_path, face_video, tiny_tflite):
    video, truth = face_video
    out = tmp_path / "out.jsonl"
    cfg = tmp_path / "fer-edge.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        classifier:
          model: {tiny_tflite['fp32']}
          threads: 1
        source:
          type: video
          path: {video}
          max_frames: 10
        outputs:
          - type: jsonl
            path: {out}
        """))
    assert main(["run", "--config", str(cfg)]) == 0
    check_track(read_jsonl(out), truth[:10])


NO_TF = """
import sys
from fer_edge.runtime.config import load_config
from fer_edge.runtime.daemon import Daemon
from fer_edge import detectors
from fer_edge.runtime import capture, classifier, crop, doctor, pipeline, sdnotify, sources, tracker
from fer_edge.runtime.sinks import SinkSet
import fer_edge.runtime.cli

class Keep:
    name = "keep"; wants_frames = False
    def __init__(self): self.n = 0
    def publish(self, r): self.n += len(r.faces)
    def close(self): pass

keep = Keep()
cfg = load_config(None, {"classifier": {"model": sys.argv[1], "threads": 1},
                         "source": {"type": "video", "path": sys.argv[2], "max_frames": 5}})
assert Daemon(cfg, sinks=SinkSet([keep])).run() == 0
assert keep.n == 5, keep.n
doctor.run_checks(sys.argv[1])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("HEAVY", heavy)
"""


def test_runtime_never_imports_tensorflow(face_video, tiny_tflite, tmp_path):
    video, _ = face_video
    script = tmp_path / "no_tf.py"
    script.write_text(NO_TF)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(script), str(tiny_tflite["fp32"]), str(video)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout
