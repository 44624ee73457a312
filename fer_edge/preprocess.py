"""The one preprocessing path shared by training, calibration, benchmark and device.

A model's preprocessing is data (`PreprocessSpec`), written into the model's metadata at
export; every side reads it back and calls these functions. Normalisation lives inside the
model, so a .tflite takes uint8 pixels (0..255) of shape (1, S, S, C).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


class PreprocessSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_size: int = Field(ge=8, le=1024, description="square model input side, pixels")
    color: Literal["grey", "rgb"] = "rgb"
    interpolation: Literal["area", "linear"] = "area"
    face_margin: float = Field(
        0.1, ge=-0.25, le=1.0, description="fraction of the face box added on every side when cropping "
        "(negative: cropped inside the box; FER2013-style tight crops, tuned by bench --device-path)"
    )
    face_offset_y: float = Field(
        0.0, ge=-0.5, le=0.5, description="shift of the crop centre, as a fraction of the face box height "
        "(positive = down): detectors and data sets frame a face differently (tuned by bench --device-path)"
    )
    normalization: str = Field(
        "in_model", description="how pixels are scaled; 'in_model' = the model takes uint8 0..255"
    )

    @property
    def channels(self) -> int:
        return 1 if self.color == "grey" else 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, self.channels)


def to_uint8_image(image: np.ndarray) -> np.ndarray:
    """Any decoded image (HxW, HxWx1, HxWx3 RGB, HxWx4 RGBA; uint8/uint16/float) -> uint8 HxW or HxWx3 RGB."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx{{1,3,4}} image, got shape {img.shape}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float32)
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        img = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return img


def resize_exact(img: np.ndarray, size: tuple[int, int], area: bool = True) -> np.ndarray:
    """`img` resized to `size` (width, height) with the same bytes on every CPU.

    OpenCV's plain INTER_LINEAR on uint8 takes SIMD paths that round differently on aarch64 (measured:
    up to 2 levels on ~20% of pixels of a 1-channel crop), so host and board would feed the model
    different crops. INTER_LINEAR_EXACT (bit-exact by design) and true INTER_AREA (used only when both
    axes shrink; enlarging, OpenCV emulates INTER_AREA with that same inexact linear path) are identical.
    """
    import cv2

    w, h = size
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return img
    shrinking = iw >= w and ih >= h
    interp = cv2.INTER_AREA if (area and shrinking) else cv2.INTER_LINEAR_EXACT
    return cv2.resize(img, (w, h), interpolation=interp)


def to_model_input(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A face image (already cropped) -> uint8 array of `spec.shape`, ready for the model."""
    import cv2

    img = to_uint8_image(image)
    if spec.color == "grey" and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    elif spec.color == "rgb" and img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    s = spec.input_size
    img = resize_exact(img, (s, s), area=spec.interpolation == "area")
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img, dtype=np.uint8)


def square_crop_box(box: Box, frame_w: int, frame_h: int, margin: float,
                    offset_y: float = 0.0) -> tuple[int, int, int, int]:
    """Grow a detector box by `margin` on every side, move its centre down by `offset_y` box heights, make it
    square, clamp it to the frame.

    Always returns a non-empty integer box inside the frame (x0 < x1 <= frame_w, y0 < y1 <= frame_h).
    """
    if frame_w < 1 or frame_h < 1:
        raise ValueError(f"frame must be at least 1x1, got {frame_w}x{frame_h}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"face box has non-finite coordinates: {box}")
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + offset_y * (y1 - y0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = max(1.0, min(side, float(min(frame_w, frame_h))))
    cx = min(max(cx, side / 2), frame_w - side / 2)
    cy = min(max(cy, side / 2), frame_h - side / 2)
    ix0 = int(np.clip(np.floor(cx - side / 2), 0, frame_w - 1))
    iy0 = int(np.clip(np.floor(cy - side / 2), 0, frame_h - 1))
    iside = max(1, int(round(side)))
    ix1 = int(min(frame_w, ix0 + iside))
    iy1 = int(min(frame_h, iy0 + iside))
    return ix0, iy0, ix1, iy1


def crop_face(frame: np.ndarray, box: Box, spec: PreprocessSpec) -> np.ndarray:
    """Crop a detected face from an RGB frame with the spec's margin -> model input (uint8 spec.shape)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = square_crop_box(box, w, h, spec.face_margin, spec.face_offset_y)
    return to_model_input(frame[y0:y1, x0:x1], spec)
