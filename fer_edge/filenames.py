"""File names as OpenCV, JSON and logs can take them.

In the core because the runtime's sources and the face detectors (which load their model files through
OpenCV) both need them.
"""

from __future__ import annotations

import os

from fer_edge.errors import DataError


def printable_name(name: str) -> str:
    """A file name as JSON and logs can carry it: bytes that are not UTF-8 shown as \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def opencv_path(path: str | os.PathLike[str], what: str) -> str:
    """`path` as OpenCV may be given it. OpenCV 4.12 dies with SIGSEGV (measured) when a path holds a name
    that is not valid UTF-8 (Python carries those bytes as surrogates), so refuse it with the fix instead."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{what} {printable_name(text)}: the name is not valid UTF-8 and OpenCV cannot open it; "
                        "rename the file (e.g. convmv -f latin1 -t utf8 --notest FILE)") from None
    return text
