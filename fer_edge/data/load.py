"""Samples -> model-ready arrays through THE shared preprocessing path (`preprocess.to_model_input`).

Decoding runs on a thread pool: OpenCV releases the GIL while it decodes and resizes, so threads
scale without the pickling cost of processes. A bad image never stops the load: it comes back
as a `Skipped` with its key and the reason.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import numpy as np

from fer_edge.images import BadImageError, decode_image
from fer_edge.data.types import Sample, Skipped
from fer_edge.errors import DataError
from fer_edge.preprocess import PreprocessSpec, to_model_input

Progress = Callable[[int], None]
CHUNK = 256                       # samples per task: amortises pool overhead, keeps progress smooth


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def sample_image(sample: Sample) -> np.ndarray:
    """A sample's decoded image (uint8 HxW grey or HxWx3 RGB); BadImageError if it cannot be used."""
    if sample.pixels is not None:
        return sample.pixels
    if sample.path is None:
        raise BadImageError(sample.key, "sample has neither a file nor inline pixels")
    return decode_image(sample.path, key=sample.key)


def _load_chunk(chunk: Sequence[Sample], spec: PreprocessSpec) -> list[np.ndarray | str]:
    out: list[np.ndarray | str] = []
    for s in chunk:
        try:
            out.append(to_model_input(sample_image(s), spec))
        except BadImageError as exc:
            out.append(exc.reason)
        except Exception as exc:  # one odd file must never sink a 30k-image load
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def map_chunks(fn: Callable[[Sequence[Sample]], list], samples: Sequence[Sample], progress: Progress | None,
               workers: int | None) -> Iterable[tuple[Sample, object]]:
    """Apply `fn` to chunks of samples on a thread pool, in order; yields (sample, result)."""
    chunks = [samples[i:i + CHUNK] for i in range(0, len(samples), CHUNK)]
    workers = workers or default_workers()
    if workers <= 1 or len(chunks) <= 1:
        results = map(fn, chunks)
        pool = None
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fer-edge-load")
        results = pool.map(fn, chunks)
    try:
        for chunk, res in zip(chunks, results):
            yield from zip(chunk, res)
            if progress is not None:
                progress(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def load_arrays(samples: Sequence[Sample], spec: PreprocessSpec, labels: list[str],
                progress: Progress | None = None,
                workers: int | None = None) -> tuple[np.ndarray, np.ndarray, list[Skipped]]:
    """Decode and preprocess samples -> (X uint8 (N, S, S, C), y int64 label indices, skipped).

    Images that cannot be used are left out of X/y and listed in `skipped` (key + reason).
    `progress(n)` is called as chunks finish with the number of samples just processed.
    """
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DataError(f"samples carry label(s) {unknown} that are not in the label list {labels}")
    samples = list(samples)
    x = np.empty((len(samples), *spec.shape), np.uint8)
    y = np.empty(len(samples), np.int64)
    skipped: list[Skipped] = []
    n = 0
    for sample, res in map_chunks(lambda c: _load_chunk(c, spec), samples, progress, workers):
        if isinstance(res, str):
            skipped.append(Skipped(sample.key, res))
            continue
        x[n] = res
        y[n] = index[sample.label]
        n += 1
    return x[:n].copy() if n < len(samples) else x, y[:n].copy() if n < len(samples) else y, skipped


def class_counts(samples: Iterable[Sample], labels: list[str]) -> dict[str, int]:
    """Samples per label, in `labels` order (0 for a label with none); unknown labels appended."""
    counts = Counter(s.label for s in samples)
    out = {name: counts.get(name, 0) for name in labels}
    for name in sorted(set(counts) - set(labels)):
        out[name] = counts[name]
    return out


def skipped_summary(skipped: Sequence[Skipped], limit: int = 10) -> str:
    """A few lines naming the files that were skipped and why (for CLI summaries and logs)."""
    if not skipped:
        return "no images skipped"
    lines = [f"{len(skipped)} image(s) skipped:"]
    lines += [f"  {s.key}: {s.reason}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)
