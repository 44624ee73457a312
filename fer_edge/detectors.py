"""Face detectors by name: OpenCV YuNet (default) and MediaPipe BlazeFace short-range on LiteRT.

A detector takes an RGB frame (and optionally a low-res copy of it, e.g. picamera2's lores stream)
and returns `Detection`s in frame pixels, best first, filtered by score, minimum size and count.
Both detectors run on a downscaled image (detection cost grows with pixels; a face that fills a
tenth of a 640 px frame is still 30 px at 320) and scale the boxes back.

In the core: the runtime detects with them, and the bench scores a model through the same detector
(fer_edge.bench.photo_path) without importing the runtime.

Each detector declares its settings beside it (`Config`, a pydantic model: the `detector:` section of the
daemon's config is the union of the registered ones, told apart by `type`) and is built from them:
`YuNetDetector(YuNetConfig(...))`, or `create_detector("yunet", min_face=30)`. Every default is written
there, once.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fer_edge.errors import ConfigError, ModelError
from fer_edge.preprocess import resize_exact
from fer_edge.registry import Registry

YUNET_ASSET = "face_detection_yunet_2026may.onnx"
BLAZEFACE_ASSET = "face_detection_short_range.tflite"


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float
    # (K, 2) frame pixels; rows 0 and 1 are the eyes, the one on the image's left first (the subject's right)
    landmarks: np.ndarray | None = None

    @property
    def eyes(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.landmarks is None or len(self.landmarks) < 2:
            return None
        return self.landmarks[0], self.landmarks[1]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class Detector(Protocol):
    name: str

    def detect(self, frame: np.ndarray, detect_image: np.ndarray | None = None) -> list[Detection]: ...


DEFAULT_DETECTOR = "yunet"


class DetectorConfig(BaseModel):
    """The settings every detector takes (the daemon's `detector:` section); a detector's own model adds its
    `type` name(s) and any field of its own."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(DEFAULT_DETECTOR, description="the detector: yunet | blazeface")
    model: str | None = Field(None, description="the detector's model file; None = the one shipped in "
                              "fer_edge/assets")
    input_width: int = Field(320, ge=32, le=4096, description="detection runs on the frame scaled to this width "
                             "(YuNet), and picamera2's low-res stream is this wide (lores_size: auto)")
    score_threshold: float = Field(0.6, gt=0, lt=1, description="detections scoring below this are dropped")
    nms_threshold: float = Field(0.3, gt=0, lt=1, description="overlap (IoU) above which two detections are "
                                 "one face")
    min_face: float = Field(20.0, ge=0, description="smallest face side, pixels in the full frame")
    max_faces: int = Field(5, ge=1, le=100, description="at most this many faces, best first")
    every: int = Field(1, ge=1, le=1000, description="detect on every Nth frame; track boxes in between")
    threads: int | None = Field(None, ge=1, le=256, description="detector threads; None = the library's default "
                                "(OpenCV's for YuNet, 1 for BlazeFace)")


class YuNetConfig(DetectorConfig):
    type: Literal["yunet"] = "yunet"


class BlazeFaceConfig(DetectorConfig):
    type: Literal["blazeface", "blazeface_short"] = "blazeface"


class DetectorClass(Protocol):
    """What the registry holds: a detector class, built from its settings, which it names as `Config`."""

    @property
    def Config(self) -> type[DetectorConfig]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Detector: ...


DETECTORS: Registry[DetectorClass] = Registry("detector")


@contextlib.contextmanager
def asset_path(name: str) -> Iterator[Path]:
    """A real filesystem path to a packaged asset (OpenCV and LiteRT want paths, not streams)."""
    ref = importlib.resources.files("fer_edge.assets") / name
    with importlib.resources.as_file(ref) as p:
        if not Path(p).is_file():
            raise ModelError(f"packaged model {name} is missing from fer_edge/assets; reinstall fer-edge")
        yield Path(p)


def _finalise(dets: list[Detection], min_face: float, max_faces: int) -> list[Detection]:
    dets = [d for d in dets if min(d.width, d.height) >= min_face]
    dets.sort(key=lambda d: -d.score)
    return dets[:max_faces]


def _downscale(frame: np.ndarray, width: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if w <= width:
        return frame
    height = max(1, round(h * width / w))
    # Bit-exact on every CPU (preprocess.resize_exact): the boxes, hence the crops, match host and board.
    return resize_exact(frame, (width, height))


@DETECTORS.register("yunet")
class YuNetDetector:
    """OpenCV's YuNet (cv2.FaceDetectorYN) at `input_width` pixels wide; five landmarks per face."""

    name = "yunet"
    Config = YuNetConfig
    TOP_K = 50                # candidates YuNet keeps before its own NMS

    def __init__(self, config: YuNetConfig | None = None):
        import cv2

        c = config or YuNetConfig()
        model, input_width, threads = c.model, c.input_width, c.threads
        score_threshold, nms_threshold, min_face, max_faces = c.score_threshold, c.nms_threshold, c.min_face, c.max_faces
        top_k = self.TOP_K
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ConfigError(f"OpenCV {cv2.__version__} has no FaceDetectorYN; install opencv-python-headless>=4.10")
        self.input_width, self.min_face, self.max_faces = int(input_width), float(min_face), int(max_faces)
        self._size: tuple[int, int] = (input_width, input_width)
        with contextlib.ExitStack() as stack:
            path = Path(model) if model else stack.enter_context(asset_path(YUNET_ASSET))
            if not path.is_file():
                raise ModelError(f"YuNet model not found: {path}")
            try:
                from fer_edge.filenames import opencv_path

                self._net = cv2.FaceDetectorYN.create(opencv_path(path, "YuNet model"), "", self._size,
                                                      float(score_threshold),
                                                      float(nms_threshold), int(top_k))
            except cv2.error as exc:
                raise ModelError(f"{path}: OpenCV cannot load this YuNet model ({exc})") from exc
        if threads:
            cv2.setNumThreads(int(threads))

    def detect(self, frame: np.ndarray, detect_image: np.ndarray | None = None) -> list[Detection]:
        import cv2

        h, w = frame.shape[:2]
        small = detect_image if detect_image is not None else _downscale(frame, self.input_width)
        sh, sw = small.shape[:2]
        if (sw, sh) != self._size:
            self._net.setInputSize((sw, sh))
            self._size = (sw, sh)
        # YuNet was trained on OpenCV's BGR order.
        _, faces = self._net.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None:
            return []
        sx, sy = w / sw, h / sh
        dets = []
        for f in faces:
            x, y, bw, bh = (float(v) for v in f[:4])
            lm = np.asarray(f[4:14], np.float32).reshape(5, 2) * (sx, sy)
            box = (max(0.0, x * sx), max(0.0, y * sy), min(float(w), (x + bw) * sx), min(float(h), (y + bh) * sy))
            dets.append(Detection(box, float(f[14]), lm))
        return _finalise(dets, self.min_face, self.max_faces)


def ssd_anchors(input_size: int = 128, strides: tuple[int, ...] = (8, 16, 16, 16)) -> np.ndarray:
    """Anchor centres (N, 2) of MediaPipe's SSD anchor scheme with fixed-size anchors.

    Consecutive layers with the same stride share one feature map; each layer contributes two
    anchors per cell (aspect ratio 1 plus the interpolated scale). Short range: 16x16x2 + 8x8x6 = 896.
    """
    centres = []
    i = 0
    while i < len(strides):
        stride, per_cell = strides[i], 0
        while i < len(strides) and strides[i] == stride:
            per_cell += 2
            i += 1
        cells = math.ceil(input_size / stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N,4) against every box in b (M,4); boxes x0,y0,x1,y1."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, iou_threshold: float
                 ) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe-style weighted NMS: each cluster around the best remaining box becomes the
    score-weighted mean of its members (boxes and keypoints), keeping the best member's score."""
    order = np.argsort(-scores)
    boxes, scores, points = boxes[order], scores[order], points[order]
    remaining = np.arange(len(boxes))
    out = []
    while len(remaining):
        top = remaining[0]
        ious = iou_matrix(boxes[top:top + 1], boxes[remaining])[0]
        members = remaining[ious > iou_threshold]
        members = members if len(members) else np.array([top])
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        pts = (points[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, float(scores[top]), pts))
        remaining = remaining[~np.isin(remaining, members)]
    return out


@DETECTORS.register("blazeface", "blazeface_short")
class BlazeFaceDetector:
    """MediaPipe BlazeFace short range (128x128, faces within ~2 m) on the TFLite runtime fer-edge uses."""

    name = "blazeface"
    Config = BlazeFaceConfig
    input_size = 128

    def __init__(self, config: BlazeFaceConfig | None = None, runtime: str | None = None):
        from fer_edge.interpreter import find_runtime

        c = config or BlazeFaceConfig()
        model, threads = c.model, c.threads
        score_threshold, nms_threshold, min_face, max_faces = c.score_threshold, c.nms_threshold, c.min_face, c.max_faces
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.min_face, self.max_faces = float(min_face), int(max_faces)
        rt = find_runtime(runtime)
        with contextlib.ExitStack() as stack:
            path = Path(model) if model else stack.enter_context(asset_path(BLAZEFACE_ASSET))
            if not path.is_file():
                raise ModelError(f"BlazeFace model not found: {path}")
            try:
                self._interp = rt.interpreter_cls(model_path=str(path), num_threads=int(threads or 1))
                self._interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{path}: {rt.name} cannot load this BlazeFace model ({exc})") from exc
        inp = self._interp.get_input_details()[0]
        if tuple(inp["shape"][1:]) != (self.input_size, self.input_size, 3):
            raise ModelError(f"{path}: expected a 1x128x128x3 BlazeFace short-range model, got {inp['shape']}")
        self._in = inp["index"]
        outs = {d["name"]: d["index"] for d in self._interp.get_output_details()}
        by_shape = {tuple(d["shape"][1:]): d["index"] for d in self._interp.get_output_details()}
        self._reg = outs.get("regressors", by_shape.get((896, 16)))
        self._cls = outs.get("classificators", by_shape.get((896, 1)))
        if self._reg is None or self._cls is None:
            raise ModelError(f"{path}: outputs are not BlazeFace's regressors (896x16) and classificators (896x1)")
        self.anchors = ssd_anchors(self.input_size)

    def _letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        h, w = frame.shape[:2]
        s = self.input_size
        scale = s / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = resize_exact(frame, (nw, nh))
        pad_x, pad_y = (s - nw) // 2, (s - nh) // 2
        canvas = np.zeros((s, s, 3), np.uint8)
        canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
        return canvas, scale, pad_x, pad_y

    def detect(self, frame: np.ndarray, detect_image: np.ndarray | None = None) -> list[Detection]:
        h, w = frame.shape[:2]
        src = detect_image if detect_image is not None else frame
        fx, fy = w / src.shape[1], h / src.shape[0]
        canvas, scale, pad_x, pad_y = self._letterbox(src)
        x = (canvas.astype(np.float32) / 127.5 - 1.0)[None]  # the model takes [-1, 1]
        self._interp.set_tensor(self._in, x)
        self._interp.invoke()
        raw = self._interp.get_tensor(self._reg)[0]
        logits = np.clip(self._interp.get_tensor(self._cls)[0, :, 0].astype(np.float64), -100.0, 100.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        s = float(self.input_size)
        # Offsets are in input pixels relative to the anchor centre; box is centre x, y, width, height.
        cx = raw[:, 0] / s + anchors[:, 0]
        cy = raw[:, 1] / s + anchors[:, 1]
        bw, bh = raw[:, 2] / s, raw[:, 3] / s
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        pts = raw[:, 4:16].reshape(-1, 6, 2) / s + anchors[:, None, :]
        dets = []
        for box, score, kp in weighted_nms(boxes, scores, pts, self.nms_threshold):
            # normalised letterbox coordinates -> source pixels -> frame pixels
            bx = (box * s - np.array([pad_x, pad_y, pad_x, pad_y])) / scale * np.array([fx, fy, fx, fy])
            kpx = (kp * s - np.array([pad_x, pad_y])) / scale * np.array([fx, fy])
            x0, y0 = max(0.0, float(bx[0])), max(0.0, float(bx[1]))
            x1, y1 = min(float(w), float(bx[2])), min(float(h), float(bx[3]))
            if x1 <= x0 or y1 <= y0:
                continue
            dets.append(Detection((x0, y0, x1, y1), score, kpx.astype(np.float32)))
        return _finalise(dets, self.min_face, self.max_faces)


def detector_configs() -> list[type[DetectorConfig]]:
    """The config model of every registered detector (the members of the daemon's `detector:` union)."""
    return list(dict.fromkeys(cls.Config for cls in DETECTORS.objects()))


def build_detector(config: DetectorConfig) -> Detector:
    """The detector a config section describes."""
    return DETECTORS.get(config.type)(config)


def create_detector(kind: str = DEFAULT_DETECTOR, **options: Any) -> Detector:
    """Build a detector by name from keyword settings (its Config's fields; None = the default)."""
    cls = DETECTORS.get(kind)
    given = {k: v for k, v in options.items() if v is not None}
    try:
        config = cls.Config.model_validate({**given, "type": kind.lower()})
    except ValidationError as exc:
        raise ConfigError(f"{kind} detector: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from None
    return cls(config)
