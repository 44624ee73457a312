"""The bad-input corpus, generated at test time (no binaries in the repository).

`write_bad_images(folder)` writes one file per case into a class folder and returns the cases:
what each file is, whether fer-edge must *skip* it (and which words its reason must contain)
or *use* it (an odd but valid image that must decode). Every case is cheap to make: the
10000x10000 PNG is a constant image streamed through zlib (~100 KB on disk, never 100 MB in
memory), and the "huge JPEG" is a small JPEG whose frame header claims 10000x10000.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Case:
    what: str              # human description, for the report
    name: str              # the file name as Python sees it (os.fsdecode of the bytes on disk)
    skip: bool             # True: must be skipped and named; False: must be used
    words: str = ""        # words the skip reason must contain (lower case)

    @property
    def fsname(self) -> bytes:
        return os.fsencode(self.name)


def _face(size: int = 48, seed: int = 0, colour: bool = False) -> np.ndarray:
    """A smooth blob on noise: something an image codec round-trips and a model can be fed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blob = 200 * np.exp(-(((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 5) ** 2)))
    img = np.clip(blob + rng.integers(0, 40, (size, size)), 0, 255).astype(np.uint8)
    return np.dstack([img, img[::-1], img[:, ::-1]]) if colour else img


def encode(ext: str, img: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def face_folder(root: Path, n: int) -> Path:
    """`root`/imgs holding n small colour face-like PNGs: an image-folder source for `fer-edge run`."""
    folder = root / "imgs"
    folder.mkdir()
    for i in range(n):
        (folder / f"f{i}.png").write_bytes(encode(".png", _face(64, i, colour=True)))
    return folder


def said(capsys) -> str:
    """What the CLI printed on stderr, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


def png_constant(width: int, height: int, value: int = 128) -> bytes:
    """An 8-bit grey PNG of one value, streamed row by row (cheap at 10000 x 10000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A valid small JPEG whose SOF header is patched to claim `width` x `height`."""
    data = bytearray(encode(".jpg", _face(32, 7)))
    i = 2
    while i + 4 <= len(data):
        marker = data[i + 1]
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + seg_len
    raise AssertionError("no SOF marker in OpenCV's JPEG")


def cmyk_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_face(48, 3, colour=True)).convert("CMYK").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_bad_images(folder: Path, prefix: str = "") -> list[Case]:
    """Write every bad-input image case into `folder` (a class folder). Returns the cases."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jpg = encode(".jpg", _face(48, 1))
    png = encode(".png", _face(48, 2))
    p = prefix
    cases: list[tuple[Case, bytes]] = [
        (Case("empty file", f"{p}empty.jpg", True, "empty"), b""),
        (Case("truncated JPEG", f"{p}truncated.jpg", True, "truncated jpeg"), jpg[: len(jpg) // 2]),
        (Case("truncated PNG", f"{p}truncated.png", True, "truncated png"), png[: len(png) - 30]),
        (Case("text file named .jpg", f"{p}notes.jpg", True, "text"), b"name,label\nalice,happy\n"),
        (Case("1x1 image", f"{p}one_pixel.png", True, "too small"), encode(".png", np.full((1, 1), 9, np.uint8))),
        (Case("10000x10000 PNG", f"{p}huge.png", True, "too large"), png_constant(10000, 10000)),
        (Case("JPEG header claiming 10000x10000", f"{p}huge_header.jpg", True, "too large"),
         jpeg_claiming(10000, 10000)),
        (Case("16-bit PNG", f"{p}deep16.png", False), encode(".png", _face(48, 4).astype(np.uint16) * 257)),
        (Case("CMYK JPEG", f"{p}cmyk.jpg", False), cmyk_jpeg()),
        (Case("4-channel PNG", f"{p}rgba.png", False),
         encode(".png", np.dstack([_face(48, 5, colour=True), np.full((48, 48), 200, np.uint8)]))),
        (Case("non-UTF-8 file name", os.fsdecode(p.encode() + b"caf\xe9_\xff.png"), False), encode(".png", _face(48, 6))),
        (Case("empty file with a non-UTF-8 name", os.fsdecode(p.encode() + b"vide_\xe9.jpg"), True, "empty"), b""),
    ]
    for case, data in cases:
        with open(os.path.join(os.fsencode(folder), case.fsname), "wb") as fh:
            fh.write(data)
    return [c for c, _ in cases]


def write_symlink_loops(folder: Path, prefix: str = "") -> list[Case]:
    """A folder symlink back to its parent (a cycle for any walker that follows links) and a file
    symlink that points at itself (ELOOP on open)."""
    folder = Path(folder)
    os.symlink(".", folder / f"{prefix}loop_dir")
    self_link = folder / f"{prefix}self_loop.jpg"
    os.symlink(self_link.name, self_link)
    return [Case("symlink loop (file -> itself)", self_link.name, True, "cannot read")]


def bad_tree(root: Path, n_per_class: int = 12, size: int = 48, labels=("happy", "sad", "surprise")) -> tuple[Path, list[Case]]:
    """A class-per-folder tree of good synthetic faces, with the whole bad corpus beside them in
    the first class folder and the symlink loops in the second."""
    from fer_edge.data.synthetic import write_synthetic_tree

    root = write_synthetic_tree(root, n_per_class=n_per_class, size=size, labels=list(labels))
    cases = write_bad_images(root / labels[0])
    cases += write_symlink_loops(root / labels[1])
    return root, cases
