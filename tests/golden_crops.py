"""Golden model inputs: the crops of one committed frame must have the same bytes on every CPU.

The frame (`golden/crop_frame.png`, 320x240) is generated from scikit-image's public-domain
astronaut portrait (`--regenerate` rewrites it; nothing from the research data sets). For a fixed
list of face boxes and preprocessing specs - shrinking (INTER_AREA), enlarging (INTER_LINEAR_EXACT),
grey and RGB, eye-levelled, the detectors' own resizes - the sha256 of each model input is in
`golden/crops.json`. The host test (`test_preprocess_golden.py`) and the emulated Raspberry Pi
(`device/arm64_smoke.sh`, with the installed wheel, no pytest and no TensorFlow) both run this
file and must reproduce every checksum: a mismatch means host and board feed the model different
pixels.

    python tests/golden_crops.py               # check; exit 1 and name each crop that differs
    python tests/golden_crops.py --regenerate  # rewrite the frame and the checksums (on the host only)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FRAME = HERE / "golden" / "crop_frame.png"
SUMS = HERE / "golden" / "crops.json"

# name -> (box x0, y0, x1, y1 in frame pixels, spec fields, eyes or None). Boxes are fixed, not
# detected, so this pins the preprocessing alone; the smoke test compares whole runs.
CASES = {
    "grey48_shrink": ((145, 59, 225, 159), {"input_size": 48, "color": "grey"}, None),
    "grey96_enlarge": ((145, 59, 225, 159), {"input_size": 96, "color": "grey"}, None),
    "rgb64_shrink": ((145, 59, 225, 159), {"input_size": 64, "color": "rgb"}, None),
    "rgb224_enlarge": ((145, 59, 225, 159), {"input_size": 224, "color": "rgb"}, None),
    "grey96_linear": ((145, 59, 225, 159), {"input_size": 96, "color": "grey", "interpolation": "linear"}, None),
    "grey48_edge_clamped": ((0.0, 150.5, 61.3, 239.0), {"input_size": 48, "color": "grey", "face_margin": 0.3},
                            None),
    "grey64_aligned": ((145, 59, 225, 159), {"input_size": 64, "color": "grey"}, ((168.0, 97.0), (204.0, 104.0))),
}


def frame() -> np.ndarray:
    """The committed frame, RGB uint8 (PNG decodes identically everywhere; JPEG would not)."""
    from fer_edge.images import decode_image

    img = decode_image(FRAME, key=FRAME.name)
    assert img.shape == (240, 320, 3), img.shape
    return img


def sha(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest()


def compute(img: np.ndarray) -> dict[str, str]:
    """Every golden case's sha256 on this machine."""
    from fer_edge.preprocess import PreprocessSpec, resize_exact
    from fer_edge.runtime.crop import crop_for_model
    from fer_edge.detectors import _downscale

    out = {"frame": sha(img)}
    for name, (box, spec, eyes) in CASES.items():
        eyes_arr = None if eyes is None else tuple(np.array(e, np.float32) for e in eyes)
        out[name] = sha(crop_for_model(img, box, PreprocessSpec(**spec), eyes=eyes_arr, align=eyes is not None))
    # the detectors' own resizes: YuNet's downscale to its input width, BlazeFace's letterbox
    out["detector_downscale_200"] = sha(_downscale(img, 200))
    out["detector_enlarge_400"] = sha(resize_exact(img, (400, 300)))
    return out


def regenerate() -> None:
    import cv2

    sys.path.insert(0, str(HERE))
    from test_runtime_support import face_frame

    img, _ = face_frame(320, 240, 100, 20, 0.9)
    cv2.imwrite(str(FRAME), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    SUMS.write_text(json.dumps(compute(frame()), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FRAME} and {SUMS}")


def check() -> list[str]:
    """The names of the cases whose bytes differ from the committed checksums (empty = identical)."""
    want = json.loads(SUMS.read_text())
    have = compute(frame())
    return [k for k in sorted(want) if have.get(k) != want[k]] + [k for k in sorted(have) if k not in want]


def main(argv: list[str]) -> int:
    if "--regenerate" in argv:
        regenerate()
        return 0
    bad = check()
    if bad:
        print(f"golden crops differ on this machine: {', '.join(bad)} (host and board would feed the model "
              "different pixels; see fer_edge.preprocess.resize_exact)")
        return 1
    print(f"golden crops: all {len(json.loads(SUMS.read_text()))} checksums reproduced")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
