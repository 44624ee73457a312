"""The data-set records every reader produces and every consumer (convert, bench, audit) takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Split names are normalised to these where the data set has its own splits
# (fer2013 folder: train/public_test; fer2013.csv: Training/PublicTest/PrivateTest).
# A data set without splits has split=None on every sample; `make_splits` carves them.
SPLIT_NAMES = ("train", "val", "test", "public_test", "private_test")


@dataclass(frozen=True)
class Sample:
    key: str                       # what a user can find it by: a file path, or "fer2013.csv:row 17"
    label: str                     # canonical label (fer_edge.labels.canonical_label)
    split: str | None = None       # one of SPLIT_NAMES, or None when the set has no own splits
    subject: str | None = None     # subject id when known (CK+, JAFFE): splits never cut a subject
    path: Path | None = None       # image file, or None when pixels are inline
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)  # inline uint8 image (CSV)


@dataclass
class Skipped:
    key: str
    reason: str


@dataclass
class LabelledSet:
    samples: list[Sample]
    labels: list[str]              # ordered label set (fer_edge.labels.ordered_labels unless forced)
    source: str                    # the path the user gave
    kind: str                      # "folder", "fer2013_csv", "ckplus", "jaffe", "synthetic"
    skipped: list[Skipped] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    @property
    def split_names(self) -> list[str]:
        return sorted({s.split for s in self.samples if s.split is not None})
