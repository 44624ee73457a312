"""Data-set readers: a folder tree, fer2013.csv, CK+, JAFFE, or the built-in synthetic set.

`open_dataset(path)` finds the kind by itself; readers are looked up by name in `READERS`.
Readers only list files (fast, no decoding): unreadable images are found and skipped, with the
reason, when the pixels are loaded (`fer_edge.data.load`) or audited.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fer_edge.images import IMAGE_EXTENSIONS, is_image_name
from fer_edge.data.types import SPLIT_NAMES, LabelledSet, Sample, Skipped
from fer_edge.errors import DataError
from fer_edge.labels import FER2013_CODES, canonical_label, ordered_labels
from fer_edge.registry import Registry

# Folder names users give their splits -> the normalised names of types.SPLIT_NAMES.
SPLIT_ALIASES = {
    "train": "train", "training": "train", "trainset": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "testset": "test",
    "publictest": "public_test", "public_test": "public_test",
    "privatetest": "private_test", "private_test": "private_test",
}
assert set(SPLIT_ALIASES.values()) <= set(SPLIT_NAMES)

FOLDER_EXAMPLE = (
    "expected a class-per-folder tree, for example\n"
    "  DATA/happy/img_0001.jpg\n"
    "  DATA/sad/img_0002.png\n"
    "  DATA/surprise/img_0003.jpg\n"
    "optionally under split folders (DATA/train/happy/..., DATA/test/happy/...), "
    "or a fer2013.csv file"
)

CKPLUS_NAME = re.compile(r"^(S\d{3})_(\d{3})_(\d{8})\.[A-Za-z]+$")
JAFFE_NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})(\d+)\.(\d+)\.[A-Za-z]+$")
JAFFE_CODES = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral",
               "SA": "sad", "SU": "surprise"}
# How many file names must follow a data set's naming scheme before auto-detection believes it.
NAME_SCHEME_MAJORITY = 0.5


def split_name(name: str) -> str | None:
    """A folder or Usage name ('Training', 'PublicTest', 'validation') -> normalised split, or None."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return SPLIT_ALIASES.get(key) or SPLIT_ALIASES.get(key.replace("_", ""))


# ---------------------------------------------------------------------------------------------
# Folder scanning (shared by the folder, CK+ and JAFFE readers)


@dataclass
class _Found:
    path: Path
    folder: str | None             # the class folder's own name, None in a flat folder
    split: str | None


@dataclass
class _Scan:
    root: Path
    images: list[_Found] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    other_files: int = 0           # non-image files seen (for the "no images" diagnosis)
    split_layout: bool = False


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in ("__MACOSX", "@eaDir", "Thumbs.db")


def _iter_images(top: Path, scan: _Scan) -> list[Path]:
    """Image files under `top`, sorted; follows symlinked folders once each, so a loop cannot hang."""
    from fer_edge.images import walk_folders

    out: list[Path] = []
    for dirpath, filenames in walk_folders(top, _visible):
        for f in filenames:
            if is_image_name(f):
                out.append(Path(dirpath) / f)
            else:
                scan.other_files += 1
    return out


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if _visible(p.name) and p.is_dir())


def _top_files(path: Path, scan: _Scan) -> list[Path]:
    images = []
    for p in sorted(path.iterdir()):
        if not _visible(p.name) or not p.is_file():
            continue
        if is_image_name(p.name):
            images.append(p)
        else:
            scan.other_files += 1
    return images


def _scan_classes(folder: Path, split: str | None, scan: _Scan) -> None:
    for stray in _top_files(folder, scan):
        scan.skipped.append(Skipped(str(stray), "not inside a class folder (its class is unknown)"))
    for class_dir in _subdirs(folder):
        for p in _iter_images(class_dir, scan):
            scan.images.append(_Found(p, class_dir.name, split))


def _scan_tree(root: Path) -> _Scan:
    scan = _Scan(root)
    dirs = _subdirs(root)
    splits = {d: split_name(d.name) for d in dirs}
    named = [d for d in dirs if splits[d]]
    if named and len(named) == len(dirs):
        scan.split_layout = True
        for stray in _top_files(root, scan):
            scan.skipped.append(Skipped(str(stray), "not inside a split/class folder (its class is unknown)"))
        for d in dirs:
            _scan_classes(d, splits[d], scan)
    elif named:
        others = [d.name for d in dirs if not splits[d]]
        raise DataError(
            f"{root} mixes split folders ({', '.join(d.name for d in named)}) with other folders "
            f"({', '.join(others)}); either every top-level folder is a split (train/, val/, test/, "
            f"public_test/, private_test/) holding class folders, or every one is a class.\n{FOLDER_EXAMPLE}"
        )
    elif dirs:
        _scan_classes(root, None, scan)
    else:
        scan.images = [_Found(p, None, None) for p in _top_files(root, scan)]
    return scan


def _folder_samples(scan: _Scan, subject_of: Callable[[str], str | None] | None = None) -> list[Sample]:
    samples = []
    for f in scan.images:
        if f.folder is None:
            scan.skipped.append(Skipped(str(f.path), "not inside a class folder (its class is unknown)"))
            continue
        subject = subject_of(f.path.name) if subject_of else None
        samples.append(Sample(key=str(f.path), label=canonical_label(f.folder), split=f.split,
                              subject=subject, path=f.path))
    return samples


def _ckplus_subject(name: str) -> str | None:
    m = CKPLUS_NAME.match(name)
    return m.group(1) if m else None


def _jaffe_parts(name: str) -> tuple[str, str] | None:
    m = JAFFE_NAME.match(name)
    if not m or m.group(2) not in JAFFE_CODES:
        return None
    return m.group(1), JAFFE_CODES[m.group(2)]


# ---------------------------------------------------------------------------------------------
# Readers, by kind

Reader = Callable[[Path, "_Scan | None"], tuple[list[Sample], list[Skipped]]]
READERS: Registry[Reader] = Registry("data set kind")


def _need_dir(path: Path, kind: str) -> None:
    if not path.is_dir():
        raise DataError(f"the {kind} reader needs a folder, but {path} is a file.\n{FOLDER_EXAMPLE}")


@READERS.register("folder", "imagefolder", "dir")
def read_folder(path: Path, scan: _Scan | None = None) -> tuple[list[Sample], list[Skipped]]:
    _need_dir(path, "folder")
    scan = scan or _scan_tree(path)
    samples = _folder_samples(scan)
    return samples, scan.skipped


@READERS.register("ckplus", "ck+", "ck")
def read_ckplus(path: Path, scan: _Scan | None = None) -> tuple[list[Sample], list[Skipped]]:
    """CK+ as `<class>/S###_SSS_FFFFFFFF.png`: the subject id comes from the file name."""
    _need_dir(path, "ckplus")
    scan = scan or _scan_tree(path)
    return _folder_samples(scan, _ckplus_subject), scan.skipped


@READERS.register("jaffe")
def read_jaffe(path: Path, scan: _Scan | None = None) -> tuple[list[Sample], list[Skipped]]:
    """JAFFE names `KA.AN1.39.tiff` (poser, expression+index, image no.), flat or in class folders.

    In a flat folder the label comes from the name; under class folders the folder wins, as it
    does for every other folder reader."""
    _need_dir(path, "jaffe")
    scan = scan or _scan_tree(path)
    samples: list[Sample] = []
    for f in scan.images:
        parts = _jaffe_parts(f.path.name)
        if f.folder is not None:
            label = canonical_label(f.folder)
        elif parts:
            label = parts[1]
        else:
            scan.skipped.append(Skipped(str(f.path), "name is not JAFFE-style (e.g. KA.AN1.39.tiff) "
                                                     "and the file is not in a class folder"))
            continue
        samples.append(Sample(key=str(f.path), label=label, split=f.split,
                              subject=parts[0] if parts else None, path=f.path))
    return samples, scan.skipped


FER2013_COLUMNS = ("emotion", "pixels", "usage")
FER2013_SIDE = 48


def _parse_pixels(text: str) -> np.ndarray | None:
    """Space-separated ints -> array, or None at the first token that is not an integer.
    (np.fromstring parses in C, 10x faster than split(); it only warns and stops at a bad token,
    so the warning is turned into the failure.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(text, dtype=np.int32, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


def _csv_rows(reader):
    """csv rows; a row the csv module refuses (a field over the size limit, a NUL byte) becomes a
    one-field row carrying the marker, so it is skipped and named instead of ending the read."""
    from fer_edge import limits

    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield [limits.OVERLONG_LINE]


@READERS.register("fer2013_csv", "fer2013", "csv")
def read_fer2013_csv(path: Path, scan: _Scan | None = None) -> tuple[list[Sample], list[Skipped]]:
    """The original fer2013.csv: emotion (0..6), pixels (2304 space-separated ints), Usage.

    Rows are keyed `fer2013.csv:row N` (N counts data rows from 1, header excluded)."""
    if not path.is_file():
        raise DataError(f"the fer2013_csv reader needs a CSV file, but {path} is a folder")
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    n_pix = FER2013_SIDE * FER2013_SIDE
    from fer_edge import limits
    from fer_edge.errors import LimitError

    try:
        limits.check_regular(path, "CSV file")
    except LimitError as exc:
        raise DataError(str(exc)) from None
    # A row longer than MAX_CSV_FIELD (a 48x48 row is ~7 kB) is skipped without being held in memory.
    csv.field_size_limit(limits.MAX_CSV_FIELD)
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(limits.bounded_lines(fh))
        header = next(reader, None)
        cols = [c.strip().lower() for c in header] if header else []
        missing = [c for c in ("emotion", "pixels") if c not in cols]
        if missing:
            raise DataError(
                f"{path}: not a fer2013.csv - missing column(s) {', '.join(missing)}; found columns "
                f"{cols or 'none (empty file)'}, expected {', '.join(FER2013_COLUMNS)} "
                f"(Usage optional: Training/PublicTest/PrivateTest)"
            )
        i_emo, i_pix = cols.index("emotion"), cols.index("pixels")
        i_use = cols.index("usage") if "usage" in cols else None
        for rowno, row in enumerate(_csv_rows(reader), 1):
            key = f"{path.name}:row {rowno}"
            if not row or all(not c.strip() for c in row):
                continue
            if row[0] == limits.OVERLONG_LINE:
                skipped.append(Skipped(key, f"row longer than {limits.MAX_CSV_FIELD // limits.MiB} MB"))
                continue
            if len(row) < len(cols):
                skipped.append(Skipped(key, f"{len(row)} fields, expected {len(cols)}"))
                continue
            try:
                code = int(row[i_emo])
            except ValueError:
                skipped.append(Skipped(key, f"emotion {row[i_emo]!r} is not an integer"))
                continue
            if not 0 <= code < len(FER2013_CODES):
                skipped.append(Skipped(key, f"emotion code {code} outside 0..{len(FER2013_CODES) - 1}"))
                continue
            pix = _parse_pixels(row[i_pix])
            if pix is None or pix.size != n_pix:
                tokens = row[i_pix].split()
                bad = next((t for t in tokens if not t.lstrip("-").isdigit()), None)
                reason = (f"pixel value {bad!r} is not an integer" if bad is not None
                          else f"{len(tokens)} pixel values, expected {n_pix} (48x48)")
                skipped.append(Skipped(key, reason))
                continue
            if pix.min() < 0 or pix.max() > 255:
                skipped.append(Skipped(key, f"pixel values outside 0..255 ({pix.min()}..{pix.max()})"))
                continue
            split = None
            if i_use is not None:
                split = split_name(row[i_use])
                if split is None:
                    skipped.append(Skipped(key, f"Usage {row[i_use]!r} is not Training/PublicTest/PrivateTest"))
                    continue
            samples.append(Sample(key=key, label=FER2013_CODES[code], split=split, path=None,
                                  pixels=pix.astype(np.uint8).reshape(FER2013_SIDE, FER2013_SIDE)))
    return samples, skipped


@READERS.register("synthetic", "demo")
def read_synthetic(path: Path | None = None, scan: _Scan | None = None) -> tuple[list[Sample], list[Skipped]]:
    from fer_edge.data.synthetic import synthetic_set

    ds = synthetic_set()
    return ds.samples, ds.skipped


# ---------------------------------------------------------------------------------------------
# Detection and the one entry point


def _guess_folder_kind(scan: _Scan) -> str:
    names = [f.path.name for f in scan.images]
    if not names:
        return "folder"
    if sum(bool(CKPLUS_NAME.match(n)) for n in names) > NAME_SCHEME_MAJORITY * len(names):
        return "ckplus"
    if sum(_jaffe_parts(n) is not None for n in names) > NAME_SCHEME_MAJORITY * len(names):
        return "jaffe"
    return "folder"


def _no_images_error(path: Path, scan: _Scan) -> DataError:
    found = f"{scan.other_files} other file(s)" if scan.other_files else "no files"
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    return DataError(f"no images in {path}: found {found} but none with an image extension ({exts}).\n"
                     f"{FOLDER_EXAMPLE}")


def _resolve_labels(path: Path, samples: list[Sample], forced: list[str] | None) -> list[str]:
    present = Counter(s.label for s in samples)
    if forced is not None:
        order = [canonical_label(x) for x in forced]
        dupes = sorted({x for x in order if order.count(x) > 1})
        if dupes:
            raise DataError(f"labels {forced} name the same class twice after alias mapping: {dupes}")
        extra = sorted(set(present) - set(order))
        if extra:
            raise DataError(
                f"{path} has class(es) {', '.join(extra)} ({', '.join(str(present[e]) for e in extra)} "
                f"images) that are not in the given labels {order}; add them or remove those folders"
            )
        return order
    if len(present) < 2:
        only = ", ".join(f"'{k}' ({v} images)" for k, v in present.items())
        raise DataError(
            f"{path} holds a single class {only}: a classifier needs at least two. Point at the folder "
            f"that holds the class folders, not at one class.\n{FOLDER_EXAMPLE}"
        )
    return ordered_labels(set(present))


def open_dataset(path: str | Path | None, kind: str = "auto", labels: list[str] | None = None) -> LabelledSet:
    """Read a data set's index (file list, labels, splits, subjects) without decoding pixels.

    path None -> the built-in synthetic demo set. kind "auto" detects fer2013.csv, CK+ and JAFFE
    names, and otherwise reads a class-per-folder tree (optionally under split folders).
    `labels` forces the label set and order (e.g. a model's labels); a class in the data that is
    not among them is an error. Without `labels` a set needs two classes or more; with them one
    class present is accepted (scoring a model on, say, a folder of happy faces).
    """
    if path is None or kind.lower() in ("synthetic", "demo"):
        from fer_edge.data.synthetic import DEMO_PER_CLASS, synthetic_set

        return synthetic_set(n_per_class=DEMO_PER_CLASS, labels=labels)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data path {p} does not exist; give a class-per-folder tree or a fer2013.csv")
    scan = None
    if kind.lower() == "auto":
        if p.is_file():
            if p.suffix.lower() == ".csv":
                kind = "fer2013_csv"
            elif is_image_name(p.name):
                raise DataError(f"{p} is a single image; give the folder that holds the class folders.\n"
                                f"{FOLDER_EXAMPLE}")
            else:
                raise DataError(f"{p} is neither a folder nor a .csv file.\n{FOLDER_EXAMPLE}")
        else:
            scan = _scan_tree(p)
            kind = _guess_folder_kind(scan)
    reader = READERS.get(kind)
    kind_name = next(n for n in ("folder", "ckplus", "jaffe", "fer2013_csv", "synthetic")
                     if READERS.get(n) is reader)
    if scan is None and p.is_dir() and kind_name != "fer2013_csv":
        scan = _scan_tree(p)
    samples, skipped = reader(p, scan)
    if not samples:
        if scan is not None and not scan.images:
            raise _no_images_error(p, scan)
        reasons = Counter(s.reason for s in skipped).most_common(3)
        raise DataError(f"no usable samples in {p} ({len(skipped)} skipped: "
                        f"{'; '.join(f'{n}x {r}' for r, n in reasons)}).\n{FOLDER_EXAMPLE}")
    label_list = _resolve_labels(p, samples, labels)
    return LabelledSet(samples=samples, labels=label_list, source=str(path), kind=kind_name, skipped=list(skipped))
