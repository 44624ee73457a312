"""Face crops for the classifier: the shared `preprocess.crop_face` path, plus optional eye levelling.

The crop geometry (margin, square, clamped to the frame) always comes from
`preprocess.square_crop_box` with the model's own spec, so the device crops exactly as training
did. Alignment only rotates that same square about its centre so the eyes are level; the rotated
square is sampled straight out of the frame with one affine warp (no full-frame rotation).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np

from fer_edge.preprocess import Box, PreprocessSpec, crop_face, square_crop_box, to_model_input


# Two (x, y) eye points as the detector gives them (a 2x2 array or a pair of pairs).
Eyes = Union[np.ndarray, Sequence[np.ndarray]]


def eye_angle(eye_a: np.ndarray, eye_b: np.ndarray) -> float:
    """Degrees the line from the image-left eye to the image-right eye is tilted (positive = clockwise on screen)."""
    (ax, ay), (bx, by) = (float(v) for v in eye_a), (float(v) for v in eye_b)
    if bx < ax:  # the detector reported the eyes the other way round
        ax, ay, bx, by = bx, by, ax, ay
    return math.degrees(math.atan2(by - ay, bx - ax))


def alignment_matrix(box: Box, eyes: Eyes, frame_w: int, frame_h: int, margin: float,
                     offset_y: float = 0.0) -> tuple[np.ndarray, int]:
    """The 2x3 affine that maps the eye-levelled square crop of `box` to a (side x side) image, and side."""
    import cv2

    x0, y0, x1, y1 = square_crop_box(box, frame_w, frame_h, margin, offset_y)
    side = max(1, min(x1 - x0, y1 - y0))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    m = cv2.getRotationMatrix2D((cx, cy), eye_angle(*eyes), 1.0)
    m[0, 2] += side / 2.0 - cx
    m[1, 2] += side / 2.0 - cy
    return m, side


def crop_aligned(frame: np.ndarray, box: Box, eyes: Eyes, spec: PreprocessSpec) -> np.ndarray:
    """Like `crop_face`, with the square rotated so that the eyes are level."""
    import cv2

    h, w = frame.shape[:2]
    m, side = alignment_matrix(box, eyes, w, h, spec.face_margin, spec.face_offset_y)
    patch = cv2.warpAffine(frame, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return to_model_input(patch, spec)


def crop_for_model(frame: np.ndarray, box: Box, spec: PreprocessSpec, eyes: Eyes | None = None,
                   align: bool = False) -> np.ndarray:
    """The classifier's input for one face: aligned when asked and the detector gave eyes, else crop_face."""
    if align and eyes is not None:
        return crop_aligned(frame, box, eyes, spec)
    return crop_face(frame, box, spec)
