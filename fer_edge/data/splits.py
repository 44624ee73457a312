"""Train/val/test splits and subject-independent k-fold.

A data set's own splits are used as they are. Missing ones are carved from train, stratified by
class, and BY SUBJECT whenever subject ids are known: CK+ has three near-identical peak frames per
sequence and several sequences per subject, so a frame-level split would leak a face into val.

Carving is a greedy group assignment: groups (subjects, or single samples when there are no
subjects) go, largest first with ties broken by the seed, to whichever side brings the per-class
counts closest to their targets. With single-sample groups this is an exact stratified split.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Sequence

import numpy as np

from fer_edge.data.types import LabelledSet, Sample
from fer_edge.errors import DataError

# The split a data set's figures are reported on, in order of preference: FER2013 reports on
# its PublicTest when it has no "test" of its own.
REPORT_SPLIT_ORDER = ("test", "public_test", "private_test", "val")


def report_split(splits: dict[str, list[Sample]]) -> str:
    """The name of the split to report test figures on (test, else public_test, ...)."""
    for name in REPORT_SPLIT_ORDER:
        if splits.get(name):
            return name
    raise DataError(f"no split to report on among {sorted(k for k, v in splits.items() if v)}")


def _groups(samples: Sequence[Sample]) -> dict[str, list[int]]:
    """Group key -> sample indices. Samples without a subject are groups of their own."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[f"subject:{s.subject}" if s.subject is not None else f"sample:{i}"].append(i)
    return groups


def _group_order(groups: dict[str, list[int]], rng: np.random.Generator) -> list[str]:
    keys = sorted(groups)
    tiebreak = rng.permutation(len(keys))
    return [k for _, _, k in sorted(zip((-len(groups[k]) for k in keys), tiebreak, keys))]


def _class_matrix(samples: Sequence[Sample], groups: dict[str, list[int]], order: list[str],
                  classes: list[str]) -> np.ndarray:
    col = {c: j for j, c in enumerate(classes)}
    m = np.zeros((len(order), len(classes)), np.float64)
    for gi, key in enumerate(order):
        for i in groups[key]:
            m[gi, col[samples[i].label]] += 1
    return m


def _assign(counts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Greedy: each group (row of counts) goes to the bin whose per-class deficit it best fills.
    targets: (bins, classes). Returns the bin of every group."""
    filled = np.zeros_like(targets)
    sizes = np.zeros(len(targets))
    total_target = targets.sum(1)
    out = np.empty(len(counts), np.int64)
    for gi, row in enumerate(counts):
        # change in squared error of every bin if this group joined it
        delta = ((filled + row - targets) ** 2 - (filled - targets) ** 2).sum(1)
        # among equally good bins prefer the emptiest relative to its target
        fill_ratio = sizes / np.maximum(total_target, 1e-9)
        b = int(np.lexsort((fill_ratio, delta))[0])
        out[gi] = b
        filled[b] += row
        sizes[b] += row.sum()
    return out


def carve(samples: Sequence[Sample], fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Split off about `fraction` of samples, stratified by class and grouped by subject.
    Returns (rest, carved), each in the input order."""
    samples = list(samples)
    if fraction <= 0 or not samples:
        return samples, []
    if fraction >= 1:
        raise DataError(f"a split fraction must be below 1, got {fraction}")
    rng = np.random.default_rng(seed)
    groups = _groups(samples)
    order = _group_order(groups, rng)
    classes = sorted({s.label for s in samples})
    counts = _class_matrix(samples, groups, order, classes)
    totals = counts.sum(0)
    carved_target = np.round(totals * fraction)
    targets = np.stack([totals - carved_target, carved_target])
    side = _assign(counts, targets)
    if not side.any() and len(order) >= 2:
        # every group was too big to improve the carved side: give it the smallest one
        side[len(order) - 1] = 1
    chosen = {i for gi, key in enumerate(order) if side[gi] == 1 for i in groups[key]}
    rest = [s for i, s in enumerate(samples) if i not in chosen]
    picked = [s for i, s in enumerate(samples) if i in chosen]
    return rest, picked


def make_splits(ds: LabelledSet, val_fraction: float = 0.1, seed: int = 0,
                test_fraction: float = 0.0) -> dict[str, list[Sample]]:
    """Splits for training and reporting: always "train" and "val", "test" when the set has one or
    `test_fraction` > 0, plus the set's other own splits (e.g. "public_test", "private_test").

    The set's own splits are kept; a missing val (and, if asked, test) is carved from train,
    stratified by class and by subject when subjects are known. Deterministic for a seed.
    Samples without a split in a set that has splits count as train.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise DataError(f"{name} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    own: dict[str, list[Sample]] = defaultdict(list)
    for s in ds.samples:
        own[s.split or "train"].append(s)
    out: dict[str, list[Sample]] = {k: v for k, v in own.items()}
    train = out.pop("train", [])
    if "test" not in out and test_fraction > 0:
        train, out["test"] = carve(train, test_fraction, seed)
    if "val" not in out:
        # val is a fraction of the whole train pool, not of what is left after test
        frac = val_fraction / (1 - test_fraction) if "test" not in own else val_fraction
        train, out["val"] = carve(train, frac, seed + 1)
    out["train"] = train
    ordered: dict[str, list[Sample]] = {k: out[k] for k in ("train", "val", "test") if k in out}
    ordered.update({k: out[k] for k in sorted(out) if k not in ordered})
    _check_subjects_disjoint(ordered)
    return ordered


def _check_subjects_disjoint(splits: dict[str, list[Sample]]) -> None:
    """Own splits from a data set might share subjects; carved ones never do. Warn, don't fail."""
    seen: dict[str, str] = {}
    shared: set[str] = set()
    for name, samples in splits.items():
        for s in samples:
            if s.subject is None:
                continue
            if seen.setdefault(s.subject, name) != name:
                shared.add(s.subject)
    if shared:
        warnings.warn(f"{len(shared)} subject(s) appear in more than one of the data set's own splits "
                      f"(e.g. {sorted(shared)[:5]}): figures on them are not subject-independent",
                      stacklevel=3)


def subject_kfold(samples: Sequence[Sample], k: int = 10,
                  seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """k folds of (train, test), no subject on both sides, class-balanced as far as subjects allow.

    Every sample is in exactly one test fold. Without subject ids this is a stratified k-fold over
    samples (with a warning: frames of one person may then sit on both sides)."""
    samples = list(samples)
    if k < 2:
        raise DataError(f"k-fold needs k >= 2, got {k}")
    if not any(s.subject is not None for s in samples):
        warnings.warn("no subject ids in these samples: falling back to a stratified k-fold over images "
                      "(images of one person may land on both sides)", stacklevel=2)
    groups = _groups(samples)
    if len(groups) < k:
        raise DataError(f"{k}-fold needs at least {k} subjects (or images), found {len(groups)}; lower k")
    rng = np.random.default_rng(seed)
    order = _group_order(groups, rng)
    classes = sorted({s.label for s in samples})
    counts = _class_matrix(samples, groups, order, classes)
    targets = np.tile(counts.sum(0) / k, (k, 1))
    fold = _assign(counts, targets)
    fold_of = {i: int(fold[gi]) for gi, key in enumerate(order) for i in groups[key]}
    out = []
    for f in range(k):
        test = [s for i, s in enumerate(samples) if fold_of[i] == f]
        train = [s for i, s in enumerate(samples) if fold_of[i] != f]
        out.append((train, test))
    return out
