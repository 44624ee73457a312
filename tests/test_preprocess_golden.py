"""Bit-exact preprocessing: the committed golden crops reproduce here, and every resize that feeds a
model takes the CPU-independent path (the emulated board runs the same check in device/arm64_smoke.sh)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import golden_crops
from fer_edge.preprocess import PreprocessSpec, resize_exact, to_model_input


def test_golden_crops_reproduce_on_this_machine():
    assert golden_crops.check() == []


def test_golden_checksums_notice_a_small_change():
    """The check has teeth: a few pixels of the face changed by a few levels change its crops' checksums."""
    img = golden_crops.frame().copy()
    img[99:101, 179:181] ^= 4
    want = golden_crops.json.loads(golden_crops.SUMS.read_text())
    have = golden_crops.compute(img)
    assert have["frame"] != want["frame"]
    assert have["grey96_enlarge"] != want["grey96_enlarge"] and have["rgb64_shrink"] != want["rgb64_shrink"]


@pytest.mark.parametrize("src,dst", [((96, 80), (48, 48)), ((37, 41), (96, 96)), ((100, 40), (64, 64))])
def test_resize_exact_picks_area_only_when_both_axes_shrink(src, dst):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (src[1], src[0]), dtype=np.uint8)
    out = resize_exact(img, dst)
    both_shrink = src[0] >= dst[0] and src[1] >= dst[1]
    want = cv2.resize(img, dst, interpolation=cv2.INTER_AREA if both_shrink else cv2.INTER_LINEAR_EXACT)
    assert np.array_equal(out, want)


def test_model_input_enlarging_is_not_plain_inter_linear():
    """Plain INTER_LINEAR (11-bit fixed point, CPU-specific SIMD) gives other bytes than the exact path on
    this very machine, so the golden test would notice a regression to it."""
    rng = np.random.default_rng(2)
    face = rng.integers(0, 256, (37, 37), dtype=np.uint8)
    spec = PreprocessSpec(input_size=96, color="grey")
    x = to_model_input(face, spec)[:, :, 0]
    assert np.array_equal(x, cv2.resize(face, (96, 96), interpolation=cv2.INTER_LINEAR_EXACT))
    assert not np.array_equal(x, cv2.resize(face, (96, 96), interpolation=cv2.INTER_LINEAR))


def test_no_inexact_resize_left_in_the_model_paths():
    """The modules whose resizes feed a model name no plain cv2.INTER_LINEAR (the eye-levelling warpAffine
    is the one exception: its fixed-point remap is integer arithmetic, and its golden case pins it)."""
    import re
    from pathlib import Path

    root = Path(golden_crops.HERE).parent / "fer_edge"
    for rel in ("preprocess.py", "detectors.py", "runtime/crop.py", "data/load.py", "runtime/sources.py"):
        for line in (root / rel).read_text().splitlines():
            if re.search(r"cv2\.INTER_LINEAR(?!_EXACT)", line):
                assert "warpAffine" in line, f"{rel}: {line.strip()}"
