"""Property-based tests of the crop/preprocess geometry: any box (negative, huge, inverted, empty,
far outside), any frame size -> a crop inside the frame, square unless the frame is narrower, never
empty, and a model input of exactly the spec's shape. Non-finite boxes are a clear ValueError."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fer_edge.preprocess import PreprocessSpec, crop_face, square_crop_box, to_model_input

coord = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e308, max_value=1e308, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-10_000, max_value=10_000),
)
boxes = st.tuples(coord, coord, coord, coord)
sides = st.integers(min_value=1, max_value=5000)
margins = st.floats(min_value=0.0, max_value=1.0)
specs = st.builds(PreprocessSpec, input_size=st.integers(8, 96), color=st.sampled_from(["grey", "rgb"]),
                  interpolation=st.sampled_from(["area", "linear"]), face_margin=margins)


@settings(max_examples=600, deadline=None)
@given(box=boxes, w=sides, h=sides, margin=margins)
def test_crop_box_is_inside_the_frame_square_and_never_empty(box, w, h, margin):
    x0, y0, x1, y1 = square_crop_box(box, w, h, margin)
    assert all(isinstance(v, int) for v in (x0, y0, x1, y1))
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    side_x, side_y = x1 - x0, y1 - y0
    # square, except where the frame itself is too narrow to hold the square
    assert side_x == side_y or min(w, h) in (side_x, side_y)
    assert max(side_x, side_y) <= min(w, h) or side_x == side_y == 1


@settings(max_examples=300, deadline=None)
@given(cx=st.floats(0, 1), cy=st.floats(0, 1), frac=st.floats(0.02, 0.3), w=st.integers(40, 3000),
       h=st.integers(40, 3000), margin=margins)
def test_a_face_inside_the_frame_stays_inside_its_crop(cx, cy, frac, w, h, margin):
    """Whenever it fits, the crop contains the detected box, up to the rounding to whole pixels (start
    floored, side rounded: at most 1.5 px lost at one edge)."""
    s = frac * min(w, h)
    x0, y0 = cx * (w - s), cy * (h - s)
    box = (x0, y0, x0 + s, y0 + s)
    c = square_crop_box(box, w, h, margin)
    if s * (1 + 2 * margin) <= min(w, h) - 2:
        assert c[0] <= box[0] + 1.5 and c[2] >= box[2] - 1.5
        assert c[1] <= box[1] + 1.5 and c[3] >= box[3] - 1.5


@settings(max_examples=200, deadline=None)
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]), pos=st.integers(0, 3), w=sides, h=sides)
def test_non_finite_boxes_are_a_clear_error(bad, pos, w, h):
    box = [10.0, 10.0, 20.0, 20.0]
    box[pos] = bad
    with pytest.raises(ValueError, match="non-finite coordinates"):
        square_crop_box(tuple(box), w, h, 0.1)
    frame = np.zeros((min(h, 64), min(w, 64), 3), np.uint8)
    with pytest.raises(ValueError, match="non-finite coordinates"):
        crop_face(frame, tuple(box), PreprocessSpec(input_size=8))


@pytest.mark.parametrize("w,h", [(0, 10), (10, 0), (-5, 5)])
def test_an_empty_frame_is_a_clear_error(w, h):
    with pytest.raises(ValueError, match="at least 1x1"):
        square_crop_box((0, 0, 1, 1), w, h, 0.1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(box=boxes, w=st.integers(1, 400), h=st.integers(1, 400), spec=specs, seed=st.integers(0, 2**16))
def test_crop_face_always_returns_the_model_input_shape(box, w, h, spec, seed):
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = crop_face(frame, box, spec)
    assert out.shape == spec.shape and out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]


images = st.tuples(
    st.integers(1, 300), st.integers(1, 300),
    st.sampled_from([None, 1, 3, 4]),
    st.sampled_from([np.uint8, np.uint16, np.float32, np.float64]),
)


@settings(max_examples=200, deadline=None)
@given(shape=images, spec=specs, seed=st.integers(0, 2**16))
def test_to_model_input_takes_any_decoded_image(shape, spec, seed):
    """Grey, grey with a channel axis, RGB, RGBA; 8-bit, 16-bit, float 0..1 or 0..255: always spec.shape uint8,
    and a constant image stays constant (no colour or range surprises)."""
    h, w, c, dtype = shape
    rng = np.random.default_rng(seed)
    dims = (h, w) if c is None else (h, w, c)
    top = 1.0 if np.issubdtype(dtype, np.floating) and seed % 2 else np.iinfo(np.uint16).max if dtype == np.uint16 else 255
    img = (rng.random(dims) * top).astype(dtype)
    out = to_model_input(img, spec)
    assert out.shape == spec.shape and out.dtype == np.uint8
    const = np.full(dims, top, dtype)
    assert (to_model_input(const, spec) == 255).all()


@settings(max_examples=50, deadline=None)
@given(h=st.integers(0, 5), w=st.integers(0, 5), c=st.sampled_from([2, 5]))
def test_to_model_input_rejects_impossible_shapes_clearly(h, w, c):
    assume(h * w > 0)
    with pytest.raises(ValueError, match="expected an HxW or HxWx"):
        to_model_input(np.zeros((h, w, c), np.uint8), PreprocessSpec(input_size=8))
