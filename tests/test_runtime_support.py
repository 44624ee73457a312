"""Shared helpers for the runtime tests: a generated video in which a real face moves and grows.

The face is the astronaut from scikit-image (a public-domain NASA portrait shipped with the
wheel). Its face box in the 512x512 original was measured once with YuNet; pasting a scaled
patch around it at a known place gives the ground-truth box of every frame.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

PATCH = (130, 20, 320, 230)          # x0, y0, x1, y1 of the pasted region of the astronaut
FACE = (180, 63, 269, 174)           # her face inside the 512x512 original


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def face_frame(w: int, h: int, x: int, y: int, scale: float, background: int = 90
               ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """An RGB frame with the astronaut patch at (x, y), scaled; and the face's box in it."""
    import cv2

    patch = astronaut()[PATCH[1]:PATCH[3], PATCH[0]:PATCH[2]]
    pw, ph = int(round(patch.shape[1] * scale)), int(round(patch.shape[0] * scale))
    frame = np.full((h, w, 3), background, np.uint8)
    frame[y:y + ph, x:x + pw] = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA)
    sx, sy = pw / patch.shape[1], ph / patch.shape[0]
    box = (x + (FACE[0] - PATCH[0]) * sx, y + (FACE[1] - PATCH[1]) * sy,
           x + (FACE[2] - PATCH[0]) * sx, y + (FACE[3] - PATCH[1]) * sy)
    return frame, box


def face_track(n: int, w: int = 320, h: int = 240):
    """Frame i: the face slides left to right while growing from 0.5x to 0.8x."""
    for i in range(n):
        t = i / max(1, n - 1)
        scale = 0.5 + 0.3 * t
        pw, ph = int(round((PATCH[2] - PATCH[0]) * scale)), int(round((PATCH[3] - PATCH[1]) * scale))
        x = int(round(10 + t * (w - pw - 20)))
        y = int(round((h - ph) / 2))
        yield face_frame(w, h, x, y, scale)


def make_face_video(path: Path, n: int = 24, w: int = 320, h: int = 240, fps: float = 15.0) -> list[tuple]:
    """Write an MJPG .avi of `face_track`; returns the true face box per frame."""
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert out.isOpened(), "OpenCV cannot write MJPG here"
    boxes = []
    for frame, box in face_track(n, w, h):
        out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        boxes.append(box)
    out.release()
    return boxes


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def frame_results(results: list) -> list:
    """The FrameResults of frames: without the last one that the end of a finite source adds to
    close the tracks still open (no faces, every event a track_lost with reason "source ended")."""
    last = results[-1] if results else None
    if last is not None and not last.faces and last.events and \
            all(e.kind == "track_lost" and e.reason == "source ended" for e in last.events):
        return results[:-1]
    return results


class ListSink:
    """A real sink (the SinkSet protocol) that keeps what it is given, for in-process runs."""

    wants_frames = False

    def __init__(self, name: str = "list"):
        self.name = name
        self.results = []
        self.closed = False
        self._lock = threading.Lock()

    def publish(self, result) -> None:
        with self._lock:
            self.results.append(result)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="session")
def face_video(tmp_path_factory) -> tuple[Path, list[tuple]]:
    p = tmp_path_factory.mktemp("video") / "face.avi"
    return p, make_face_video(p)


def test_generated_video_round_trips(face_video):
    """The helper itself: the video decodes to as many frames as written, at the written size."""
    import cv2

    path, boxes = face_video
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (240, 320, 3)
        n += 1
    assert n == len(boxes) == 24
    # the face really grows and moves
    assert boxes[-1][0] > boxes[0][0] + 100
    assert (boxes[-1][2] - boxes[-1][0]) > 1.4 * (boxes[0][2] - boxes[0][0])
