"""Per-face tracks with stable ids, temporally smoothed probabilities, an "uncertain" state and events.

Matching: a detection joins the live track whose (velocity-predicted) box overlaps it most (IoU),
or, for small fast faces that overlap little from one frame to the next, whose centre is close
relative to the face size. Greedy, best pairs first - with the handful of faces a board sees,
that equals the optimal assignment in practice and costs microseconds.

Expression state per track (hysteresis): "uncertain" is treated as a pseudo-label whose score is
the confidence threshold. The state moves to the best candidate only when the candidate's score
beats the current state's by at least `hysteresis`, so a face hovering between two expressions
does not flood the sinks with change events. With hysteresis 0 it is a plain argmax + threshold.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fer_edge.detectors import iou_matrix
from fer_edge.runtime.types import Event, Face

UNCERTAIN = "uncertain"
LOST_NOT_SEEN = "not seen"          # missed more than max_missed detection rounds
LOST_SOURCE_ENDED = "source ended"  # a video file or image folder is over
LOST_SOURCE_FAILED = "source failed"  # the capture stopped on an error it cannot retry


class TrackerConfig(BaseModel):
    """The tracker's settings (the daemon's `tracker:` section)."""

    model_config = ConfigDict(extra="forbid")

    iou_threshold: float = Field(0.3, ge=0, le=1, description="a detection overlapping a track at least this much "
                                 "(IoU) may join it")
    max_centre_distance: float = Field(0.5, ge=0, description="... or one whose centre is this close, in units of "
                                       "the face size")
    max_missed: int = Field(5, ge=0, description="detection rounds a track may miss before it is lost")
    smoothing: Literal["ema", "window", "none"] = Field("ema", description="how probabilities are smoothed over "
                                                        "frames: ema, window (a moving mean) or none")
    alpha: float = Field(0.4, gt=0, le=1, description="EMA weight of the newest frame")
    window: int = Field(5, ge=1, le=1000, description="frames averaged by window smoothing")
    uncertain_below: float = Field(0.45, ge=0, le=1, description="a smoothed top probability under this is the "
                                   "state 'uncertain'")
    hysteresis: float = Field(0.1, ge=0, le=1, description="a new state must beat the current one's score by this "
                              "much")


TrackerParams = TrackerConfig   # the name the tracker's callers knew it by


@dataclass
class Track:
    id: int
    box: np.ndarray                      # current box (detected, or predicted between detections)
    det_box: np.ndarray                  # last detected box
    det_frame: int
    score: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # box change per frame
    probs: np.ndarray | None = None      # smoothed
    history: deque[np.ndarray] = field(default_factory=deque)
    state: str = UNCERTAIN
    raw_label: str = ""
    missed: int = 0
    hits: int = 0
    landmarks: np.ndarray | None = None

    def predicted_box(self, frame_index: int) -> np.ndarray:
        return self.det_box + self.velocity * float(frame_index - self.det_frame)


def _centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Centre distance of every a against every b, in units of the mean face side of the pair."""
    ca = np.stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2], 1)
    cb = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
    sa = ((a[:, 2] - a[:, 0]) + (a[:, 3] - a[:, 1])) / 2
    sb = ((b[:, 2] - b[:, 0]) + (b[:, 3] - b[:, 1])) / 2
    d = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
    out: np.ndarray = d / np.maximum((sa[:, None] + sb[None, :]) / 2, 1e-6)
    return out


def greedy_match(track_boxes: np.ndarray, det_boxes: np.ndarray, iou_threshold: float,
                 max_centre_distance: float) -> list[tuple[int, int]]:
    """(track index, detection index) pairs; best IoU first, then nearest centre."""
    if len(track_boxes) == 0 or len(det_boxes) == 0:
        return []
    iou = iou_matrix(track_boxes, det_boxes)
    dist = _centre_distance(np.asarray(track_boxes, np.float32), np.asarray(det_boxes, np.float32))
    ok = (iou >= iou_threshold) | (dist <= max_centre_distance)
    pairs = sorted(zip(*np.nonzero(ok)), key=lambda p: (-iou[p], dist[p]))
    used_t, used_d, out = set(), set(), []
    for t, d in pairs:
        if t in used_t or d in used_d:
            continue
        used_t.add(t)
        used_d.add(d)
        out.append((int(t), int(d)))
    return out


class Tracker:
    def __init__(self, labels: list[str], params: TrackerParams | None = None):
        self.labels = list(labels)
        self.p = params or TrackerParams()
        self.tracks: list[Track] = []
        self._next_id = 1

    # --- probabilities and expression state -------------------------------------------------
    def _smooth(self, track: Track, probs: np.ndarray) -> None:
        probs = np.asarray(probs, np.float64)
        track.raw_label = self.labels[int(np.argmax(probs))]
        if self.p.smoothing == "ema" and track.probs is not None:
            track.probs = self.p.alpha * probs + (1 - self.p.alpha) * track.probs
        elif self.p.smoothing == "window":
            track.history.append(probs)
            while len(track.history) > self.p.window:
                track.history.popleft()
            track.probs = np.mean(track.history, axis=0)
        else:
            track.probs = probs

    def _score(self, track: Track, state: str) -> float:
        if state == UNCERTAIN:
            return self.p.uncertain_below
        assert track.probs is not None, "scored before its first smoothing"
        return float(track.probs[self.labels.index(state)])

    def _candidate(self, track: Track) -> str:
        assert track.probs is not None, "a candidate before its first smoothing"
        best = int(np.argmax(track.probs))
        return self.labels[best] if track.probs[best] >= self.p.uncertain_below else UNCERTAIN

    def _advance_state(self, track: Track, first: bool) -> Event | None:
        cand = self._candidate(track)
        if first:
            track.state = cand
            return None
        if cand != track.state and self._score(track, cand) >= self._score(track, track.state) + self.p.hysteresis:
            prev, track.state = track.state, cand
            return Event(track.id, "expression_changed", prev, cand)
        return None

    def _face(self, track: Track) -> Face:
        probs = track.probs
        assert probs is not None, "a face before its first smoothing"
        conf = float(probs.max()) if track.state == UNCERTAIN else self._score(track, track.state)
        x0, y0, x1, y1 = (int(round(float(v))) for v in track.box)
        box = (x0, y0, x1, y1)
        return Face(track_id=track.id, box=box, score=round(track.score, 4), expression=track.state,
                    confidence=round(conf, 4),
                    probabilities={lab: round(float(v), 4) for lab, v in zip(self.labels, probs)},
                    raw_expression=track.raw_label)

    # --- tracks -----------------------------------------------------------------------------
    def live(self) -> list[Track]:
        """Tracks seen at the last detection round: their boxes may be reused until the next one."""
        return [t for t in self.tracks if t.missed == 0]

    def predict(self, frame_index: int) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        """(track id, predicted box, shifted landmarks) for the live tracks on a frame without detection."""
        out = []
        for t in self.live():
            box = t.predicted_box(frame_index)
            lm = None
            if t.landmarks is not None:
                shift = ((box[0] + box[2]) - (t.det_box[0] + t.det_box[2])) / 2, \
                        ((box[1] + box[3]) - (t.det_box[1] + t.det_box[3])) / 2
                lm = t.landmarks + np.asarray(shift, np.float32)
            out.append((t.id, box, lm))
        return out

    def update(self, frame_index: int, boxes: Any, scores: Any, probs: Any,
               landmarks: Any = None) -> tuple[list[Face], list[Event]]:
        """A detection round: match detections to tracks, smooth, create and expire tracks."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        probs = np.asarray(probs, np.float64).reshape(len(boxes), -1) if len(boxes) else np.zeros((0, len(self.labels)))
        landmarks = landmarks if landmarks is not None else [None] * len(boxes)
        predicted = np.array([t.predicted_box(frame_index) for t in self.tracks], np.float32).reshape(-1, 4)
        pairs = greedy_match(predicted, boxes, self.p.iou_threshold, self.p.max_centre_distance)
        events: list[Event] = []
        faces: list[Face] = []
        matched_t = {t for t, _ in pairs}
        matched_d = {d for _, d in pairs}
        for ti, di in pairs:
            t = self.tracks[ti]
            gap = max(1, frame_index - t.det_frame)
            step = (boxes[di] - t.det_box) / gap
            t.velocity = step if t.hits < 2 else 0.5 * t.velocity + 0.5 * step
            t.box = t.det_box = boxes[di].copy()
            t.det_frame, t.score, t.missed, t.landmarks = frame_index, float(scores[di]), 0, landmarks[di]
            t.hits += 1
            self._smooth(t, probs[di])
            ev = self._advance_state(t, first=False)
            if ev:
                events.append(ev)
        for di in range(len(boxes)):
            if di in matched_d:
                continue
            t = Track(id=self._next_id, box=boxes[di].copy(), det_box=boxes[di].copy(), det_frame=frame_index,
                      score=float(scores[di]), hits=1, landmarks=landmarks[di])
            self._next_id += 1
            self._smooth(t, probs[di])
            self._advance_state(t, first=True)
            self.tracks.append(t)
            events.append(Event(t.id, "track_started", None, t.state))
        kept = []
        for ti, t in enumerate(self.tracks):
            if ti in matched_t or t.det_frame == frame_index:
                kept.append(t)
                continue
            t.missed += 1
            if t.missed > self.p.max_missed:
                events.append(Event(t.id, "track_lost", t.state, None, LOST_NOT_SEEN))
            else:
                kept.append(t)
        self.tracks = kept
        for t in sorted(self.tracks, key=lambda t: t.id):
            if t.det_frame == frame_index:
                faces.append(self._face(t))
        return faces, events

    def update_tracked(self, frame_index: int, ids: list[int], boxes: Any, probs: Any) -> tuple[list[Face], list[Event]]:
        """A frame without detection: the live tracks keep their ids, at the boxes `predict` gave."""
        by_id = {t.id: t for t in self.tracks}
        faces, events = [], []
        for tid, box, p in zip(ids, np.asarray(boxes, np.float32).reshape(-1, 4), probs):
            t = by_id[tid]
            t.box = box.copy()
            self._smooth(t, p)
            ev = self._advance_state(t, first=False)
            if ev:
                events.append(ev)
            faces.append(self._face(t))
        return faces, events

    def close(self, reason: str = LOST_SOURCE_ENDED) -> list[Event]:
        """Every remaining track is lost (the run ends), in id order."""
        events = [Event(t.id, "track_lost", t.state, None, reason) for t in sorted(self.tracks, key=lambda t: t.id)]
        self.tracks = []
        return events
