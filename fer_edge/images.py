"""Robust image decoding: every file a user's data set may hold, or a typed error that says why not.

OpenCV decodes from bytes (`cv2.imdecode`) rather than from a path so that file names in any
encoding work, and so the same bytes can be hashed by the audit. Truncation is checked from the
container (JPEG end-of-image marker, PNG IEND chunk) because libjpeg "decodes" a cut-off JPEG into
a half-grey image with only a warning on stderr.

In the core because both the data readers and the runtime's image-folder source decode with it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from fer_edge import limits
from fer_edge.errors import DataError, LimitError
from fer_edge.preprocess import to_uint8_image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MIN_SIDE = 8                      # smaller than this cannot hold a face worth classifying
MAX_PIXELS = limits.MAX_IMAGE_PIXELS   # refused from the header, before decoding


class BadImageError(DataError):
    """One image cannot be used; `reason` is short enough for a skipped-files summary."""

    def __init__(self, key: str, reason: str):
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}")


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def read_bytes(path: str | Path, key: str | None = None) -> bytes:
    """The bytes of an image file: a regular file of at most limits.MAX_IMAGE_BYTES. A FIFO, socket,
    device or broken link is a BadImageError (skipped and named), never a read that blocks."""
    try:
        return limits.read_limited(path, limits.MAX_IMAGE_BYTES, "image")
    except LimitError as exc:
        raise BadImageError(key or str(path), exc.reason) from None


def _jpeg_info(data: bytes) -> tuple[tuple[int, int] | None, bool]:
    """Walk the JPEG segments: ((width, height) from the frame header, whether the main image's
    entropy-coded data is followed by an end-of-image marker)."""
    size = None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return size, False
        marker = data[i + 1]
        if marker == 0xFF:                      # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 <= n:
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                size = (w, h)
        if marker == 0xDA:                      # start of scan: the EOI must come after it
            # An EXIF thumbnail carries its own FFD9 earlier in the file, so search from here.
            return size, data.rfind(b"\xff\xd9", i) != -1
        i += 2 + seg_len
    return size, False


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}   # colour type -> channels after decoding (palette -> RGB)


def _png_info(data: bytes) -> tuple[tuple[int, int] | None, bool, int]:
    """((width, height), complete, decoded bytes per pixel) from the IHDR chunk."""
    size, bpp = None, 4
    if len(data) >= 26 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        size = (w, h)
        bpp = _PNG_CHANNELS.get(data[25], 4) * (2 if data[24] == 16 else 1)
    return size, data.rfind(b"IEND", max(0, len(data) - 4096)) != -1, bpp


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Canvas size of a WebP (lossy VP8, lossless VP8L or extended VP8X) from its first chunk."""
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if kind == b"VP8 " and len(data) >= 30:
        return (int.from_bytes(data[26:28], "little") & 0x3FFF), (int.from_bytes(data[28:30], "little") & 0x3FFF)
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    return None


def _container(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def check_bytes(data: bytes, key: str = "<bytes>") -> str:
    """Cheap checks before decoding; returns the container name or raises BadImageError."""
    if not data:
        raise BadImageError(key, "empty file (0 bytes)")
    kind = _container(data)
    if kind is None:
        head = data[:16]
        textual = all(32 <= b < 127 or b in (9, 10, 13) for b in head)
        what = "text, not an image" if textual else "not a known image format"
        raise BadImageError(key, f"{what} (first bytes {head[:8]!r})")
    size, complete, bpp = None, True, 4
    if kind == "jpeg":
        size, complete = _jpeg_info(data)
        bpp = 3
    elif kind == "png":
        size, complete, bpp = _png_info(data)
    elif kind == "bmp":
        size = _bmp_size(data)
    elif kind == "webp":
        size = _webp_size(data)
    if not complete:
        raise BadImageError(key, f"truncated {kind.upper()} ({len(data)} bytes, no end marker)")
    if size is not None:
        _check_size(key, *size, bytes_per_pixel=bpp)
    # TIFF (and any header we could not read) is bounded by OpenCV itself: limits sets
    # OPENCV_IO_MAX_IMAGE_PIXELS, and imdecode then refuses (returns None) beyond it.
    return kind


def _check_size(key: str, w: int, h: int, bytes_per_pixel: int = 3) -> None:
    if w * h > MAX_PIXELS or w * h * bytes_per_pixel > limits.MAX_DECODED_BYTES:
        raise BadImageError(key, f"too large ({w}x{h} = {w * h / 1e6:.0f} Mpx; the limit is "
                                 f"{MAX_PIXELS / 1e6:.0f} Mpx and {limits.MAX_DECODED_BYTES // limits.MiB} MB "
                                 "decoded) - downscale it")
    if min(w, h) < MIN_SIDE:
        raise BadImageError(key, f"too small ({w}x{h}; a face image needs at least {MIN_SIDE}x{MIN_SIDE} px)")


def decode_bytes(data: bytes, key: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> uint8 HxW (grey) or HxWx3 (RGB). Raises BadImageError with the reason."""
    import cv2

    kind = check_bytes(data, key)
    # ANYDEPTH|ANYCOLOR keeps grey as grey and 16-bit as 16-bit, converts CMYK/palette to colour,
    # and (unlike IMREAD_UNCHANGED) applies the EXIF orientation a phone camera writes.
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # OpenCV's own size ceiling (OPENCV_IO_MAX_IMAGE_PIXELS) and codec asserts
        raise BadImageError(key, f"corrupt or too large {kind.upper()} ({' '.join(str(exc).split())[-120:]})") from None
    if img is None:
        raise BadImageError(key, f"corrupt {kind.upper()} (OpenCV could not decode {len(data)} bytes)")
    _check_size(key, img.shape[1], img.shape[0])
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    try:
        return to_uint8_image(img)
    except ValueError as exc:
        raise BadImageError(key, str(exc)) from None


def decode_image(source: str | Path | bytes | bytearray | memoryview, key: str | None = None) -> np.ndarray:
    """A file path (any name encoding) or encoded bytes -> uint8 HxW grey or HxWx3 RGB.

    Raises BadImageError (a DataError) naming the file and the reason: empty, truncated,
    not an image, too small (< 8 px a side), too large (> 50 Mpx, checked from the header).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(source), key or "<bytes>")
    return decode_bytes(read_bytes(source, key), key or str(source))


def walk_folders(top: Path, visible: Callable[[str], bool]) -> Iterator[tuple[str, list[str]]]:
    """(folder, its visible file names, sorted) for `top` and every visible sub-folder, in sorted order.

    Symlinked folders are followed once each (by device and inode), so a link loop cannot hang a walk;
    a folder that cannot be listed is passed over.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if visible(d))
        yield dirpath, sorted(f for f in filenames if visible(f))
