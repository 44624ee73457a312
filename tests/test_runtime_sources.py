"""Frame sources, the capture mailbox and the retrying capture thread."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from fer_edge.errors import ConfigError, DataError, UnknownNameError
from fer_edge.runtime.capture import END, Backoff, CaptureThread, Mailbox
from fer_edge.runtime.sources import (
    SOURCES,
    Frame,
    ImageFolderSource,
    Picamera2Source,
    SourceError,
    VideoSource,
    guess_source_type,
    lores_size_for,
    xrgb8888_to_rgb,
    yuv420_to_rgb,
)
from test_runtime_support import face_video  # noqa: F401  (fixture)


# --- picamera2 adaptor with a fake camera ------------------------------------------------------
#
# The fake mirrors picamera2 (0.3.x, raspberrypi/picamera2 picamera2/request.py) where the adaptor
# touches it: configure() fills each stream's "stride" the way libcamera pads rows; a completed
# request has .config[stream] (format, size, stride), make_buffer() (1-D copy), make_array() (the
# library's own reshape: XRGB8888 cropped to HxWx4, YUV420 as (H*3/2, stride) with the padding left
# in), release(); MappedArray(request, stream, reshape=True, write=True) maps the buffer in place.
# Padding bytes are 0xEE, so reading them (or a wrong stride) changes colours.

PAD = 0xEE


def padded_stride(row_bytes: int, align: int) -> int:
    return (row_bytes + align - 1) // align * align


def xrgb_buffer(rgb: np.ndarray, stride: int) -> np.ndarray:
    """RGB HxWx3 -> a 1-D XRGB8888 camera buffer: B,G,R,X per pixel, rows padded to `stride` bytes."""
    h, w = rgb.shape[:2]
    buf = np.full(h * stride, PAD, np.uint8)
    rows = buf.reshape(h, stride)
    px = rows[:, :4 * w].reshape(h, w, 4)
    px[..., 0], px[..., 1], px[..., 2], px[..., 3] = rgb[..., 2], rgb[..., 1], rgb[..., 0], 0
    return buf


def yuv420_buffer(rgb: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB -> (1-D I420 buffer as libcamera lays it out: Y rows of `stride`, U and V rows of stride/2,
    padding 0xEE; and the same planes packed without padding, the reference for the conversion)."""
    h, w = rgb.shape[:2]
    packed = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
    y, u, v = packed[:h * w].reshape(h, w), packed[h * w:h * w * 5 // 4], packed[h * w * 5 // 4:]
    cs = stride // 2
    buf = np.full(stride * h + 2 * cs * (h // 2), PAD, np.uint8)
    buf[:stride * h].reshape(h, stride)[:, :w] = y
    buf[stride * h:stride * h + cs * (h // 2)].reshape(h // 2, cs)[:, :w // 2] = u.reshape(h // 2, w // 2)
    buf[stride * h + cs * (h // 2):].reshape(h // 2, cs)[:, :w // 2] = v.reshape(h // 2, w // 2)
    return buf, packed.reshape(h * 3 // 2, w)


def scene(w: int, h: int, seed: int) -> np.ndarray:
    """Every pixel a different colour: a wrong stride, channel order or plane offset shows per pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)), (xx + yy) % 256], -1).astype(np.uint8)
    rgb[::7, ::5] = rng.integers(0, 256, rgb[::7, ::5].shape, dtype=np.uint8)
    return rgb


class FakeCompletedRequest:
    def __init__(self, cam, buffers):
        self.picam2 = cam
        self.config = {name: dict(cfg) for name, cfg in cam.camera_config.items() if isinstance(cfg, dict)}
        self.buffers = buffers
        self.released = False
        self.copies = 0

    def make_buffer(self, name):
        self.copies += 1
        return np.array(self.buffers[name], dtype=np.uint8)

    def make_array(self, name):
        array = self.make_buffer(name)
        cfg = self.config[name]
        (w, h), stride = cfg["size"], cfg["stride"]
        if cfg["format"] == "XRGB8888":
            return np.ascontiguousarray(array.reshape(h, stride)[:, :4 * w]).reshape(h, w, 4)
        if cfg["format"] == "YUV420":
            return array.reshape(h * 3 // 2, stride)
        raise RuntimeError("Format " + cfg["format"] + " not supported")

    def release(self):
        self.released = True


class FakeMappedArray:
    """picamera2.MappedArray: the request's buffer in place (read-only when write=False)."""

    entered = 0

    def __init__(self, request, stream, reshape=True, write=True):
        self.request, self.stream, self.reshape, self.write = request, stream, reshape, write
        self.array = None

    def __enter__(self):
        FakeMappedArray.entered += 1
        a = self.request.buffers[self.stream].view()
        a.flags.writeable = self.write
        if self.reshape:
            cfg = self.request.config[self.stream]
            (w, h), stride = cfg["size"], cfg["stride"]
            a = (a.reshape(h, stride)[:, :4 * w].reshape(h, w, 4) if cfg["format"] == "XRGB8888"
                 else a.reshape(h * 3 // 2, stride))
        self.array = a
        return self

    def __exit__(self, *exc):
        self.array = None


class FakePicamera2:
    """picamera2.Picamera2 for what the adaptor uses. Rows are padded as libcamera pads them: main to
    `align` bytes, lores luma to `align` (its chroma planes to align/2)."""

    def __init__(self, camera_num=0, align=64, seed=0):
        self.camera_num, self.align, self.seed = camera_num, align, seed
        self.camera_config = None
        self.started = self.stopped = self.closed = False
        self.requests = []
        self.truth = []   # per request: (main RGB, lores I420 packed)

    def create_video_configuration(self, main=None, lores=None, buffer_count=6, controls=None, **kw):
        return {"main": dict(main or {}), "lores": dict(lores) if lores else None,
                "buffer_count": buffer_count, "controls": controls or {}}

    def configure(self, config):
        config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
        w, _ = config["main"]["size"]
        config["main"]["stride"] = padded_stride(4 * w, self.align)
        if config["lores"]:
            lw, lh = config["lores"]["size"]
            if lw > w or lw % 2 or lh % 2:
                raise RuntimeError(f"lores {lw}x{lh} must be even and no larger than main")
            config["lores"]["stride"] = padded_stride(lw, self.align)
        self.camera_config = config

    def start(self):
        self.started = True

    def capture_request(self):
        main, lores = self.camera_config["main"], self.camera_config["lores"]
        w, h = main["size"]
        rgb = scene(w, h, self.seed + len(self.requests))
        buffers = {"main": xrgb_buffer(rgb, main["stride"])}
        packed = None
        if lores:
            lw, lh = lores["size"]
            small = cv2.resize(rgb, (lw, lh), interpolation=cv2.INTER_AREA)
            buffers["lores"], packed = yuv420_buffer(small, lores["stride"])
        req = FakeCompletedRequest(self, buffers)
        self.requests.append(req)
        self.truth.append((rgb, packed))
        return req

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True


def test_xrgb8888_bytes_b_g_r_x_become_rgb():
    buf = np.array([[[10, 20, 30, 255], [0, 0, 255, 0]]], np.uint8)  # B,G,R,X
    rgb = xrgb8888_to_rgb(buf)
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [30, 20, 10]
    assert rgb[0, 1].tolist() == [255, 0, 0]


def _camera(monkeypatch=None, **kw):
    cams = []

    def factory(num):
        cams.append(FakePicamera2(num, **kw))
        return cams[-1]

    return cams, factory


@pytest.mark.parametrize("main_size,lores_size,align", [
    ((64, 48), (32, 24), 64),        # lores luma 32 -> stride 64: chroma rows 16 valid of 32
    ((100, 60), (50, 30), 64),       # main 400 bytes -> stride 448; lores 50 -> 64 (odd chroma rows: 15)
    ((128, 96), (64, 48), 64),       # no padding at all (what a width divisible by 64 gives)
    ((96, 72), "auto", 128),         # lores sized for a 320-wide detector, clamped to the main width
])
def test_picamera2_adaptor_honours_strides_and_byte_order(main_size, lores_size, align):
    cams, factory = _camera(align=align)
    src = Picamera2Source(size=main_size, lores_size=lores_size, factory=factory, mapped_array=FakeMappedArray)
    src.open()
    cam = cams[0]
    assert cam.started and cam.camera_config["main"]["format"] == "XRGB8888"
    assert cam.camera_config["lores"]["format"] == "YUV420"
    before = FakeMappedArray.entered
    for _ in range(2):
        f = src.read()
        rgb, packed = cam.truth[-1]
        req = cam.requests[-1]
        # main: every pixel exactly the scene's colour (R,G,B), padding never read
        assert f.image.shape == rgb.shape and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        assert np.array_equal(f.image, rgb)
        # lores: exactly OpenCV's conversion of the unpadded planes (no shear), and close to the scene
        lw, lh = cam.camera_config["lores"]["size"]
        assert np.array_equal(f.detect_image, cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420))
        small = cv2.resize(rgb, (lw, lh), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(f.detect_image.astype(int) - small).mean() < 8
        assert req.released and req.copies == 0       # read in place through MappedArray, then handed back
    assert FakeMappedArray.entered - before == 4
    src.close()
    assert cam.stopped and cam.closed


def test_picamera2_lores_auto_is_sized_for_the_detector():
    cams, factory = _camera()
    src = Picamera2Source(size=(1280, 720), lores_size="auto", detect_width=320, factory=factory,
                          mapped_array=FakeMappedArray)
    src.open()
    assert cams[0].camera_config["lores"]["size"] == (320, 180)   # detector width, main aspect, even
    f = src.read()
    assert f.detect_image.shape == (180, 320, 3) and f.image.shape == (720, 1280, 3)
    src.close()
    assert lores_size_for((640, 480), 300) == (300, 224)
    assert lores_size_for((200, 150), 320) == (200, 150)


def test_picamera2_padded_yuv_chroma_is_not_sheared():
    """The bug this adaptor fixes: cropping each (H*3/2, stride) row to W keeps chroma padding and shears
    the colour. Here the naive crop is visibly wrong while the adaptor matches the reference exactly."""
    w, h, stride = 48, 32, 64
    rgb = scene(w, h, 3)
    buf, packed = yuv420_buffer(rgb, stride)
    want = cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420)
    naive = cv2.cvtColor(np.ascontiguousarray(buf.reshape(h * 3 // 2, stride)[:, :w]), cv2.COLOR_YUV2RGB_I420)
    assert np.abs(naive.astype(int) - want.astype(int)).max() > 40
    assert np.array_equal(yuv420_to_rgb(buf.reshape(h * 3 // 2, stride), (w, h), stride), want)
    with pytest.raises(SourceError, match="stride"):
        yuv420_to_rgb(buf[:-10], (w, h), stride)      # a buffer too short for its stride is refused


def test_picamera2_without_mapped_array_uses_make_array():
    """A camera object without MappedArray support still reads correctly (one copy per stream)."""
    cams, factory = _camera(align=64)
    src = Picamera2Source(size=(100, 60), lores_size=(50, 30), factory=factory)
    src.open()
    f = src.read()
    rgb, packed = cams[0].truth[-1]
    assert np.array_equal(f.image, rgb)
    assert np.array_equal(f.detect_image, cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420))
    assert cams[0].requests[-1].copies == 2 and cams[0].requests[-1].released


def test_picamera2_refuses_a_main_format_that_is_not_xrgb8888():
    cams, factory = _camera()
    src = Picamera2Source(size=(64, 48), lores_size=None, factory=factory, mapped_array=FakeMappedArray)
    src.open()
    cams[0].camera_config["main"]["format"] = "RGB888"
    with pytest.raises(SourceError, match="XRGB8888"):
        src.read()
    assert cams[0].requests[-1].released


def test_picamera2_missing_package_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a non-Pi machine
    with pytest.raises(ConfigError, match="python3-picamera2"):
        Picamera2Source().open()


# --- files -------------------------------------------------------------------------------------

def test_image_folder_sorted_named_and_skips_unreadable(tmp_path):
    for name, value in (("b.png", 20), ("a.png", 10), ("c.jpg", 30)):
        img = np.full((12, 16, 3), value, np.uint8)
        img[..., 0] = 250  # red channel high: checks BGR -> RGB
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    skipped = []
    src = ImageFolderSource(tmp_path, on_skip=lambda n, r: skipped.append(n))
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert [f.file for f in frames] == ["a.png", "b.png", "c.jpg"]
    assert [int(f.image[0, 0, 1]) for f in frames[:2]] == [10, 20]
    assert all(f.image[0, 0, 0] >= 245 for f in frames)
    assert skipped == ["broken.png"]
    # resuming at a position continues there (used when a read fails mid-folder)
    src.open(resume=2)
    assert src.read().file == "c.jpg"


def test_video_source_reads_every_frame_then_ends(face_video):
    path, boxes = face_video
    src = VideoSource(path)
    assert src.finite and not src.live
    src.open()
    n = 0
    while (f := src.read()) is not None:
        assert f.image.shape == (240, 320, 3)
        n += 1
    assert n == len(boxes)
    src.close()


def test_video_file_at_fps_is_paced_like_a_camera_and_loses_nothing(face_video, monkeypatch):
    """fps: frame n is handed out no earlier than open + n/fps (read on a fake clock, so the test is
    exact and instant); a slow consumer is not paid back with a burst; every frame still comes."""
    from fer_edge.runtime import sources

    clock = {"t": 100.0}
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock["t"] += s

    monkeypatch.setattr(sources.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(sources.time, "sleep", sleep)
    path, boxes = face_video
    src = VideoSource(path, fps=20.0)
    src.open()
    handed: list[float] = []
    while (f := src.read()) is not None:
        handed.append(clock["t"])
        if f.position == 3:
            clock["t"] += 1.0          # the consumer stalls for 20 frame periods
    src.close()
    assert len(handed) == len(boxes)
    assert handed[:4] == pytest.approx([100.0, 100.05, 100.10, 100.15])
    # after the stall: the next frame at once, then the 50 ms cadence again (no catch-up burst)
    assert handed[4] == pytest.approx(101.15)
    assert np.diff(handed[4:]) == pytest.approx([0.05] * (len(handed) - 5))
    assert all(s > 0 for s in slept)


def test_fps_is_refused_for_a_stream():
    from fer_edge.runtime.config import load_config

    with pytest.raises(ConfigError, match="fps paces a video file"):
        load_config(overrides={"source": {"type": "video", "path": "rtsp://cam.local/s", "fps": 15}})
    assert load_config(overrides={"source": {"type": "video", "path": "a.avi", "fps": 15}}).source.fps == 15


def test_missing_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        VideoSource(tmp_path / "nope.avi").open()
    with pytest.raises(DataError, match="holds no images"):
        ImageFolderSource(tmp_path).open()


def test_source_names_resolve(tmp_path, face_video):
    assert guess_source_type("picamera2") == "picamera2"
    assert guess_source_type("0") == "camera"
    assert guess_source_type("/dev/video2") == "camera"
    assert guess_source_type("rtsp://cam.local/stream") == "video"
    assert guess_source_type(str(face_video[0])) == "video"
    assert guess_source_type(str(tmp_path)) == "images"
    with pytest.raises(ConfigError, match="neither a camera"):
        guess_source_type(str(tmp_path / "missing.mp4"))
    with pytest.raises(UnknownNameError, match="Did you mean 'camera'"):
        SOURCES.get("camra")


# --- mailbox and capture thread --------------------------------------------------------------

def test_mailbox_keeps_newest_and_counts_stale():
    mb = Mailbox(drop=True)
    for i in range(5):
        assert mb.put(i)
    assert mb.get(0.01) == 4
    assert mb.dropped == 4
    assert mb.get(0.01) is None


def test_mailbox_no_drop_waits_for_the_consumer():
    mb = Mailbox(drop=False)
    got = []

    def consume():
        while True:
            item = mb.get(0.5)
            if item is END:
                return
            if item is not None:
                got.append(item)
                time.sleep(0.002)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(50):
        assert mb.put(i)
    mb.put(END)
    t.join(5)
    assert got == list(range(50)) and mb.dropped == 0


class FlakySource:
    """A finite source of 10 frames whose read raises once at position 4."""

    finite, live = True, False
    name = "flaky"

    def __init__(self, fail_at=4, n=10):
        self.fail_at, self.n = fail_at, n
        self.position = 0
        self.opens = []
        self.failed = False

    def open(self, resume=0):
        self.opens.append(resume)
        self.position = resume

    def read(self):
        if self.position == self.fail_at and not self.failed:
            self.failed = True
            raise OSError("USB camera unplugged")
        if self.position >= self.n:
            return None
        f = Frame(index=-1, image=np.zeros((4, 4, 3), np.uint8), timestamp=time.time(), position=self.position)
        self.position += 1
        return f

    def close(self):
        pass


def test_capture_retries_and_resumes_where_it_failed():
    src = FlakySource()
    mb = Mailbox(drop=False)
    errors, recovered = [], []
    stop = threading.Event()
    cap = CaptureThread(src, mb, stop, backoff=Backoff(0.01, 0.05),
                        on_error=lambda e, a, d: errors.append((str(e), a, d)), on_recover=lambda: recovered.append(1))
    cap.start()
    positions = []
    while True:
        item = mb.get(1.0)
        if item is END:
            break
        positions.append((item.index, item.position))
    cap.join(2)
    assert positions == [(i, i) for i in range(10)]      # nothing lost, nothing replayed
    assert src.opens == [0, 4]
    assert errors == [("USB camera unplugged", 1, 0.01)] and recovered == [1]
    assert cap.fatal is None


def test_capture_loop_replays_finite_source():
    src = FlakySource(fail_at=-1, n=3)
    mb = Mailbox(drop=False)
    stop = threading.Event()
    cap = CaptureThread(src, mb, stop, loop=True, max_frames=7)
    cap.start()
    got = []
    while (item := mb.get(1.0)) is not END:
        got.append((item.index, item.position))
    assert got == [(0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2), (6, 0)]


def test_backoff_doubles_to_its_cap():
    d = Backoff(0.5, 3.0).delays()
    assert [next(d) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
