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
    VideoSource,
    guess_source_type,
    xrgb8888_to_rgb,
)
from test_runtime_support import face_video  # noqa: F401  (fixture)


# --- picamera2 adaptor with a fake camera ------------------------------------------------------

class FakeRequest:
    def __init__(self, arrays):
        self.arrays = arrays
        self.released = False

    def make_array(self, name):
        return self.arrays[name]

    def release(self):
        self.released = True


class FakePicamera2:
    """Behaves like picamera2.Picamera2 for what the adaptor uses; buffers in XRGB8888 byte order."""

    def __init__(self, camera_num=0):
        self.camera_num = camera_num
        self.configured = None
        self.started = self.stopped = self.closed = False
        self.requests = []

    def create_video_configuration(self, main=None, lores=None, buffer_count=4, controls=None):
        return {"main": main, "lores": lores, "buffer_count": buffer_count, "controls": controls}

    def configure(self, config):
        self.configured = config

    def start(self):
        self.started = True

    def capture_request(self):
        w, h = self.configured["main"]["size"]
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = 200          # R
        rgb[..., 1] = 100          # G
        rgb[..., 2] = 30           # B
        rgb[0, 0] = (1, 2, 3)
        xrgb = np.empty((h, w, 4), np.uint8)
        xrgb[..., 0], xrgb[..., 1], xrgb[..., 2], xrgb[..., 3] = rgb[..., 2], rgb[..., 1], rgb[..., 0], 255
        lw, lh = self.configured["lores"]["size"]
        bgr_small = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (lw, lh))
        yuv = cv2.cvtColor(bgr_small, cv2.COLOR_BGR2YUV_I420)
        req = FakeRequest({"main": xrgb, "lores": yuv})
        self.requests.append(req)
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


def test_picamera2_adaptor_with_fake_camera():
    cams = []

    def factory(num):
        cams.append(FakePicamera2(num))
        return cams[-1]

    src = Picamera2Source(size=(64, 48), lores_size=(64, 48), factory=factory)
    src.open()
    cam = cams[0]
    assert cam.started and cam.configured["main"] == {"size": (64, 48), "format": "XRGB8888"}
    assert cam.configured["lores"]["format"] == "YUV420"
    f = src.read()
    assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
    assert f.image[5, 5].tolist() == [200, 100, 30]           # R, G, B - not B, G, R
    assert f.image[0, 0].tolist() == [1, 2, 3]
    assert f.detect_image.shape == (48, 64, 3)
    assert np.abs(f.detect_image[20, 20].astype(int) - [200, 100, 30]).max() <= 4  # YUV round trip
    assert cam.requests[0].released                            # buffers go back to libcamera
    assert src.live and not src.finite
    src.close()
    assert cam.stopped and cam.closed


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
