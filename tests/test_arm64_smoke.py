"""The arm64 smoke test (device/arm64_smoke.sh) and the verdict it relies on.

The smoke test itself needs root, binfmt_misc and minutes of emulation: it is marked `arm64`, left
out of a plain `pytest` and run by CI as its own step (`pytest -m arm64`). It skips, saying why,
where the machine cannot run it. The verdict's own tests below are quick and always run.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

import arm64_smoke_data as smoke

ROOT = Path(__file__).resolve().parents[1]

LINES = [
    {"frame_index": 0, "file": "frame_00.png", "timestamp": 1.0,
     "faces": [{"track_id": 1, "box": [34, 91, 79, 144], "score": 0.93, "expression": "happy",
                "raw_expression": "happy", "probabilities": {"happy": 0.98, "sad": 0.02}}],
     "events": [{"track_id": 1, "kind": "track_started", "previous": None, "current": "happy"}]},
    {"frame_index": 1, "file": "frame_01.png", "timestamp": 2.0, "faces": [], "events": []},
]


def test_verdict_accepts_equal_lines_whatever_the_timings():
    board = copy.deepcopy(LINES)
    board[0]["timestamp"], board[0]["faces"][0]["score"] = 99.0, 0.9301   # timings and float scores may differ
    assert smoke.compare(LINES, board, "frames") == [] and smoke.compare(LINES, board, "video") == []


@pytest.mark.parametrize("change,mode,says", [
    (lambda b: b[0]["faces"][0]["box"].__setitem__(0, 35), "frames", "faces"),
    (lambda b: b[0]["faces"][0].__setitem__("raw_expression", "sad"), "video", "faces"),
    (lambda b: b[0]["faces"][0].__setitem__("expression", "sad"), "frames", "faces"),
    (lambda b: b[0]["events"].clear(), "video", "events"),
    (lambda b: b.pop(), "frames", "2 lines on the host, 1 on the board"),
    (lambda b: b[1].__setitem__("file", "frame_09.png"), "frames", "file"),
])
def test_verdict_names_what_differs(change, mode, says):
    board = copy.deepcopy(LINES)
    change(board)
    problems = smoke.compare(LINES, board, mode)
    assert problems and says in problems[0]


def test_verdict_on_video_ignores_boxes_but_not_labels():
    board = copy.deepcopy(LINES)
    board[0]["faces"][0]["box"] = [35, 90, 80, 145]      # MJPG decodes a level apart on aarch64
    assert smoke.compare(LINES, board, "video") == []
    assert smoke.compare(LINES, board, "frames")


def test_verdict_refuses_a_run_without_faces():
    empty = [{"frame_index": 0, "faces": [], "events": []}]
    assert any("no face" in p for p in smoke.compare(empty, empty, "frames"))


@pytest.mark.arm64
@pytest.mark.timeout(1500)
def test_arm64_smoke():
    """device/arm64_smoke.sh: install.sh on an emulated Raspberry Pi from the built wheel, doctor, golden
    crops, and the board's JSON lines against the host's."""
    proc = subprocess.run(["bash", str(ROOT / "device" / "arm64_smoke.sh")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=1450)
    print(proc.stdout[-8000:], proc.stderr[-4000:])
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "arm64 smoke: PASSED" in proc.stdout
