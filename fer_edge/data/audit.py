"""Data audit: what is in a data set, and what is wrong with it, before any training.

Per split: class counts and imbalance, image sizes and channels, sharpness (variance of the
Laplacian), brightness and contrast. Across the set: byte-identical duplicates (SHA-1 of the file
bytes, or of the pixels for inline sets), near-identical duplicates (64-bit DCT perceptual hash
within a small Hamming distance), duplicates that cross splits or carry conflicting labels,
constant (e.g. all-black) images, unreadable files. Loud warnings when splits differ in
distribution: a widely copied FER2013 folder release has every training image Gaussian-blurred
(median Laplacian variance ~6 against ~2,100 for its sharp test images) and trains to near chance.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from fer_edge.images import BadImageError, decode_bytes, read_bytes
from fer_edge.data.load import Progress, map_chunks
from fer_edge.data.types import LabelledSet, Sample, Skipped

# Thresholds for the warnings (module constants so a caller can see and tune them).
SHARPNESS_RATIO = 4.0       # median Laplacian variance, split vs split
BRIGHTNESS_SHIFT = 20.0     # grey levels between split medians of mean brightness
CONTRAST_RATIO = 1.5        # split medians of the pixel standard deviation
CLASS_SHIFT = 0.10          # total-variation distance between splits' class distributions
IMBALANCE_RATIO = 10.0      # largest / smallest class within a split
MIN_SPLIT_FOR_SHIFT = 20    # fewer readable images than this: too noisy to compare
CONSTANT_STD = 1.0          # pixel std below this: a constant image
BLACK_MEAN = 8.0            # ... and this dark: all black
NEAR_DUP_DISTANCE = 2       # Hamming distance between 64-bit perceptual hashes (candidates) ...
NEAR_DUP_MIN_CORR = 0.93    # ... confirmed by correlation of 32x32 thumbnails ...
NEAR_DUP_MIN_EDGE_CORR = 0.75  # ... and of their Laplacians. Faces share low frequencies (the oval, the
                            # lighting), so pHash alone pairs different people; measured on FER2013 and
                            # CK+, true near-duplicates pass both (>= 95% of FER2013's), different
                            # expressions of one CK+ subject and different synthetic faces mostly do not
EXAMPLES = 10               # example groups kept per finding in the rendered report


# ---------------------------------------------------------------------------------------------
# Per-image measurements


@dataclass
class _Measure:
    digest: bytes
    width: int
    height: int
    channels: str            # "grey", "rgb", or "rgb-grey" (three equal channels)
    sharpness: float
    brightness: float
    contrast: float
    phash: int
    thumb: np.ndarray        # 32x32 uint8, for confirming near-duplicate candidates


def _phash(thumb: np.ndarray) -> int:
    """64-bit DCT hash: low 8x8 frequencies of a 32x32 thumbnail against their median."""
    import cv2

    low = cv2.dct(thumb.astype(np.float32))[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def _edges(thumb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.Laplacian(cv2.GaussianBlur(thumb.astype(np.float32), (0, 0), 0.7), cv2.CV_32F)


def _same_picture(a: np.ndarray, b: np.ndarray, min_corr: float) -> bool:
    return _thumb_corr(a, b) >= min_corr and _thumb_corr(_edges(a), _edges(b)) >= NEAR_DUP_MIN_EDGE_CORR


def _thumb_corr(a: np.ndarray, b: np.ndarray) -> float:
    fa, fb = a.astype(np.float32).ravel(), b.astype(np.float32).ravel()
    fa -= fa.mean()
    fb -= fb.mean()
    den = float(np.sqrt((fa * fa).sum() * (fb * fb).sum()))
    return float((fa * fb).sum() / den) if den > 0 else 0.0


def _measure(sample: Sample, spec_size: int | None) -> _Measure:
    import cv2

    from fer_edge.preprocess import PreprocessSpec, to_model_input

    if sample.pixels is not None:
        img = np.ascontiguousarray(sample.pixels)
        digest = hashlib.sha1(repr(img.shape).encode() + img.tobytes()).digest()
    else:
        if sample.path is None:
            raise BadImageError(sample.key, "sample has neither a file nor inline pixels")
        data = read_bytes(sample.path)
        digest = hashlib.sha1(data).digest()
        img = decode_bytes(data, sample.key)
    h, w = img.shape[:2]
    if img.ndim == 2:
        channels, grey = "grey", img
    else:
        same = np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2])
        channels = "rgb-grey" if same else "rgb"
        grey = img[:, :, 0] if same else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    # Sharpness is measured where the model sees the image when a size is given, so a set of
    # mixed resolutions is compared fairly.
    seen = to_model_input(grey, PreprocessSpec(input_size=spec_size, color="grey"))[:, :, 0] if spec_size else grey
    sharp = float(cv2.Laplacian(seen, cv2.CV_64F).var())
    mean, std = cv2.meanStdDev(grey)
    thumb = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    return _Measure(digest, w, h, channels, sharp, float(mean[0, 0]), float(std[0, 0]), _phash(thumb), thumb)


def _measure_chunk(chunk: Sequence[Sample], spec_size: int | None) -> list[_Measure | str]:
    out: list[_Measure | str] = []
    for s in chunk:
        try:
            out.append(_measure(s, spec_size))
        except BadImageError as exc:
            out.append(exc.reason)
        except Exception as exc:  # the audit reports odd files, it never dies on one
            out.append(f"{type(exc).__name__}: {exc}")
    return out


# ---------------------------------------------------------------------------------------------
# Report records


@dataclass
class Distribution:
    median: float
    p10: float
    p90: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Distribution":
        if len(values) == 0:
            return cls(float("nan"), float("nan"), float("nan"), float("nan"))
        v = np.asarray(values, np.float64)
        p10, med, p90 = np.percentile(v, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), float(v.mean()))


@dataclass
class SplitStats:
    name: str
    images: int                                   # readable images
    unreadable: int
    class_counts: dict[str, int]
    imbalance: float | None                       # largest / smallest class; None if a class is missing
    missing_classes: list[str]
    sizes: dict[str, int]                         # "WxH" -> count, most common first (top 8)
    channels: dict[str, int]
    sharpness: Distribution
    brightness: Distribution
    contrast: Distribution
    constant: int
    all_black: int


@dataclass
class DuplicateGroup:
    keys: list[str]
    labels: list[str]
    splits: list[str]

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1

    @property
    def crossing(self) -> bool:
        return len(set(self.splits)) > 1


@dataclass
class DuplicateStats:
    method: str
    groups: int = 0
    images: int = 0                               # images in all groups
    redundant: int = 0                            # images - groups: what dedup would remove
    conflicting: list[DuplicateGroup] = field(default_factory=list)
    crossing: list[DuplicateGroup] = field(default_factory=list)


@dataclass
class AuditReport:
    source: str
    kind: str
    labels: list[str]
    samples: int
    splits: dict[str, SplitStats]
    exact: DuplicateStats
    near: DuplicateStats
    constant_images: list[tuple[str, float]]      # (key, mean) of constant images
    unreadable: list[Skipped]
    warnings: list[str]
    seconds: float
    spec_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["constant_images"] = [{"key": k, "mean": m} for k, m in self.constant_images]
        return _finite(d)

    def render(self, console: Any = None) -> None:
        from fer_edge.data.audit_render import render_report

        render_report(self, console)


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write null."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Duplicates


def _union_find(n: int):
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    return find, union


def near_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int]]:
    """Index pairs whose 64-bit hashes differ in <= max_distance bits (max_distance <= 3).

    Multi-index hashing: cut each hash into 4 bands of 16 bits; by pigeonhole two hashes within
    3 bits agree exactly on at least one band, so only same-bucket pairs are compared."""
    if max_distance > 3:
        raise ValueError("near_pairs supports distances up to 3 (4 bands of 16 bits)")
    hashes = np.asarray(hashes, np.uint64)
    pairs: set[tuple[int, int]] = set()
    for band in range(4):
        keys = (hashes >> np.uint64(16 * band)) & np.uint64(0xFFFF)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for a, b in zip(starts, ends):
            if b - a < 2:
                continue
            idx = order[a:b]
            h = hashes[idx]
            dist = np.bitwise_count(h[:, None] ^ h[None, :])
            ii, jj = np.nonzero(np.triu(dist <= max_distance, 1))
            pairs.update(zip(idx[ii].tolist(), idx[jj].tolist()))
    return sorted(pairs)


def _group_stats(method: str, groups: list[list[int]], samples: list[Sample], split_of: list[str]) -> DuplicateStats:
    st = DuplicateStats(method=method)
    for members in groups:
        if len(members) < 2:
            continue
        st.groups += 1
        st.images += len(members)
        g = DuplicateGroup(keys=[samples[i].key for i in members], labels=[samples[i].label for i in members],
                           splits=[split_of[i] for i in members])
        if g.conflicting:
            st.conflicting.append(g)
        if g.crossing:
            st.crossing.append(g)
    st.redundant = st.images - st.groups
    return st


def _duplicates(ok: list[int], measures: list[_Measure], samples: list[Sample], split_of: list[str],
                constant: set[int], max_distance: int,
                min_corr: float) -> tuple[DuplicateStats, DuplicateStats]:
    by_digest: dict[bytes, list[int]] = defaultdict(list)
    for i, m in zip(ok, measures):
        by_digest[m.digest].append(i)
    exact = _group_stats("sha1", list(by_digest.values()), samples, split_of)

    # Near duplicates among distinct contents; constant images all hash alike and are reported
    # on their own, so they stay out.
    m_of = dict(zip(ok, measures))
    reps = [members[0] for members in by_digest.values() if members[0] not in constant]
    hashes = np.array([m_of[i].phash for i in reps], np.uint64)
    find, union = _union_find(len(reps))
    for a, b in near_pairs(hashes, max_distance):
        if _same_picture(m_of[reps[a]].thumb, m_of[reps[b]].thumb, min_corr):
            union(a, b)
    clusters: dict[int, list[int]] = defaultdict(list)
    for r in range(len(reps)):
        clusters[find(r)].append(r)
    digest_of = {i: m.digest for i, m in zip(ok, measures)}
    near_groups = []
    for rs in clusters.values():
        if len(rs) < 2:
            continue
        near_groups.append(sorted(i for r in rs for i in by_digest[digest_of[reps[r]]]))
    near = _group_stats(f"pHash <= {max_distance} bits, r >= {min_corr}", near_groups, samples, split_of)
    return exact, near


# ---------------------------------------------------------------------------------------------
# Split comparison


def _split_stats(name: str, idx: list[int], measures: dict[int, _Measure], samples: list[Sample],
                 labels: list[str], unreadable: int) -> SplitStats:
    ms = [measures[i] for i in idx]
    counts = Counter(samples[i].label for i in idx)
    class_counts = {lab: counts.get(lab, 0) for lab in labels}
    for lab in sorted(set(counts) - set(labels)):
        class_counts[lab] = counts[lab]
    missing = [lab for lab, n in class_counts.items() if n == 0]
    present = [n for n in class_counts.values() if n > 0]
    imbalance = (max(present) / min(present)) if present and not missing else None
    sizes = Counter(f"{m.width}x{m.height}" for m in ms)
    stds = np.array([m.contrast for m in ms])
    means = np.array([m.brightness for m in ms])
    const = stds < CONSTANT_STD
    return SplitStats(
        name=name, images=len(ms), unreadable=unreadable, class_counts=class_counts, imbalance=imbalance,
        missing_classes=missing, sizes=dict(sizes.most_common(8)),
        channels=dict(Counter(m.channels for m in ms).most_common()),
        sharpness=Distribution.of([m.sharpness for m in ms]),
        brightness=Distribution.of(means), contrast=Distribution.of(stds),
        constant=int(const.sum()), all_black=int((const & (means < BLACK_MEAN)).sum()),
    )


def _shift_warnings(splits: dict[str, SplitStats]) -> list[str]:
    out = []
    names = [n for n, s in splits.items() if s.images >= MIN_SPLIT_FOR_SHIFT]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa, sb = splits[a], splits[b]
            lo, hi = sorted((sa, sb), key=lambda s: s.sharpness.median)
            if hi.sharpness.median > SHARPNESS_RATIO * max(lo.sharpness.median, 1e-6):
                ratio = hi.sharpness.median / max(lo.sharpness.median, 1e-6)
                out.append(
                    f"SHARPNESS SHIFT: '{lo.name}' images are {ratio:,.0f}x blurrier than '{hi.name}' "
                    f"(median variance of the Laplacian {lo.sharpness.median:,.1f} vs {hi.sharpness.median:,.1f}). "
                    f"A model trained on one will fail on the other - e.g. the FER2013 folder release with "
                    f"Gaussian-blurred training images (~6 vs ~2,100) trains to near chance. Get an unblurred copy."
                )
            db = abs(sa.brightness.median - sb.brightness.median)
            if db > BRIGHTNESS_SHIFT:
                out.append(f"BRIGHTNESS SHIFT: median brightness '{a}' {sa.brightness.median:.0f} vs '{b}' "
                           f"{sb.brightness.median:.0f} (differ by {db:.0f} grey levels > {BRIGHTNESS_SHIFT:.0f})")
            ca, cb = sa.contrast.median, sb.contrast.median
            if max(ca, cb) > CONTRAST_RATIO * max(min(ca, cb), 1e-6):
                out.append(f"CONTRAST SHIFT: median pixel std '{a}' {ca:.1f} vs '{b}' {cb:.1f} "
                           f"(ratio {max(ca, cb) / max(min(ca, cb), 1e-6):.1f} > {CONTRAST_RATIO})")
            tv = _class_tv(sa.class_counts, sb.class_counts)
            if tv > CLASS_SHIFT:
                out.append(f"CLASS-DISTRIBUTION SHIFT: '{a}' vs '{b}' class proportions differ by "
                           f"{tv:.2f} total variation (> {CLASS_SHIFT}); accuracy on '{b}' will not mean the "
                           f"same as on '{a}'")
            size_a, size_b = next(iter(sa.sizes), None), next(iter(sb.sizes), None)
            if size_a != size_b:
                out.append(f"SIZE SHIFT: most common image size '{a}' {size_a} vs '{b}' {size_b}")
            ch_a, ch_b = next(iter(sa.channels), None), next(iter(sb.channels), None)
            if ch_a != ch_b:
                out.append(f"CHANNEL SHIFT: '{a}' images are mostly {ch_a}, '{b}' mostly {ch_b}")
    return out


def _class_tv(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in keys)


def _set_warnings(report: AuditReport) -> list[str]:
    out = []
    for s in report.splits.values():
        if s.missing_classes:
            out.append(f"split '{s.name}' has no images of class(es) {', '.join(s.missing_classes)}")
        if s.imbalance is not None and s.imbalance > IMBALANCE_RATIO:
            big = max(s.class_counts, key=s.class_counts.get)
            small = min((k for k in s.class_counts if s.class_counts[k]), key=s.class_counts.get)
            out.append(f"split '{s.name}' is imbalanced {s.imbalance:.1f}x ({big} {s.class_counts[big]} vs "
                       f"{small} {s.class_counts[small]}): keep class-weighted loss on and report mean recall")
    ex, near = report.exact, report.near
    if ex.conflicting:
        out.append(f"{len(ex.conflicting)} group(s) of byte-identical images carry CONFLICTING LABELS "
                   f"(e.g. {_example(ex.conflicting[0], 'label')})")
    if ex.crossing:
        out.append(f"{len(ex.crossing)} group(s) of byte-identical images CROSS SPLITS - test images seen in "
                   f"training (e.g. {_example(ex.crossing[0], 'split')})")
    if near.crossing:
        out.append(f"{len(near.crossing)} group(s) of near-identical images ({near.method}) cross splits "
                   f"(e.g. {_example(near.crossing[0], 'split')})")
    if near.conflicting:
        out.append(f"{len(near.conflicting)} group(s) of near-identical images carry conflicting labels "
                   f"(e.g. {_example(near.conflicting[0], 'label')})")
    if report.constant_images:
        black = sum(1 for _, m in report.constant_images if m < BLACK_MEAN)
        out.append(f"{len(report.constant_images)} constant image(s) ({black} all black), e.g. "
                   f"{report.constant_images[0][0]}: drop them")
    if report.unreadable:
        out.append(f"{len(report.unreadable)} unreadable image(s), e.g. {report.unreadable[0].key}: "
                   f"{report.unreadable[0].reason}")
    return out


def _example(g: DuplicateGroup, by: str) -> str:
    """Up to three members of a group, one per distinct label (or split), so the example shows the problem."""
    seen, parts = set(), []
    for k, lab, sp in zip(g.keys, g.labels, g.splits):
        v = lab if by == "label" else sp
        if v not in seen and len(parts) < 3:
            seen.add(v)
            parts.append(f"{k} [{lab}, {sp}]")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------


def leaked_keys(report: AuditReport, split: str, train: str = "train") -> set[str]:
    """Images of `split` that a clean figure leaves out: those with an exact or near copy in `train`, and every
    member of a duplicate group whose labels conflict (FER2013 PublicTest: a model scores ~20 pp higher on
    the copies, inflating the raw figure by ~1.7 pp; see shared/README)."""
    out: set[str] = set()
    for stats in (report.exact, report.near):
        for g in stats.crossing:
            if train in g.splits:
                out.update(k for k, s in zip(g.keys, g.splits) if s == split)
        for g in stats.conflicting:
            out.update(k for k, s in zip(g.keys, g.splits) if s == split)
    return out


def run_audit(ds: LabelledSet, spec_size: int | None = None, progress: Progress | None = None,
              workers: int | None = None, near_distance: int = NEAR_DUP_DISTANCE,
              near_min_corr: float = NEAR_DUP_MIN_CORR) -> AuditReport:
    """Measure every image of `ds` and compare its splits. Never raises on a bad image.

    spec_size: measure sharpness at the model's input size (as the model will see the image);
    None measures at each image's own size. A set without own splits is reported as split 'all'.
    """
    t0 = time.perf_counter()
    samples = list(ds.samples)
    split_of = [s.split or "all" for s in samples]
    ok: list[int] = []
    measures: list[_Measure] = []
    unreadable: list[Skipped] = list(ds.skipped)
    bad_by_split: Counter[str] = Counter()
    results = map_chunks(lambda c: _measure_chunk(c, spec_size), samples, progress, workers)
    for i, (sample, res) in enumerate(results):
        if isinstance(res, str):
            unreadable.append(Skipped(sample.key, res))
            bad_by_split[split_of[i]] += 1
        else:
            ok.append(i)
            measures.append(res)
    by_index = dict(zip(ok, measures))
    per_split: dict[str, list[int]] = defaultdict(list)
    for i in ok:
        per_split[split_of[i]].append(i)
    names = [n for n in ("train", "val", "test", "public_test", "private_test", "all") if n in set(split_of)]
    names += sorted(set(split_of) - set(names))
    splits = {n: _split_stats(n, per_split[n], by_index, samples, ds.labels, bad_by_split[n]) for n in names}
    constant = {i for i in ok if by_index[i].contrast < CONSTANT_STD}
    exact, near = _duplicates(ok, measures, samples, split_of, constant, near_distance, near_min_corr)
    report = AuditReport(
        source=ds.source, kind=ds.kind, labels=list(ds.labels), samples=len(samples), splits=splits,
        exact=exact, near=near,
        constant_images=[(samples[i].key, by_index[i].brightness) for i in sorted(constant)],
        unreadable=unreadable, warnings=[], seconds=0.0, spec_size=spec_size,
    )
    report.warnings = _shift_warnings(splits) + _set_warnings(report)
    report.seconds = time.perf_counter() - t0
    return report
