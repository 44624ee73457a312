"""Tracker: id stability, expiry, smoothing, the uncertain state and events - against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from fer_edge.runtime.tracker import UNCERTAIN, Tracker, TrackerParams, greedy_match

LABELS = ["a", "b", "c"]


def box(x, y=0, s=10):
    return (x, y, x + s, y + s)


def step(tr, frame, boxes, probs, scores=None):
    return tr.update(frame, boxes, scores or [0.9] * len(boxes), probs)


def test_ema_uncertain_and_hysteresis_hand_computed():
    tr = Tracker(LABELS, TrackerParams(alpha=0.5, uncertain_below=0.5, hysteresis=0.1))
    seq = [
        # probs this frame,   smoothed (by hand),            state        event
        ([0.8, 0.1, 0.1],     [0.8, 0.1, 0.1],               "a",         ("track_started", None, "a")),
        ([0.2, 0.7, 0.1],     [0.5, 0.4, 0.1],               "a",         None),   # b rising, not yet
        ([0.2, 0.7, 0.1],     [0.35, 0.55, 0.1],             "b",         ("expression_changed", "a", "b")),
        ([0.3, 0.3, 0.4],     [0.325, 0.425, 0.25],          "b",         None),   # 0.5 < 0.425 + 0.1: holds
        ([0.3, 0.3, 0.4],     [0.3125, 0.3625, 0.325],       UNCERTAIN,   ("expression_changed", "b", UNCERTAIN)),
        ([0.0, 1.0, 0.0],     [0.15625, 0.68125, 0.1625],    "b",         ("expression_changed", UNCERTAIN, "b")),
    ]
    for i, (p, smoothed, state, event) in enumerate(seq):
        faces, events = step(tr, i, [box(i)], [p])
        assert len(faces) == 1
        f = faces[0]
        assert f.track_id == 1
        assert [f.probabilities[k] for k in LABELS] == pytest.approx(smoothed, abs=1e-4), i
        assert f.expression == state, i
        assert f.raw_expression == LABELS[int(np.argmax(p))]
        expected_conf = max(smoothed) if state == UNCERTAIN else smoothed[LABELS.index(state)]
        assert f.confidence == pytest.approx(expected_conf, abs=1e-4)
        assert [(e.kind, e.previous, e.current) for e in events] == ([event] if event else []), i


def test_zero_hysteresis_is_plain_argmax_and_threshold():
    tr = Tracker(LABELS, TrackerParams(smoothing="none", uncertain_below=0.5, hysteresis=0.0))
    states = [step(tr, i, [box(0)], [p])[0][0].expression
              for i, p in enumerate([[0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])]
    assert states == ["a", "b", UNCERTAIN, "c"]


def test_window_smoothing_averages_last_n():
    tr = Tracker(LABELS, TrackerParams(smoothing="window", window=3, uncertain_below=0.0))
    ps = [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]
    got = [step(tr, i, [box(0)], [p])[0][0].probabilities for i, p in enumerate(ps)]
    assert [got[-1][k] for k in LABELS] == pytest.approx([0, 2 / 3, 1 / 3], abs=1e-4)
    assert [got[1][k] for k in LABELS] == pytest.approx([0.5, 0.5, 0], abs=1e-4)


def test_ids_stay_with_their_faces_whatever_the_detection_order():
    tr = Tracker(LABELS)
    p = [[0.9, 0.05, 0.05]] * 2
    faces, _ = step(tr, 0, [box(0), box(100)], p)
    ids0 = {f.track_id: f.box[0] for f in faces}
    assert ids0 == {1: 0, 2: 100}
    for i in range(1, 8):  # both move 3 px a frame; the detector lists them in alternating order
        boxes = [box(3 * i), box(100 - 3 * i)]
        if i % 2:
            boxes.reverse()
        faces, events = step(tr, i, boxes, p)
        assert {f.track_id: f.box[0] for f in faces} == {1: 3 * i, 2: 100 - 3 * i}
        assert events == []


def test_small_fast_face_matched_by_centre_distance():
    # no overlap between consecutive boxes, but the centre moved less than half the face size
    tr = Tracker(LABELS, TrackerParams(iou_threshold=0.3, max_centre_distance=1.2))
    step(tr, 0, [box(0)], [[1, 0, 0]])
    faces, events = step(tr, 1, [box(11)], [[1, 0, 0]])
    assert faces[0].track_id == 1 and events == []
    tr2 = Tracker(LABELS, TrackerParams(iou_threshold=0.3, max_centre_distance=0.5))
    step(tr2, 0, [box(0)], [[1, 0, 0]])
    faces, events = step(tr2, 1, [box(11)], [[1, 0, 0]])
    assert faces[0].track_id == 2 and [e.kind for e in events] == ["track_started"]


def test_track_survives_max_missed_rounds_then_is_lost():
    tr = Tracker(LABELS, TrackerParams(max_missed=2))
    step(tr, 0, [box(0)], [[1, 0, 0]])
    for i in (1, 2):
        faces, events = step(tr, i, [], [])
        assert faces == [] and events == []
    faces, events = step(tr, 3, [box(1)], [[1, 0, 0]])     # back within 2 missed rounds: same id
    assert faces[0].track_id == 1 and events == []
    for i in (4, 5):
        step(tr, i, [], [])
    faces, events = step(tr, 6, [], [])
    assert [(e.kind, e.track_id, e.previous, e.reason) for e in events] == [("track_lost", 1, "a", "not seen")]
    faces, events = step(tr, 7, [box(0)], [[1, 0, 0]])
    assert faces[0].track_id == 2 and events[0].kind == "track_started"


def test_velocity_prediction_between_detections():
    tr = Tracker(LABELS)
    step(tr, 0, [box(0, s=40)], [[1, 0, 0]])
    step(tr, 1, [box(10, s=40)], [[1, 0, 0]])
    (tid, predicted, _), = tr.predict(3)
    assert tid == 1 and predicted.tolist() == pytest.approx([30, 0, 70, 40])
    faces, events = tr.update_tracked(3, [tid], [predicted], [[0, 1, 0]])
    assert faces[0].box == (30, 0, 70, 40) and faces[0].track_id == 1
    # the next detection is matched against the predicted position (x=60 at frame 6): a face that
    # moved 50 px since its last detection (no overlap with the old box) keeps its id
    faces, _ = step(tr, 6, [box(60, s=40)], [[1, 0, 0]])
    assert faces[0].track_id == 1


def test_close_reports_every_track_lost():
    tr = Tracker(LABELS)
    step(tr, 0, [box(0), box(50)], [[1, 0, 0], [0, 0, 1]])
    assert [(e.track_id, e.kind, e.previous, e.reason) for e in tr.close()] == [
        (1, "track_lost", "a", "source ended"), (2, "track_lost", "c", "source ended")]
    assert tr.tracks == [] and tr.close() == []        # closed once: a second close reports nothing


def test_greedy_match_prefers_best_overlap():
    tracks = np.array([box(0), box(5)], np.float32)
    dets = np.array([box(4)], np.float32)
    assert greedy_match(tracks, dets, 0.3, 0.5) == [(1, 0)]
    assert greedy_match(tracks, np.zeros((0, 4)), 0.3, 0.5) == []
