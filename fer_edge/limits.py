"""Limits on every external file fer-edge reads, defined once, checked before decoding.

Each limit is far above what a real file needs and far below what would take a board's memory:
peak memory must stay within a few hundred MB whatever a user (or an attacker) hands us. The
loaders here (`read_limited`, `load_yaml`, `load_json`) are the only way configs, recipes, suites
and model metadata are parsed, so the limits hold everywhere without each caller re-checking.

Every refusal is a `LimitError` naming the file, the limit, the value found and the fix.
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, TextIO

if TYPE_CHECKING:  # imported where used: only the YAML readers need it
    import yaml

from fer_edge.errors import LimitError

MiB = 1024 * 1024

# Text inputs: a daemon config, a recipe, a bench suite are a few kB.
MAX_CONFIG_BYTES = 1 * MiB
YAML_MAX_DEPTH = 32            # nesting of mappings/sequences
YAML_MAX_ALIASES = 100         # alias references (*name); a "billion laughs" needs thousands
YAML_MAX_NODES = 100_000       # nodes after alias expansion
JSON_MAX_DEPTH = 32
# Model metadata: a JSON record of a few kB inside a zip appended to the .tflite.
MAX_METADATA_BYTES = 1 * MiB   # decompressed
MAX_MODEL_BYTES = 512 * MiB    # the largest .tflite we load (NASNet fp32 is ~20 MB)
# Images: the header's width x height is checked before any decode.
MAX_IMAGE_BYTES = 64 * MiB     # encoded file
MAX_IMAGE_PIXELS = 25_000_000  # 25 Mpx: a 24 Mpx camera photo passes; decoded RGB is 75 MB
MAX_DECODED_BYTES = 160 * MiB  # width x height x channels x bytes per sample (16-bit RGBA counts 8 per px)
# CSV (fer2013.csv is 300 MB; one row is ~7 kB of pixels).
MAX_CSV_FIELD = 1 * MiB

# OpenCV's own decoder ceiling, for any format whose header we do not parse (TIFF, WebP, ...).
# It is read once, on the first decode, so it is set when this module is imported (before cv2 runs).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))


def _mb(n: int) -> str:
    return f"{n / MiB:.1f} MB" if n >= MiB else f"{n} bytes"


def check_regular(path: str | os.PathLike[str], what: str = "file") -> os.stat_result:
    """Stat `path` (following links) and refuse anything that is not a regular file: a FIFO would block
    a read forever, a device could stream without end. Returns the stat result."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise LimitError(f"{what} {os.fsdecode(path)}: a broken symbolic link (its target does not exist)",
                             reason="broken symbolic link") from None
        raise LimitError(f"{what} {os.fsdecode(path)} not found", reason="not found") from None
    except OSError as exc:
        raise LimitError(f"{what} {os.fsdecode(path)}: cannot read it ({exc.strerror or exc})",
                         reason=f"cannot read file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = special_kind(st.st_mode)
        raise LimitError(f"{what} {os.fsdecode(path)} is {kind}, not a regular file; give a regular file",
                         reason=f"not a regular file ({kind})")
    return st


def special_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_limited(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes`; never blocks on a FIFO, never reads more.

    The file is opened non-blocking and checked again on the open descriptor, so a FIFO swapped in
    after the stat cannot hang us either."""
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise LimitError(f"{what} {os.fsdecode(path)}: cannot read it ({exc.strerror or exc})",
                         reason=f"cannot read file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise LimitError(f"{what} {os.fsdecode(path)} is {special_kind(st.st_mode)}, not a regular file",
                             reason=f"not a regular file ({special_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise too_big(path, what, st.st_size, max_bytes)
        # read(n) allocates n bytes up front: ask for what the file holds (+1 to see it grow), not the limit
        data = fh.read(st.st_size + 1)
        if len(data) > st.st_size:
            data += fh.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:  # grew while we read
        raise too_big(path, what, len(data), max_bytes)
    return data


def too_big(path: str | os.PathLike[str], what: str, size: int, limit: int) -> LimitError:
    return LimitError(f"{what} {os.fsdecode(path)} is too large ({_mb(size)} > the {_mb(limit)} limit); "
                      f"a real {what} is far smaller - is this the right file?", reason=f"too large ({_mb(size)})")


# --- YAML -----------------------------------------------------------------------------------------

def _yaml_loader(source: str) -> type[yaml.SafeLoader]:
    """A SafeLoader that counts alias references and nesting while it composes, so an alias bomb or a
    deeply nested document is refused before it is expanded into Python objects."""
    import yaml

    class LimitedLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._aliases = 0
            self._depth = 0
            self._nodes = 0

        def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
            if self.check_event(yaml.AliasEvent):
                self._aliases += 1
                if self._aliases > YAML_MAX_ALIASES:
                    mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
                    raise LimitError(f"{source}:{mark.line + 1}: more than {YAML_MAX_ALIASES} YAML aliases (*name); "
                                     "write the values out instead of referencing anchors",
                                     reason="too many YAML aliases")
            self._depth += 1
            if self._depth > YAML_MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
                raise LimitError(f"{source}:{mark.line + 1}: YAML nested deeper than {YAML_MAX_DEPTH} levels; "
                                 "a fer-edge file is a few levels deep - is this the right file?",
                                 reason="YAML nested too deep")
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return LimitedLoader


def _count_nodes(node: yaml.Node, source: str) -> None:
    """Nodes reachable with aliases expanded (a shared node counts each time it is referenced)."""
    import yaml

    total, stack = 0, [node]
    while stack:
        n = stack.pop()
        total += 1
        if total > YAML_MAX_NODES:
            raise LimitError(f"{source}: YAML expands to more than {YAML_MAX_NODES} values (anchors referenced "
                             "inside anchors?); write the values out", reason="YAML expands too far")
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.extend((k, v))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


def compose_yaml(text: str, source: str = "YAML") -> yaml.Node | None:
    """The composed node tree of a YAML document, within the limits (None for an empty document)."""
    loader = _yaml_loader(source)(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is not None:
        _count_nodes(node, source)
    return node


def load_yaml(text: str, source: str = "YAML") -> Any:
    """YAML text -> Python objects (safe types only), refusing alias bombs and deep nesting.
    yaml.YAMLError (syntax) propagates for the caller to place; limits raise LimitError."""
    import yaml

    node = compose_yaml(text, source)
    if node is None:
        return None
    constructor = yaml.SafeLoader("")
    try:
        return constructor.construct_document(node)
    finally:
        constructor.dispose()


def read_yaml_file(path: str | os.PathLike[str], what: str = "config file") -> tuple[str, Any]:
    """(text, data) of a UTF-8 YAML file within the byte, alias and depth limits."""
    raw = read_limited(path, MAX_CONFIG_BYTES, what)
    text = raw.decode("utf-8")  # UnicodeDecodeError: the caller names the line
    return text, load_yaml(text, str(path))


# --- JSON -----------------------------------------------------------------------------------------

def json_depth_ok(text: str | bytes, limit: int = JSON_MAX_DEPTH) -> bool:
    """Nesting of brackets outside strings is at most `limit` (a linear scan; json.loads would recurse
    once per level and die with RecursionError on deep input)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    depth, in_str, esc = 0, False, False
    for b in data:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif b in (0x5D, 0x7D):
            depth -= 1
    return True


def load_json(text: str | bytes, source: str = "JSON", max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """JSON within the byte and depth limits; ValueError (bad syntax) propagates for the caller."""
    if len(text) > max_bytes:
        raise LimitError(f"{source}: JSON of {_mb(len(text))} is over the {_mb(max_bytes)} limit",
                         reason="JSON too large")
    if not json_depth_ok(text):
        raise LimitError(f"{source}: JSON nested deeper than {JSON_MAX_DEPTH} levels", reason="JSON nested too deep")
    return json.loads(text)


def read_zip_member(fh: io.BufferedIOBase | Any, member: str, max_bytes: int, source: str) -> bytes | None:
    """One member of a zip archive (at the end of `fh`), decompressed to at most `max_bytes`; None if the
    archive has no such member. A member that claims, or turns out, to be larger is refused: the
    declared size can lie, so the read itself is bounded too."""
    import zipfile

    with zipfile.ZipFile(fh) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            return None
        if info.file_size > max_bytes:
            raise LimitError(f"{source}: its {member} claims {_mb(info.file_size)} decompressed (limit "
                             f"{_mb(max_bytes)}); the file is damaged or hostile - re-export the model",
                             reason="metadata too large")
        with zf.open(info) as m:
            data = m.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LimitError(f"{source}: its {member} decompresses past {_mb(max_bytes)}; re-export the model",
                         reason="metadata too large")
    return data


def file_size(path: str | os.PathLike[str]) -> int:
    return Path(path).stat().st_size


OVERLONG_LINE = "\x00fer-edge: overlong line\x00"


def bounded_lines(fh: TextIO, max_line: int = MAX_CSV_FIELD) -> Iterator[str]:
    """Lines of a text file, none held longer than `max_line` characters: an overlong line is read
    past in chunks and yielded as OVERLONG_LINE (plus a newline), so the caller can name it as a
    skip and the memory taken stays one chunk, whatever the file holds."""
    while True:
        line = fh.readline(max_line + 1)
        if not line:
            return
        if len(line) > max_line and not line.endswith("\n"):
            while True:
                rest = fh.readline(max_line)
                if not rest or rest.endswith("\n"):
                    break
            yield OVERLONG_LINE + "\n"
            continue
        yield line
