"""One frame through the device pipeline: detect -> crop -> classify -> smooth -> FrameResult.

`Pipeline.process(frame)` is synchronous and single-threaded (the daemon's main loop calls it;
capture runs in its own thread and sinks in theirs). With `detect_every = N` the detector runs on
every Nth frame - or whenever no face is being tracked - and the frames in between reuse the
tracked boxes (moved by each track's velocity): detection is the costly stage, classification of
a 96 px crop is not.

Photos are not video: a frame that names its file (an image-folder source) is processed on its own,
with a fresh tracker - always detected, never smoothed with or tracked from the previous file, and
without track events - so each photo's label is that photo's alone.

When a finite source ends, `finish()` closes the tracks still open: one last result with no faces
whose events are their track_lost (reason "source ended", or "source failed"), so a consumer pairs every
track_started with a track_lost.
"""

from __future__ import annotations

import time

import numpy as np

from fer_edge.runtime.classifier import Classifier
from fer_edge.runtime.crop import crop_for_model
from fer_edge.detectors import Detector, DetectorConfig
from fer_edge.runtime.config import ClassifierConfig
from fer_edge.runtime.sources import Frame
from fer_edge.runtime.tracker import LOST_SOURCE_ENDED, Tracker
from fer_edge.runtime.types import FrameResult

STAGES = ("capture", "detect", "crop", "classify", "smooth", "publish")


class Pipeline:
    def __init__(self, detector: Detector, classifier: Classifier, tracker: Tracker,
                 detect_every: int = DetectorConfig.model_fields["every"].default,
                 align: bool = ClassifierConfig.model_fields["align"].default, source_name: str = ""):
        self.detector, self.classifier, self.tracker = detector, classifier, tracker
        self.detect_every = max(1, int(detect_every))
        self.align = align
        self.source_name = source_name
        self.spec = classifier.spec
        self._since_detect = 0
        self._last_index: int | None = None
        self.stills = False  # set once a frame names its file: photos, each on its own

    def _needs_detection(self) -> bool:
        live = self.tracker.live()
        # A track seen once has no velocity yet: detect again before coasting on it.
        return (self._since_detect % self.detect_every == 0 or not live
                or any(t.hits < 2 for t in live))

    def process(self, frame: Frame) -> FrameResult:
        image = frame.image
        timings = {"capture": round(frame.capture_ms, 3)}
        clock = time.perf_counter
        still = frame.file is not None
        if still:
            # A new photo owes nothing to the previous one: no tracks, no smoothing, no events.
            self.stills = True
            self.tracker = Tracker(self.tracker.labels, self.tracker.p)
        if still or self._needs_detection():
            self._since_detect = 0
            t0 = clock()
            dets = self.detector.detect(image, frame.detect_image)
            t1 = clock()
            crops = [crop_for_model(image, d.box, self.spec, d.eyes, self.align) for d in dets]
            t2 = clock()
            probs = self.classifier.classify(crops)
            t3 = clock()
            faces, events = self.tracker.update(
                frame.index, [d.box for d in dets], [d.score for d in dets], probs, [d.landmarks for d in dets])
            t4 = clock()
            timings["detect"] = (t1 - t0) * 1000
        else:
            t1 = clock()
            tracked = self.tracker.predict(frame.index)
            h, w = image.shape[:2]
            boxes = [np.clip(b, 0, [w, h, w, h]) for _, b, _ in tracked]
            crops = [crop_for_model(image, b, self.spec, lm, self.align) for (_, _, lm), b in zip(tracked, boxes)]
            t2 = clock()
            probs = self.classifier.classify(crops)
            t3 = clock()
            faces, events = self.tracker.update_tracked(frame.index, [tid for tid, _, _ in tracked], boxes, probs)
            t4 = clock()
        self._since_detect += 1
        self._last_index = frame.index
        if still:
            events = []
        timings["crop"] = (t2 - t1) * 1000
        timings["classify"] = (t3 - t2) * 1000
        timings["smooth"] = (t4 - t3) * 1000
        return FrameResult(
            frame_index=frame.index, timestamp=frame.timestamp, faces=faces, events=events,
            source=self.source_name, file=frame.file,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
        )

    def finish(self, reason: str = LOST_SOURCE_ENDED) -> FrameResult | None:
        """The source is over: a result carrying a track_lost event (`reason`) for every track
        still open, numbered one past the last frame; None when no track is open."""
        if self.stills:  # photos carry no tracks to close
            return None
        events = self.tracker.close(reason)
        if not events:
            return None
        index = 0 if self._last_index is None else self._last_index + 1
        return FrameResult(frame_index=index, timestamp=time.time(), faces=[], events=events,
                           source=self.source_name)
