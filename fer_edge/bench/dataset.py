"""The images a benchmark scores: one split of a labelled set, decoded once per preprocessing spec.

Every variant is scored on the same images: an image that fails to load under one model's
preprocessing is left out for all of them, so accuracy differences are the models' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fer_edge.bench.settings import default
from fer_edge.data.types import LabelledSet, Sample, Skipped
from fer_edge.errors import DataError
from fer_edge.labels import canonical_label
from fer_edge.preprocess import PreprocessSpec

# Which split a benchmark scores when none is named: the held-out test split of the set.
DEFAULT_SPLITS = ("public_test", "test", "val")


def choose_split(ls: LabelledSet, split: str | None) -> tuple[str | None, list[Sample], str]:
    """-> (split name or None for the whole set, its samples, a sentence saying what was chosen)."""
    names = ls.split_names
    if split is not None:
        from fer_edge.data.readers import split_name

        wanted = split_name(split) or split
        chosen = ls.split(wanted)
        if not chosen:
            have = ", ".join(names) if names else "none (the set has no splits: leave --split out)"
            raise DataError(f"{ls.source} has no split '{split}'; its splits: {have}")
        return wanted, chosen, f"split '{wanted}' (as asked)"
    for name in DEFAULT_SPLITS:
        if name in names:
            return name, ls.split(name), f"split '{name}' (default: first of {', '.join(DEFAULT_SPLITS)} present)"
    if names:
        raise DataError(
            f"{ls.source} has splits {', '.join(names)} but none of {', '.join(DEFAULT_SPLITS)}; name one with "
            "--split (benchmarking on training images would flatter every model)")
    unsplit = [s for s in ls.samples if s.split is None]
    return None, unsplit, "the whole set (it has no splits)"


def limit_samples(samples: list[Sample], limit: int | None, seed: int = 0) -> list[Sample]:
    """A reproducible random subset (class mix kept on average), in the original order."""
    if not limit or limit >= len(samples):
        return list(samples)
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in keep]


def label_targets(y: np.ndarray, data_labels: list[str], model_labels: list[str], model: str) -> np.ndarray:
    """Data label indices -> the model's label indices. A class the model does not know is an error."""
    index = {canonical_label(lab): i for i, lab in enumerate(model_labels)}
    present = sorted(set(int(v) for v in np.unique(y)))
    missing = [data_labels[i] for i in present if canonical_label(data_labels[i]) not in index]
    if missing:
        counts = ", ".join(f"'{m}' ({int((y == data_labels.index(m)).sum())} images)" for m in missing)
        raise DataError(
            f"data class {counts} is not among the labels of {model} ({', '.join(model_labels)}): the model "
            "cannot be scored on it. Benchmark on data with the model's classes only (remove that class "
            "folder), or convert a model that includes it")
    lut = np.array([index.get(canonical_label(lab), -1) for lab in data_labels], np.int64)
    return lut[y]


@dataclass
class BenchData:
    source: str
    kind: str
    split: str | None
    split_note: str
    labels: list[str]                                   # the data set's labels; y indexes these
    samples: list[Sample]
    dataset: LabelledSet | None = None                  # the whole set (for the clean subset's audit)
    keys: list[str] = field(default_factory=list)       # the loaded images' keys, aligned with y
    y: np.ndarray | None = None
    skipped: list[Skipped] = field(default_factory=list)
    _arrays: dict[PreprocessSpec, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return 0 if self.y is None else len(self.y)

    def load(self, specs: list[PreprocessSpec], progress: Callable[[str], None] | None = None) -> None:
        """Decode every sample once per distinct spec; keep only images that loaded under all specs."""
        from fer_edge.data.load import load_arrays

        specs = list(dict.fromkeys(specs))
        raw: dict[PreprocessSpec, tuple[np.ndarray, np.ndarray, list[Skipped]]] = {}
        for spec in specs:
            if progress:
                progress(f"decoding {len(self.samples)} images at {spec.input_size}x{spec.input_size} {spec.color}")
            raw[spec] = load_arrays(self.samples, spec, self.labels)
        bad = {s.key: s for spec in specs for s in raw[spec][2]}
        self.skipped = self.skipped + list(bad.values())
        keys = [s.key for s in self.samples]
        for spec in specs:
            x, y, sk = raw[spec]
            own_bad = {s.key for s in sk}
            kept_keys = [k for k in keys if k not in own_bad]
            mask = np.array([k not in bad for k in kept_keys], bool)
            self._arrays[spec] = x[mask] if len(mask) else x
            self.y = y[mask] if len(mask) else y
            self.keys = [k for k, m in zip(kept_keys, mask) if m]
        if self.y is None or self.n == 0:
            raise DataError(f"no image of {self.source} ({self.split_note}) could be loaded: "
                            + "; ".join(f"{s.key}: {s.reason}" for s in self.skipped[:3]))

    def arrays(self, spec: PreprocessSpec) -> np.ndarray:
        return self._arrays[spec]


def bench_data(data, split: str | None, limit: int | None, kind: str = default("data_kind")) -> BenchData:
    """`data`: a path (folder / fer2013.csv), None (the synthetic demo set) or an opened LabelledSet."""
    if isinstance(data, LabelledSet):
        ls = data
    else:
        from fer_edge.data.readers import open_dataset

        ls = open_dataset(data, kind=kind)
    name, samples, note = choose_split(ls, split)
    samples = limit_samples(samples, limit)
    if limit and limit < len(ls.split(name) if name else ls.samples):
        note += f", a random {limit} of its images (--limit)"
    return BenchData(source=ls.source, kind=ls.kind, split=name, split_note=note, labels=list(ls.labels),
                     samples=samples, skipped=list(ls.skipped), dataset=ls)


def clean_mask(bd: BenchData, progress: Callable[[str], None] | None = None) -> tuple[np.ndarray | None, str]:
    """Which loaded images a clean figure keeps (no copy in train, no conflicting labels), and a note.

    None when there is nothing to compare with (no train split, or the scored split is train itself).
    """
    ls = bd.dataset
    if ls is None or bd.split in (None, "train") or not ls.split("train"):
        return None, ""
    from fer_edge.data.audit import leaked_keys, run_audit

    if progress:
        progress(f"auditing {len(ls.samples)} images for copies of {bd.split} in train (the clean subset)")
    leaked = leaked_keys(run_audit(ls), bd.split)
    mask = np.array([k not in leaked for k in bd.keys], bool)
    note = (f"clean = {bd.split} without its {int((~mask).sum())} image(s) that have an exact or near copy in "
            f"train or carry a conflicting label ({int(mask.sum())} of {len(mask)} left)")
    return mask, note
