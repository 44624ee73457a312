"""What flows from the pipeline to the sinks. Frames are RGB uint8 HxWx3 everywhere."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Face:
    track_id: int
    box: tuple[int, int, int, int]           # x0, y0, x1, y1 in frame pixels
    score: float                             # detector confidence
    expression: str                          # smoothed top label, or "uncertain"
    confidence: float                        # smoothed probability of `expression`'s label
    probabilities: dict[str, float]          # smoothed, label -> probability
    raw_expression: str = ""                 # this frame's top label before smoothing


@dataclass
class Event:
    track_id: int
    kind: str                                # "expression_changed", "track_started", "track_lost"
    previous: str | None = None
    current: str | None = None
    reason: str | None = None                # track_lost: "not seen" (missed detections) or "source ended"


@dataclass
class FrameResult:
    frame_index: int
    timestamp: float                         # time.time() when the frame was captured
    faces: list[Face] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    source: str = ""
    file: str | None = None                  # image-folder sources name the file
    timings_ms: dict[str, float] = field(default_factory=dict)  # capture, detect, crop, classify, smooth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Sink(Protocol):
    """An output. `publish` must not block the pipeline for long; a sink that fails is isolated."""

    name: str

    def publish(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...
