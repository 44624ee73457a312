"""JSON lines: one FrameResult.to_dict() per line, on stdout or in a file rotated by size.

Rotation renames PATH -> PATH.1 -> PATH.2 ... and deletes beyond ``keep``, like logrotate; each
line is flushed as it is written, so a reader tailing the file (or a crash) never sees half a
result except possibly the very last line of a file the OS did not get to write.

The file survives the world: before each line the sink checks that PATH is still the file it has
open (logrotate's `create` moves it away, a user may delete it) and reopens PATH if not; a file
truncated under it (`copytruncate`) is appended to from its new end; `reopen()` (the daemon calls
it on SIGHUP) reopens on the next line. On stdout, a reader that went away (`| head`) ends the
output quietly: ReaderGone tells the sink set, which asks the daemon to stop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

from fer_edge.errors import ConfigError
from fer_edge.runtime.metrics import Metrics
from fer_edge.runtime.sinks.base import SINKS
from fer_edge.runtime.sinks.config import JsonlSinkConfig
from fer_edge.runtime.sinks.encode import result_json


class ReaderGone(Exception):
    """The reader of the output pipe went away (EPIPE): not an error, the end of the output."""


@SINKS.register("jsonl")
class JsonlSink:
    Config = JsonlSinkConfig  # its settings (fer_edge.runtime.sinks.config); built as JsonlSink(config, metrics)
    wants_frames = False

    def __init__(self, config: JsonlSinkConfig, metrics: Metrics | None = None):
        self.config = config
        self.name = config.name or "jsonl"
        self.metrics = metrics
        self.rotations = 0
        self.reopens = 0
        self._reopen_requested = False
        if config.path == "-":
            self.path: Path | None = None
            self._fh: TextIO | None = sys.stdout
            self._size = 0
        else:
            self.path = Path(config.path).expanduser()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self._open()
            except OSError as e:
                raise ConfigError(f"jsonl sink cannot write {self.path}: {e.strerror}. "
                                  "Give a writable file path (or jsonl:- for stdout).") from None
        self._limit = int(config.rotate_mb * 1024 * 1024) if (config.rotate_mb and self.path) else 0

    def _open(self) -> TextIO:
        assert self.path is not None
        fh = open(self.path, "a", encoding="utf-8", newline="\n")
        self._size = fh.tell()
        return fh

    def reopen(self) -> None:
        """Reopen PATH before the next line (SIGHUP; safe from a signal handler: it only sets a flag)."""
        self._reopen_requested = True

    def _follow_path(self) -> None:
        """Reopen if PATH was moved, removed or replaced, or a reopen was asked for; follow a truncation."""
        assert self.path is not None and self._fh is not None
        try:
            st = os.stat(self.path)
            fst = os.fstat(self._fh.fileno())
            moved = (st.st_ino, st.st_dev) != (fst.st_ino, fst.st_dev)
        except FileNotFoundError:
            moved = True
        if moved or self._reopen_requested:
            self._reopen_requested = False
            try:
                self._fh.close()
            except OSError:
                pass
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self._open()
            self.reopens += 1
        elif fst.st_size < self._size:
            self._size = fst.st_size  # copytruncate: append mode already writes at the new end

    def publish(self, result: Any) -> None:
        line = result_json(result) + "\n"
        if self._fh is None:
            raise RuntimeError(f"jsonl sink '{self.name}' is closed")
        n = len(line.encode("utf-8"))
        if self.path is not None:
            self._follow_path()
        if self._limit and self._size > 0 and self._size + n > self._limit:
            self._rotate()
        try:
            self._fh.write(line)
            self._fh.flush()
        except BrokenPipeError:
            if self.path is None:
                from fer_edge.signals import silence_stdout

                silence_stdout()
                self._fh = None
                raise ReaderGone("stdout closed by its reader") from None
            raise
        self._size += n

    def _rotate(self) -> None:
        assert self.path is not None and self._fh is not None
        self._fh.close()
        keep = self.config.keep
        base = str(self.path)
        oldest = Path(f"{base}.{keep}")
        if oldest.exists():
            oldest.unlink()
        for i in range(keep - 1, 0, -1):
            src = Path(f"{base}.{i}")
            if src.exists():
                os.replace(src, f"{base}.{i + 1}")
        os.replace(self.path, f"{base}.1")
        self._fh = self._open()
        self.rotations += 1

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.flush()
        except BrokenPipeError:
            return
        if fh is not sys.stdout:
            fh.close()

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else "-", "bytes": self._size, "rotations": self.rotations,
                "reopens": self.reopens}
