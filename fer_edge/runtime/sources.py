"""Frame sources by name: picamera2, an OpenCV/V4L2 camera, a video file or stream URL, an image folder.

Every source yields `Frame`s whose image is RGB uint8 HxWx3; colour conversion happens once, here,
in the adaptor that knows the hardware's byte order. Heavy or board-only imports (cv2, picamera2)
happen inside `open()`, so naming a source costs nothing until it is used.

A source is a small object with `open()`, `read() -> Frame | None` (None = the stream ended),
`close()`, and two facts: `finite` (files end; cameras do not) and `live` (frames that are not
consumed in time are stale and may be dropped). A source that raises is reopened by the capture
loop with `open(resume=position)`, so a finite source resumes where it failed instead of replaying.

Each source declares its settings beside it (`Config`, a pydantic model; the daemon's `source:` section is
the union of the registered ones, told apart by `type`) and is built from them with `Cls.from_config(cfg)`.
Every default is written there, once: the constructors read theirs from it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fer_edge.detectors import DetectorConfig
from fer_edge.errors import ConfigError, DataError
from fer_edge.filenames import opencv_path, printable_name
from fer_edge.registry import Registry

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")


class SourceError(RuntimeError):
    """A camera or stream failed (disconnected, unreadable); the capture loop retries it with backoff."""


@dataclass
class Frame:
    index: int                               # position in the run (set by the capture loop)
    image: np.ndarray                        # RGB uint8 HxWx3
    timestamp: float                         # time.time() at capture
    file: str | None = None                  # image folders name the file
    position: int = 0                        # position inside the source (frame of a video, file of a folder)
    detect_image: np.ndarray | None = None   # optional low-res RGB copy for the detector (picamera2 lores)
    capture_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    name: str
    finite: bool
    live: bool
    position: int

    def open(self, resume: int = 0) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class SourceConfig(BaseModel):
    """What every source section takes (the capture loop's settings); each source's model adds its own."""

    model_config = ConfigDict(extra="forbid")

    if TYPE_CHECKING:
        # Each source's model declares its `type` (a Literal of its names). Said here for the type checker
        # only: at run time the base gains no field (it is what --print-config lists as every source's).
        type: str

    loop: bool = Field(False, description="replay a finite source (video file, image folder) forever")
    drop_stale: bool | None = Field(None, description="drop stale frames (keep only the newest); None = yes for "
                                    "cameras and streams, no for files")
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames (tests, batch jobs)")
    retry_initial_s: float = Field(0.5, gt=0, description="reopen a failing camera after this long, then "
                                   "twice as long each time ...")
    retry_max_s: float = Field(30.0, gt=0, description="... up to this long")
    stall_s: float = Field(10.0, gt=0, description="a live source that delivers no frame for this long is "
                           "stalled: health degraded, the systemd watchdog no longer fed, the source reopened")
    wait_for_source: bool | None = Field(None, description="a camera that cannot deliver its first frame: keep "
                                         "retrying (true) or stop at once with the fix (false); None = stop when "
                                         "run from a terminal, retry as a service")


class Picamera2SourceConfig(SourceConfig):
    type: Literal["picamera2"] = "picamera2"
    size: tuple[int, int] = Field((640, 480), description="main stream size [W, H]")
    lores_size: tuple[int, int] | Literal["auto"] | None = Field(
        "auto", description="low-res stream the detector reads: auto = as wide as the detector's input "
        "(detector.input_width) with the main stream's aspect ratio, [W, H] = that size, null = downscale the "
        "main stream instead")
    framerate: float | None = Field(30.0, gt=0, description="frames per second asked of the camera")
    camera_num: int = Field(0, ge=0, description="which camera")


class CameraSourceConfig(SourceConfig):
    type: Literal["camera"] = "camera"
    device: int | str = Field(0, description="camera index or /dev/videoN")
    size: tuple[int, int] | None = Field((640, 480), description="frame size [W, H] asked of the driver")
    fps: float | None = Field(30.0, gt=0, description="frames per second asked of the driver")
    fourcc: str | None = Field("MJPG", description="pixel format asked of the driver (MJPG, YUYV)")

    @field_validator("fourcc")
    @classmethod
    def _fourcc(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 4:
            raise ValueError(f"fourcc must be 4 characters (e.g. MJPG, YUYV), got {v!r}")
        return v


class VideoSourceConfig(SourceConfig):
    type: Literal["video"] = "video"
    path: str = Field(..., description="a video file, or a stream URL (rtsp://, http://)")
    fps: float | None = Field(None, gt=0, le=1000,
                              description="play a file at this rate, as a camera would deliver it (soak tests, "
                                          "demos); null: as fast as the pipeline reads. Streams come at their "
                                          "sender's rate")

    @model_validator(mode="after")
    def _fps_files_only(self) -> "VideoSourceConfig":
        if self.fps is not None and is_url(self.path):
            raise ValueError(f"fps paces a video file; the stream {self.path} comes at its sender's rate: "
                             "remove fps")
        return self


class ImagesSourceConfig(SourceConfig):
    type: Literal["images"] = "images"
    path: str = Field(..., description="an image folder (class trees: DIR/happy/*.jpg)")


class SourceClass(Protocol):
    """What the registry holds: a source class, built from its settings (`from_config`), which it names as
    `Config`."""

    @property
    def Config(self) -> type[SourceConfig]: ...

    def from_config(self, config: Any, on_skip: Callable[[str, str], None] | None = None,
                    detect_width: int | None = None) -> Source: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Source: ...


SOURCES: Registry[SourceClass] = Registry("source")


def _default(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].default


def source_configs() -> list[type[SourceConfig]]:
    """The config model of every registered source (the members of the daemon's `source:` union)."""
    return list(dict.fromkeys(cls.Config for cls in SOURCES.objects()))


def build_source(config: SourceConfig, on_skip: Callable[[str, str], None] | None = None,
                 detect_width: int | None = None) -> Source:
    """The source a config section describes. `on_skip` hears of unreadable images or frames; `detect_width`
    is the detector's input width (picamera2 sizes its low-res stream for it)."""
    return SOURCES.get(config.type).from_config(config, on_skip=on_skip, detect_width=detect_width)


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def xrgb8888_to_rgb(buffer: np.ndarray) -> np.ndarray:
    """picamera2's XRGB8888 array (HxWx4, bytes B,G,R,X in memory) -> contiguous RGB uint8 HxWx3.

    `buffer` may be a strided view straight into the camera's buffer (rows padded to the stride):
    OpenCV reads it in place, so the conversion is the only copy.
    """
    if buffer.ndim != 3 or buffer.shape[2] != 4 or buffer.dtype != np.uint8:
        raise SourceError(f"expected an XRGB8888 buffer (HxWx4 uint8), got {buffer.shape} {buffer.dtype}")
    import cv2

    return cv2.cvtColor(buffer, cv2.COLOR_BGRA2RGB)


def xrgb8888_view(buffer: np.ndarray, size: tuple[int, int], stride: int) -> np.ndarray:
    """The HxWx4 pixels of an XRGB8888 buffer whose rows are `stride` bytes (>= 4*W): a view, no copy."""
    w, h = size
    flat = buffer.reshape(-1)
    if stride < 4 * w or flat.size < stride * (h - 1) + 4 * w:
        raise SourceError(f"XRGB8888 buffer of {flat.size} bytes with stride {stride} cannot hold {w}x{h} pixels")
    rows = np.lib.stride_tricks.as_strided(flat, shape=(h, 4 * w), strides=(stride, 1), writeable=False)
    return rows.reshape(h, w, 4)


def yuv420_to_rgb(buffer: np.ndarray, size: tuple[int, int], stride: int | None = None) -> np.ndarray:
    """picamera2's YUV420 (I420) buffer -> RGB uint8 HxWx3, honouring each plane's own stride.

    picamera2 hands YUV420 over as a (H*3/2, stride) array. The Y plane is H rows of `stride` bytes;
    the U and V planes that follow are H/2 rows of stride/2 bytes each, so one array row holds TWO
    chroma rows. Cropping every array row to W (what a single stride suggests) shears the colour
    wherever stride > W; each plane is cropped by its own stride here instead.
    """
    import cv2

    w, h = size
    flat = buffer.reshape(-1)
    if stride is None:
        stride = buffer.shape[1] if buffer.ndim == 2 else w
    cstride = stride // 2
    if w % 2 or h % 2 or stride % 2:
        raise SourceError(f"YUV420 needs even width, height and stride, got {w}x{h} stride {stride}")
    if stride < w or flat.size < stride * h + 2 * cstride * (h // 2):
        raise SourceError(f"YUV420 buffer of {flat.size} bytes with stride {stride} does not hold {w}x{h} pixels; "
                          "configure the lores stream with the size it delivers")
    y = np.lib.stride_tricks.as_strided(flat, shape=(h, w), strides=(stride, 1), writeable=False)
    u0 = stride * h
    v0 = u0 + cstride * (h // 2)
    u = np.lib.stride_tricks.as_strided(flat[u0:], shape=(h // 2, w // 2), strides=(cstride, 1), writeable=False)
    v = np.lib.stride_tricks.as_strided(flat[v0:], shape=(h // 2, w // 2), strides=(cstride, 1), writeable=False)
    # OpenCV's I420 conversion wants the three planes packed without padding: one small copy.
    packed = np.empty(h * w * 3 // 2, np.uint8)
    packed[:h * w].reshape(h, w)[:] = y
    packed[h * w:h * w * 5 // 4].reshape(h // 2, w // 2)[:] = u
    packed[h * w * 5 // 4:].reshape(h // 2, w // 2)[:] = v
    return cv2.cvtColor(packed.reshape(h * 3 // 2, w), cv2.COLOR_YUV2RGB_I420)


def lores_size_for(main: tuple[int, int], detect_width: int) -> tuple[int, int]:
    """A low-res stream as wide as the detector's input, with the main stream's aspect ratio (even sides,
    never larger than the main stream): the detector then reads it as is, without a resize."""
    mw, mh = (int(v) for v in main)
    w = min(mw, max(32, int(detect_width))) & ~1
    h = max(2, int(round(w * mh / mw))) & ~1
    return w, h


def stream_array(request: Any, name: str, mapped_array: Callable[..., Any] | None,
                 convert: Callable[[np.ndarray, dict[str, Any]], np.ndarray]) -> np.ndarray:
    """One stream of a completed request as RGB: read in place through picamera2's MappedArray where it
    exists (no copy of the camera buffer before `convert`), else through request.make_array (a copy)."""
    config = request.config[name]
    if mapped_array is not None:
        # reshape=False: the raw bytes; the adaptor applies the stride itself (MappedArray's own
        # reshape keeps YUV420 chroma rows at the luma stride, the bug this module avoids).
        try:
            mapped = mapped_array(request, name, reshape=False, write=False)
        except TypeError:  # picamera2 before 0.3.18 has no `write` argument (it maps read-write)
            mapped = mapped_array(request, name, reshape=False)
        with mapped as m:
            return convert(np.asarray(m.array), config)
    return convert(np.asarray(request.make_array(name)), config)


def _xrgb_from(array: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    fmt = str(config.get("format", "XRGB8888"))
    if fmt != "XRGB8888":
        raise SourceError(f"picamera2 stream format {fmt} is not XRGB8888 (bytes B,G,R,X); configure XRGB8888")
    size = tuple(config["size"])
    if array.ndim == 3:  # make_array's HxWx4, already cropped to the width
        return xrgb8888_to_rgb(array)
    return xrgb8888_to_rgb(xrgb8888_view(array, size, int(config.get("stride") or 4 * size[0])))


def _lores_from(array: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    fmt = str(config.get("format", "YUV420"))
    size = tuple(config["size"])
    if fmt == "XRGB8888":
        return _xrgb_from(array, config)
    if fmt != "YUV420":
        raise SourceError(f"picamera2 lores format {fmt} is not supported; use YUV420 (the Pi 4 ISP's only one)")
    stride = int(config.get("stride") or (array.shape[1] if array.ndim == 2 else size[0]))
    return yuv420_to_rgb(array, size, stride)


@SOURCES.register("picamera2", "picam", "libcamera")
class Picamera2Source:
    """Raspberry Pi camera through picamera2: an XRGB8888 main stream plus a low-res stream for detection.

    Each stream is read through picamera2's MappedArray, in place, with its own stride and format
    taken from the request's configuration (libcamera pads rows; XRGB8888 is B,G,R,X in memory;
    YUV420's chroma planes have half the luma stride). `lores_size="auto"` sizes the low-res stream
    for the detector (`detect_width` wide, the main stream's aspect ratio).
    `factory` builds the camera object (default `picamera2.Picamera2`) and `mapped_array` maps a
    request's buffer (default `picamera2.MappedArray`); tests inject fakes of both.
    """

    finite = False
    live = True
    Config = Picamera2SourceConfig

    def __init__(self, size: tuple[int, int] = _default(Config, "size"),
                 lores_size: tuple[int, int] | str | None = _default(Config, "lores_size"),
                 framerate: float | None = _default(Config, "framerate"),
                 camera_num: int = _default(Config, "camera_num"),
                 detect_width: int = _default(DetectorConfig, "input_width"),
                 factory: Callable[..., Any] | None = None, mapped_array: Callable[..., Any] | None = None):
        self.size = cast("tuple[int, int]", tuple(size))  # a list (from JSON) too: tuple() copies it
        if lores_size == "auto":
            lores_size = lores_size_for(self.size, detect_width)
        self.lores_size = tuple(lores_size) if lores_size else None
        self.framerate = framerate
        self.camera_num = camera_num
        self.name = f"picamera2:{camera_num}"
        self.position = 0
        self._factory = factory
        self._mapped_array = mapped_array
        self._cam = None

    @classmethod
    def from_config(cls, config: Picamera2SourceConfig, on_skip: Callable[[str, str], None] | None = None,
                    detect_width: int | None = None) -> "Picamera2Source":
        width: dict[str, Any] = {"detect_width": detect_width} if detect_width else {}
        return cls(size=config.size, lores_size=config.lores_size, framerate=config.framerate,
                   camera_num=config.camera_num, **width)

    def open(self, resume: int = 0) -> None:
        factory = self._factory
        if factory is None:
            try:
                from picamera2 import MappedArray, Picamera2
            except ImportError as exc:
                raise ConfigError(
                    f"source 'picamera2' needs the picamera2 package ({exc}). On Raspberry Pi OS: "
                    "sudo apt install python3-picamera2 and create the venv with --system-site-packages "
                    "(device/install.sh does both). Elsewhere use a V4L2 camera: --source 0"
                ) from exc
            factory = Picamera2
            self._mapped_array = self._mapped_array or MappedArray
        try:
            cam = factory(self.camera_num)
            streams: dict[str, Any] = {"main": {"size": self.size, "format": "XRGB8888"}}
            if self.lores_size:
                # The Pi 4 ISP only produces YUV420 on the low-res stream.
                streams["lores"] = {"size": self.lores_size, "format": "YUV420"}
            controls = {"FrameRate": float(self.framerate)} if self.framerate else {}
            config = cam.create_video_configuration(buffer_count=4, controls=controls, **streams)
            cam.configure(config)
            cam.start()
        except ConfigError:
            raise
        except Exception as exc:  # libcamera raises plain RuntimeError/IndexError when no camera answers
            raise SourceError(f"picamera2 camera {self.camera_num} could not start: {exc}") from exc
        self._cam = cam
        self.position = resume

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceError("picamera2 source read before open()")
        t0 = time.perf_counter()
        try:
            request = self._cam.capture_request()
        except Exception as exc:
            raise SourceError(f"picamera2 capture failed: {exc}") from exc
        try:
            main = stream_array(request, "main", self._mapped_array, _xrgb_from)
            lores = stream_array(request, "lores", self._mapped_array, _lores_from) if self.lores_size else None
        finally:
            request.release()  # the buffers go back to libcamera; main and lores are our own copies
        pos = self.position
        self.position += 1
        return Frame(index=-1, image=main, timestamp=time.time(), position=pos, detect_image=lores,
                     capture_ms=(time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            for method in ("stop", "close"):
                try:
                    getattr(cam, method)()
                except Exception:  # closing a camera that already vanished must not raise
                    pass


class _OpenCVCapture:
    """Shared reading for OpenCV-backed sources (BGR from cv2, converted to RGB once)."""

    name: str
    position: int
    _cap: Any

    def _read_bgr(self) -> tuple[bool, np.ndarray | None, float]:
        if self._cap is None:
            raise SourceError(f"{self.name} read before open()")
        t0 = time.perf_counter()
        ok, bgr = self._cap.read()
        return ok, bgr, t0

    def _frame(self, bgr: np.ndarray, t0: float) -> Frame:
        rgb = bgr_to_rgb(bgr)
        pos = self.position
        self.position += 1
        return Frame(index=-1, image=rgb, timestamp=time.time(), position=pos,
                     capture_ms=(time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


@SOURCES.register("camera", "v4l2", "opencv")
class OpenCVCameraSource(_OpenCVCapture):
    """A V4L2 camera (USB webcam, Pi camera via the V4L2 compat layer): index or /dev/videoN, MJPG."""

    finite = False
    live = True
    Config = CameraSourceConfig

    def __init__(self, device: int | str = _default(Config, "device"),
                 size: tuple[int, int] | None = _default(Config, "size"),
                 fps: float | None = _default(Config, "fps"), fourcc: str | None = _default(Config, "fourcc")):
        self.device = device
        self.size, self.fps, self.fourcc = size, fps, fourcc
        self.name = f"camera:{device}"
        self.position = 0
        self._cap = None

    @classmethod
    def from_config(cls, config: CameraSourceConfig, on_skip: Callable[[str, str], None] | None = None,
                    detect_width: int | None = None) -> "OpenCVCameraSource":
        return cls(device=config.device, size=config.size, fps=config.fps, fourcc=config.fourcc)

    def open(self, resume: int = 0) -> None:
        import cv2

        dev = self.device
        if isinstance(dev, str) and dev.isdigit():
            dev = int(dev)
        if isinstance(dev, str) and not os.path.exists(dev):
            raise SourceError(f"camera device {dev} does not exist (unplugged?); V4L2 devices here: "
                              f"{', '.join(video_devices()) or 'none'}")
        cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {self.device} could not be opened through V4L2 "
                              f"(devices here: {', '.join(video_devices()) or 'none'}; is the user in group 'video'?)")
        if self.fourcc:
            # OpenCV's stubs declare it as VideoWriter.fourcc only; the module-level alias is the same function
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))  # type: ignore[attr-defined]
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        # The driver's own queue adds latency; the capture thread keeps only the newest frame anyway.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap
        self.position = resume

    def read(self) -> Frame | None:
        ok, bgr, t0 = self._read_bgr()
        if not ok or bgr is None:
            raise SourceError(f"camera {self.device} returned no frame (disconnected?)")
        return self._frame(bgr, t0)


def is_url(spec: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec))


@SOURCES.register("video", "file", "stream", "url")
class VideoSource(_OpenCVCapture):
    """A video file (finite: every frame is processed) or a stream URL (live: stale frames dropped)."""

    # A file whose reads keep failing this many times in a row has ended; fewer, then a good frame,
    # were damaged frames (OpenCV returns False for both, so reading on is the only way to tell).
    MAX_UNREADABLE = 25
    Config = VideoSourceConfig

    @classmethod
    def from_config(cls, config: VideoSourceConfig, on_skip: Callable[[str, str], None] | None = None,
                    detect_width: int | None = None) -> "VideoSource":
        # a stream that stops sending must end its read, so the capture can reconnect
        return cls(config.path, on_skip=on_skip, timeout_s=config.stall_s, fps=config.fps)

    def __init__(self, path: str | os.PathLike[str], on_skip: Callable[[str, str], None] | None = None,
                 timeout_s: float | None = None, fps: float | None = _default(Config, "fps")):
        self.path = str(path)
        # A file played at a camera's pace (soak tests, demos): frame n is not handed out before
        # open + n/fps. A pipeline slower than that is not made to catch up in a burst afterwards.
        self.fps = fps
        self._due = 0.0
        self.timeout_s = timeout_s  # streams: a read (or open) that waits longer fails, and is retried
        self.on_skip = on_skip
        self.skipped: list[tuple[str, str]] = []
        self.finite = not is_url(self.path)
        self.live = not self.finite
        self.name = f"video:{self.path}"
        self.position = 0
        self._cap = None

    def open(self, resume: int = 0) -> None:
        import cv2

        if self.finite and not Path(self.path).is_file():
            raise DataError(f"video file not found: {self.path}")
        if not self.finite and self.timeout_s:
            ms = int(max(1.0, self.timeout_s) * 1000)
            cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(opencv_path(self.path, "video"))
        if not cap.isOpened():
            cap.release()
            if self.finite:
                raise DataError(f"{self.path}: OpenCV cannot decode this video (codec or container unsupported); "
                                "re-encode it, e.g. ffmpeg -i IN -c:v mjpeg OUT.avi")
            raise SourceError(f"stream {self.path} could not be opened")
        if resume and self.finite:
            cap.set(cv2.CAP_PROP_POS_FRAMES, resume)
        self._cap = cap
        self.position = resume if self.finite else 0
        self._due = time.monotonic()

    def _pace(self, fps: float) -> None:
        now = time.monotonic()
        if self._due > now:
            time.sleep(self._due - now)
        self._due = max(self._due, now) + 1.0 / fps

    def read(self) -> Frame | None:
        if self.fps:
            self._pace(self.fps)
        ok, bgr, t0 = self._read_bgr()
        if not ok or bgr is None:
            if not self.finite:
                raise SourceError(f"stream {self.path} stopped delivering frames")
            # The end of the file, or a frame the decoder could not read: without this, a damaged
            # frame ended the run there as if the file were over (measured: 10 of 30 frames).
            for bad in range(1, self.MAX_UNREADABLE + 1):
                ok, bgr, t0 = self._read_bgr()
                if ok and bgr is not None:
                    for _ in range(bad):
                        self._skip(f"frame {self.position}", "could not be decoded (damaged video file?)")
                        self.position += 1
                    break
            else:
                return None
        return self._frame(bgr, t0)

    def _skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))
        if self.on_skip:
            self.on_skip(name, reason)


def walk_images(top: Path) -> list[Path]:
    """Image files under `top` and its sub-folders (a class tree: DIR/happy/*.jpg), sorted by relative
    path; hidden names skipped; a symlinked folder is followed once, so a link loop cannot hang.
    Non-regular entries with an image name (FIFO, socket, broken link) are listed so that reading
    them names them as skipped (fer_edge.limits refuses them before any open)."""
    from fer_edge.images import walk_folders

    out: list[Path] = []
    for dirpath, filenames in walk_folders(top, lambda name: not name.startswith(".")):
        out += [Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(out, key=lambda p: p.relative_to(top).parts)


@SOURCES.register("images", "image_folder", "folder")
class ImageFolderSource:
    """Every image in a folder and its sub-folders (class trees), sorted by relative path; each frame
    names its file (relative to the folder: "happy/img1.jpg"). Unreadable files are skipped and named."""

    finite = True
    live = False
    Config = ImagesSourceConfig

    @classmethod
    def from_config(cls, config: ImagesSourceConfig, on_skip: Callable[[str, str], None] | None = None,
                    detect_width: int | None = None) -> "ImageFolderSource":
        return cls(config.path, on_skip=on_skip)

    def __init__(self, path: str | os.PathLike[str], on_skip: Callable[[str, str], None] | None = None):
        self.path = Path(path)
        self.name = f"images:{self.path}"
        self.position = 0
        self.files: list[Path] = []
        self.on_skip = on_skip
        self.skipped: list[tuple[str, str]] = []

    def open(self, resume: int = 0) -> None:
        if not self.path.is_dir():
            raise DataError(f"image folder not found: {self.path}")
        # Not is_file(): a dangling or self-looping symlink is listed, so read() names it as skipped.
        self.files = walk_images(self.path)
        if not self.files:
            raise DataError(f"{self.path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.position = resume

    def read(self) -> Frame | None:
        # The core's decoder, the one the data side reads data sets with: it reads bytes (any file-name
        # encoding; cv2.imread crashes on some), refuses truncated files and decompression bombs from the
        # header, and says why.
        from fer_edge.images import BadImageError, decode_image

        while self.position < len(self.files):
            p = self.files[self.position]
            self.position += 1
            name = printable_name(str(p.relative_to(self.path)))
            t0 = time.perf_counter()
            try:
                img = decode_image(p, key=name)
            except BadImageError as exc:
                self.skipped.append((name, exc.reason))
                if self.on_skip:
                    self.on_skip(name, exc.reason)
                continue
            rgb = np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img)
            return Frame(index=-1, image=rgb, timestamp=time.time(), file=name, position=self.position - 1,
                         capture_ms=(time.perf_counter() - t0) * 1000)
        return None

    def close(self) -> None:
        pass


def video_devices() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("video*"))


def guess_source_type(spec: str) -> str:
    """The source type a `--source` string names: picamera2, camera (index or /dev/videoN), images, video."""
    s = spec.strip()
    if s.lower() in ("picamera2", "picam", "libcamera"):
        return "picamera2"
    if s.isdigit() or s.startswith("/dev/video"):
        return "camera"
    if is_url(s):
        return "video"
    p = Path(s)
    if p.is_dir():
        return "images"
    if p.is_file():
        return "video"
    raise ConfigError(
        f"--source {spec!r} is neither a camera (picamera2, 0, /dev/video0), an existing video file or "
        "image folder, nor a URL (rtsp://..., http://...)"
    )
