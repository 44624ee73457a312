"""A procedurally drawn expression set: the demo data and the test data, no download.

Cartoon grey faces whose brows, eyes and mouth take a class-specific shape (happy smiles, sad
frowns with inner brows raised, surprise opens a round mouth under raised brows, ...). Expression
strength, pose, scale, position, lighting, blur and noise vary per image, and weak expressions
drift towards neutral, so a small CNN learns it well but not perfectly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_edge.data.types import LabelledSet, Sample
from fer_edge.errors import DataError
from fer_edge.labels import CANONICAL, FER2013_CODES, canonical_label, ordered_labels

SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.15), ("test", 0.15))


@dataclass(frozen=True)
class _Face:
    """Shape of one expression, in face units (fractions of the canvas). Brow offsets: + is down."""
    brow_inner: float = 0.0
    brow_outer: float = 0.0
    brow_left_extra: float = 0.0   # asymmetry: extra lift of the left brow
    eye_open: float = 1.0
    mouth_width: float = 0.22
    corner_left: float = 0.0       # lip corner height (+ is down)
    corner_right: float = 0.0
    mouth_mid: float = 0.0         # middle of the mouth line (+ is down)
    mouth_open: float = 0.0        # height of the open (dark) mouth
    wrinkle: float = 0.0           # nose wrinkle lines (disgust)


EXPRESSIONS: dict[str, _Face] = {
    "neutral": _Face(),
    "happy": _Face(brow_outer=-0.01, eye_open=0.65, mouth_width=0.30, corner_left=-0.05,
                   corner_right=-0.05, mouth_mid=0.035, mouth_open=0.02),
    "sad": _Face(brow_inner=-0.05, brow_outer=0.02, eye_open=0.8, mouth_width=0.22, corner_left=0.05,
                 corner_right=0.05, mouth_mid=-0.015),
    "surprise": _Face(brow_inner=-0.07, brow_outer=-0.06, eye_open=1.8, mouth_width=0.13, mouth_open=0.11),
    "angry": _Face(brow_inner=0.05, brow_outer=-0.02, eye_open=0.7, mouth_width=0.16, corner_left=0.012,
                   corner_right=0.012),
    "disgust": _Face(brow_inner=0.025, eye_open=0.6, mouth_width=0.22, corner_left=-0.045,
                     corner_right=0.01, mouth_mid=-0.02, wrinkle=1.0),
    "fear": _Face(brow_inner=-0.06, brow_outer=-0.03, eye_open=1.6, mouth_width=0.32, corner_left=0.02,
                  corner_right=0.02, mouth_open=0.035),
    "contempt": _Face(brow_left_extra=-0.02, eye_open=0.9, mouth_width=0.22, corner_left=-0.045,
                      corner_right=0.005),
}
assert set(EXPRESSIONS) == set(CANONICAL)

_NEUTRAL = EXPRESSIONS["neutral"]


def _blend(face: _Face, strength: float) -> _Face:
    """Interpolate from neutral towards `face`: weak expressions look nearly neutral."""
    vals = {k: getattr(_NEUTRAL, k) + strength * (getattr(face, k) - getattr(_NEUTRAL, k))
            for k in face.__dataclass_fields__}
    return _Face(**vals)


def _bezier(p0, p1, p2, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t ** 2 * np.array(p2)


def draw_face(face: _Face, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One face as a uint8 (size, size) grey image."""
    import cv2

    c = size * 2                                  # draw at 2x, then area-downsample (antialiasing)
    bg = rng.uniform(15, 120)
    skin = rng.uniform(max(bg + 40, 120), 225)
    ink = rng.uniform(10, 60)
    canvas = np.full((c, c), bg, np.float32)
    u = lambda x, y: (int(round(x * c * 8)), int(round(y * c * 8)))  # noqa: E731 - shift=3 sub-pixels
    lw = max(1, int(round(c * rng.uniform(0.022, 0.032))))
    aa, sh = cv2.LINE_AA, 3

    cv2.ellipse(canvas, u(0.5, 0.52), u(rng.uniform(0.30, 0.35), rng.uniform(0.39, 0.44)), 0, 0, 360,
                skin, -1, aa, sh)
    # eyes and pupils
    eye_y = 0.42 + rng.normal(0, 0.008)
    eye_dx = rng.uniform(0.12, 0.15)
    eye_w = rng.uniform(0.05, 0.065)
    eye_h = max(0.006, 0.028 * face.eye_open * rng.uniform(0.85, 1.15))
    for side in (-1, 1):
        ex = 0.5 + side * eye_dx
        cv2.ellipse(canvas, u(ex, eye_y), u(eye_w, eye_h), 0, 0, 360, min(255.0, skin + 30), -1, aa, sh)
        cv2.ellipse(canvas, u(ex, eye_y), u(eye_w, eye_h), 0, 0, 360, ink, max(1, lw // 2), aa, sh)
        r = min(eye_h, 0.022)
        cv2.circle(canvas, u(ex + rng.normal(0, 0.006), eye_y), int(r * c * 8), ink, -1, aa, sh)
    # brows: inner end near the nose, outer end above the eye's outer corner
    brow_y = eye_y - rng.uniform(0.075, 0.095)
    for side in (-1, 1):
        lift = face.brow_left_extra if side < 0 else 0.0
        inner = (0.5 + side * 0.06, brow_y + face.brow_inner + lift)
        outer = (0.5 + side * (eye_dx + eye_w + 0.01), brow_y + face.brow_outer + lift)
        mid = ((inner[0] + outer[0]) / 2, min(inner[1], outer[1]) - 0.015)
        pts = _bezier(inner, mid, outer)
        cv2.polylines(canvas, [np.int32(pts * c * 8)], False, ink, lw, aa, sh)
    # nose
    cv2.line(canvas, u(0.5, 0.47), u(0.5 + rng.uniform(-0.02, 0.02), 0.58), skin * 0.7 + ink * 0.3,
             max(1, lw // 2), aa, sh)
    if face.wrinkle > 0.3:
        for side in (-1, 1):
            for k in (0, 1):
                y = 0.50 + 0.025 * k
                cv2.line(canvas, u(0.5 + side * 0.035, y), u(0.5 + side * 0.075, y - 0.012),
                         ink, max(1, lw // 2), aa, sh)
    # mouth
    my = 0.73 + rng.normal(0, 0.01)
    mw = face.mouth_width * rng.uniform(0.9, 1.1)
    left = (0.5 - mw / 2, my + face.corner_left)
    right = (0.5 + mw / 2, my + face.corner_right)
    # quadratic Bezier control point that puts the curve's middle at my + mouth_mid
    mid = (0.5, 2 * (my + face.mouth_mid) - (left[1] + right[1]) / 2)
    if face.mouth_open > 0.015:
        top = _bezier(left, (0.5, my - face.mouth_open / 2 + face.mouth_mid), right)
        bot = _bezier(right, (0.5, my + face.mouth_open * 1.5 + face.mouth_mid), left)
        cv2.fillPoly(canvas, [np.int32(np.vstack([top, bot]) * c * 8)], ink, aa, sh)
    else:
        pts = _bezier(left, mid, right)
        cv2.polylines(canvas, [np.int32(pts * c * 8)], False, ink, lw, aa, sh)

    # pose, scale, position; then lighting, blur and sensor noise
    angle = rng.uniform(-15, 15)
    scale = rng.uniform(0.85, 1.15)
    m = cv2.getRotationMatrix2D((c / 2, c / 2), angle, scale)
    m[:, 2] += rng.uniform(-0.06, 0.06, 2) * c
    if rng.random() < 0.5:
        m[0] = -m[0]
        m[0, 2] += c
    canvas = cv2.warpAffine(canvas, m, (c, c), flags=cv2.INTER_LINEAR, borderValue=float(bg))
    ramp = np.linspace(-1, 1, c, dtype=np.float32)
    canvas += rng.uniform(-25, 25) * ramp[None, :] + rng.uniform(-15, 15) * ramp[:, None]
    canvas = canvas * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20)
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
    img += rng.normal(0, rng.uniform(2, 10), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _labels(labels: list[str] | None) -> list[str]:
    if labels is None:
        return ordered_labels(FER2013_CODES)
    out = [canonical_label(x) for x in labels]
    unknown = [x for x in out if x not in EXPRESSIONS]
    if unknown:
        raise DataError(f"the synthetic set cannot draw class(es) {unknown}; it draws {list(CANONICAL)}")
    if len(set(out)) < 2:
        raise DataError(f"the synthetic set needs at least two classes, got {labels}")
    return out


def synthetic_faces(label: str, n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """`n` faces of one class, uint8 (n, size, size)."""
    rng = np.random.default_rng([seed, CANONICAL.index(canonical_label(label))])
    face = EXPRESSIONS[canonical_label(label)]
    return np.stack([draw_face(_blend(face, rng.uniform(0.55, 1.15)), rng, size) for _ in range(n)])


def _split_of(n: int, rng: np.random.Generator) -> list[str]:
    order = rng.permutation(n)
    n_train = int(round(SPLIT_FRACTIONS[0][1] * n))
    n_val = int(round(SPLIT_FRACTIONS[1][1] * n))
    out = [""] * n
    for rank, i in enumerate(order):
        out[i] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out


# The demo set behind `--data` omitted: 120 faces per class is what lets a ~1 minute demo reach
# ~95% float accuracy and keep int8 within a few points of it (at 60 the float model stays
# near 65% and int8 agreement falls to ~70%: too few images to train a confident model).
DEMO_PER_CLASS = 120


def synthetic_set(n_per_class: int = 60, size: int = 48, seed: int = 0,
                  labels: list[str] | None = None) -> LabelledSet:
    """The demo data set: inline grey pixels, own splits train/val/test (70/15/15 per class)."""
    if n_per_class < 1:
        raise DataError(f"n_per_class must be >= 1, got {n_per_class}")
    if size < 16:
        raise DataError(f"synthetic faces need size >= 16 px, got {size}")
    names = _labels(labels)
    samples = []
    for label in names:
        faces = synthetic_faces(label, n_per_class, size, seed)
        splits = _split_of(n_per_class, np.random.default_rng([seed, 7919, CANONICAL.index(label)]))
        for i, (img, split) in enumerate(zip(faces, splits)):
            samples.append(Sample(key=f"synthetic:{label}/{i:04d}", label=label, split=split, pixels=img))
    return LabelledSet(samples=samples, labels=names, source="synthetic", kind="synthetic")


def write_synthetic_tree(dir: str | Path, n_per_class: int = 20, size: int = 48, seed: int = 0,
                         labels: list[str] | None = None, splits: bool = False, ext: str = ".png") -> Path:
    """Write the synthetic set as image files: DIR/<class>/<class>_0000.png, or with `splits`
    DIR/<train|val|test>/<class>/... Returns DIR."""
    import cv2

    root = Path(dir)
    ds = synthetic_set(n_per_class, size, seed, labels)
    for s in ds.samples:
        folder = root / s.split / s.label if splits else root / s.label
        folder.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(ext, s.pixels)
        if not ok:
            raise DataError(f"OpenCV cannot encode {ext}")
        (folder / f"{s.label}_{s.key.rsplit('/', 1)[1]}{ext}").write_bytes(buf.tobytes())
    return root
