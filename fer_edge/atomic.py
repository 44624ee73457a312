"""Atomic file writes: a reader (or a rerun after a kill) sees the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from fer_edge.errors import OutputError


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only set, and is process-wide)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def ensure_dir(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """`folder` exists as a writable directory, or an OutputError says why not (a file in the way, a
    read-only place) before anything is written into it."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputError(f"{what} {folder}: {parent} is a file, not a folder; choose another path "
                                  "(or move the file)")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {folder} cannot be created: {exc.strerror or exc}; give a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder} is not writable by this user; give a writable folder")
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None, secret: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and suffix is None and path.suffix:
        raise OutputError(f"cannot write {path}: a folder of that name is in the way; move it or choose another path")
    try:
        ensure_dir(path.parent)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=(suffix if suffix is not None else path.suffix) + ".partial",
            dir=path.parent,
        )
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc} ({path.parent}); give a writable "
                          "folder") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            # mkstemp makes 0600; models and reports must be readable by the service user (0644 under the
            # usual umask 022), secrets stay private.
            os.chmod(tmp_path, 0o600 if secret else (0o666 & ~current_umask()))
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp_path.is_dir():
                import shutil

                shutil.rmtree(tmp_path, ignore_errors=True)
            else:
                tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, secret: bool = False) -> Path:
    with atomic_path(path, secret=secret) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
