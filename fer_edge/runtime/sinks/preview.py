"""Preview rendering: the frame with each face's box and label, as a JPEG (for the MJPEG stream)."""

from __future__ import annotations

from typing import Any

import numpy as np

# BGR, one colour per expression so a change is visible at a glance; unknown labels get grey.
_COLOURS = {
    "angry": (60, 60, 230), "disgust": (60, 160, 60), "fear": (170, 80, 170), "happy": (60, 200, 250),
    "sad": (220, 140, 60), "surprise": (230, 200, 60), "neutral": (200, 200, 200),
    "contempt": (90, 130, 200), "uncertain": (150, 150, 150),
}


def _faces(result: Any) -> list[dict[str, Any]]:
    if result is None:
        return []
    d = result.to_dict() if hasattr(result, "to_dict") else result
    return list(d.get("faces") or [])


def render_jpeg(frame_rgb: np.ndarray, result: Any, quality: int = 80, max_width: int | None = 640) -> bytes:
    import cv2

    img = cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    scale = 1.0
    if max_width and w > max_width:
        scale = max_width / w
        img = cv2.resize(img, (max_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    thick = max(1, round(img.shape[1] / 320))
    for f in _faces(result):
        x0, y0, x1, y1 = (int(round(v * scale)) for v in f["box"][:4])
        colour = _COLOURS.get(str(f.get("expression")), (180, 180, 180))
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, thick)
        conf = f.get("confidence")
        label = f"#{f.get('track_id')} {f.get('expression')}" + (f" {conf * 100:.0f}%" if conf is not None else "")
        font, fs = cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thick
        (tw, th), base = cv2.getTextSize(label, font, fs, 1)
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else y1 + th + 4
        cv2.rectangle(img, (x0, ty - th - 3), (x0 + tw + 4, ty + base - 1), colour, -1)
        cv2.putText(img, label, (x0 + 2, ty - 1), font, fs, (20, 20, 20), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding of the preview frame failed")
    return buf.tobytes()
