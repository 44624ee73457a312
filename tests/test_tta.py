"""Test-time augmentation (fer_edge.tta): the mirror view, exact averaging, and the same numbers through
the board's classifier, the benchmark and the daemon config.

The tiny model of conftest classifies WHICH vertical third of the image is bright (angry = left,
happy = middle, sad = right), so a horizontal mirror turns an angry image into a sad one: a flip
on the wrong axis, or no flip at all, changes the answers these tests know.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import region_images
from fer_edge.errors import ConfigError, UnknownNameError
from fer_edge.tta import TTA_MODES, check_tta, with_tta


def _flip_by_hand(model, crop):
    from fer_edge.interpreter import TFLiteModel

    m = TFLiteModel(model, threads=1)
    return (m.predict_one(crop) + m.predict_one(crop[:, ::-1].copy())) / 2


def test_flip_mirrors_the_width_axis_of_a_crop_and_of_a_batch():
    crop = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)   # H=2, W=3, C=1
    same, mirror = TTA_MODES.get("flip")(crop)
    assert same is crop
    np.testing.assert_array_equal(mirror[:, :, 0], [[2, 1, 0], [5, 4, 3]])
    assert mirror.flags["C_CONTIGUOUS"]
    batch = np.stack([crop, crop + 10])
    _, mirrored = TTA_MODES.get("flip")(batch)
    np.testing.assert_array_equal(mirrored[1, :, :, 0], [[12, 11, 10], [15, 14, 13]])


def test_with_tta_averages_the_views_exactly():
    def left_right(x):   # "probabilities": the mean of the left and of the right column
        return np.array([x[:, 0].mean(), x[:, -1].mean()], np.float32)

    crop = np.array([[[0], [100]], [[0], [100]]], np.uint8)        # left column 0, right 100
    assert with_tta(left_right, "none") is left_right               # no cost when off
    np.testing.assert_allclose(left_right(crop), [0, 100])
    np.testing.assert_allclose(with_tta(left_right, "flip")(crop), [50, 50])


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(UnknownNameError, match="flip"):
        check_tta("mirror")
    assert check_tta("FLIP") == "flip"


def test_classifier_flip_on_a_real_tflite_averages_crop_and_mirror(tiny_tflite):
    from fer_edge.runtime.classifier import Classifier

    x, y = region_images(60, seed=7)
    crops = [x[i] for i in range(len(x))]
    plain = Classifier(tiny_tflite["int8"], threads=1).classify(crops)
    flip = Classifier(tiny_tflite["int8"], threads=1, tta="flip").classify(crops)
    by_hand = np.stack([_flip_by_hand(tiny_tflite["int8"], c) for c in crops])
    np.testing.assert_allclose(flip, by_hand, atol=1e-6)
    # the model knows left from right; its mirror-averaged answer cannot (angry=0, sad=2)
    sides = y != 1
    assert (plain.argmax(1) == y).mean() > 0.9
    assert np.abs(plain[sides, 0] - plain[sides, 2]).mean() > 0.5
    assert np.abs(flip[sides, 0] - flip[sides, 2]).mean() < 0.1
    # a middle-bright image is its own mirror: flip changes nothing there
    np.testing.assert_allclose(flip[~sides], plain[~sides], atol=0.02)


def test_bench_scores_and_times_each_variant_with_and_without_tta(tiny_tflite, tmp_path):
    from test_bench import FAST, write_region_tree

    from fer_edge.bench import run_bench
    from fer_edge.bench.dataset import bench_data
    from fer_edge.metadata import read_metadata

    data = write_region_tree(tmp_path / "faces", 45, seed=3)
    res = run_bench([tiny_tflite["int8"]], data, threads=(1,), out=tmp_path / "out", tta=["none", "flip"], **FAST)
    rows = {v.name: v for v in res.variants}
    assert list(rows) == ["int8", "int8+flip"] and rows["int8+flip"].tta == "flip"
    spec = read_metadata(tiny_tflite["int8"]).preprocess
    bd = bench_data(data, None, None)
    bd.load([spec])
    probs = np.stack([_flip_by_hand(tiny_tflite["int8"], c) for c in bd.arrays(spec)])
    assert rows["int8+flip"].scores.accuracy == pytest.approx(float((probs.argmax(1) == bd.y).mean()))
    assert rows["int8+flip"].scores.accuracy < rows["int8"].scores.accuracy - 0.2   # left/right confused
    # timed in its own process, with the mirror pass
    assert rows["int8+flip"].speed[1].ok and rows["int8"].speed[1].ok
    assert "`+flip` rows: the same model scored and timed with flip" in (tmp_path / "out" / "bench.md").read_text()
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved["settings"]["tta"] == ["flip", "none"]
    assert {v["name"]: v["tta"] for v in saved["variants"]} == {"int8": "none", "int8+flip": "flip"}


def test_daemon_config_takes_tta_and_refuses_an_unknown_mode(tmp_path):
    from fer_edge.runtime.config import load_config

    p = tmp_path / "fer-edge.yaml"
    p.write_text("classifier:\n  tta: flip\nsource:\n  type: images\n  path: .\n")
    assert load_config(p).classifier.tta == "flip"
    assert load_config(p, {"classifier": {"tta": "none"}}).classifier.tta == "none"   # the --tta flag wins
    p.write_text("classifier:\n  tta: mirror\nsource:\n  type: images\n  path: .\n")
    with pytest.raises((ConfigError, UnknownNameError), match="flip"):
        load_config(p)


def test_the_daemon_pipeline_classifies_with_the_configured_tta(tiny_tflite, tmp_path):
    from fer_edge.runtime.config import load_config
    from fer_edge.runtime.daemon import build_pipeline

    cfg = load_config(None, {"classifier": {"model": str(tiny_tflite["int8"]), "threads": 1, "tta": "flip"},
                             "source": {"type": "images", "path": str(tmp_path)}})
    clf = build_pipeline(cfg).classifier
    assert clf.describe()["tta"] == "flip"
    x, _ = region_images(4, seed=1)
    np.testing.assert_allclose(clf.classify([x[0]]), _flip_by_hand(tiny_tflite["int8"], x[0])[None], atol=1e-6)


def test_slower_than_fp32_compares_like_with_like():
    """int8 is flagged against the plain fp32, int8+flip against fp32+flip (not across modes)."""
    from fer_edge.bench.result import Speed, VariantResult
    from fer_edge.bench.verdict import flag_slower_than_fp32

    def row(variant, tta, p50):
        name = variant + ("" if tta == "none" else f"+{tta}")
        return VariantResult(name=name, group="g", variant=variant, kind="tflite", path=f"{variant}.tflite",
                             scores=object(), speed={1: Speed(threads=1, p50_ms=p50)}, tta=tta)

    rows = [row("fp32", "none", 1.0), row("fp32", "flip", 2.0), row("int8", "none", 1.5), row("int8", "flip", 1.9)]
    flag_slower_than_fp32(rows, [1])
    assert [bool(r.flags) for r in rows] == [False, False, True, False]
    assert "1.50x SLOWER than fp32 " in rows[2].flags[0]


def test_a_model_that_asks_for_flip_gets_it_by_default_on_the_board_and_in_the_bench(tiny_tflite, tmp_path):
    """Metadata tta 'flip': the runtime's classifier and the bench (--tta model, the default) run it mirrored;
    an explicit choice still overrides it."""
    from test_bench import FAST, write_region_tree

    from fer_edge.bench import run_bench
    from fer_edge.metadata import read_metadata, strip, write_tflite
    from fer_edge.runtime.classifier import Classifier

    model = write_tflite(tmp_path / "m.tflite", strip(tiny_tflite["int8"].read_bytes()),
                         read_metadata(tiny_tflite["int8"]).model_copy(update={"tta": "flip"}))
    assert Classifier(model).tta == "flip" and Classifier(model, tta="none").tta == "none"
    x, _ = region_images(4, seed=2)
    c, plain = Classifier(model), Classifier(model, tta="none")
    np.testing.assert_allclose(c.classify(list(x)), (plain.classify(list(x)) + plain.classify(
        [np.ascontiguousarray(v[:, ::-1]) for v in x])) / 2, atol=1e-6)
    data = write_region_tree(tmp_path / "d", 30, seed=4)
    res = run_bench([model], data, speed=False, plots=False, tta=["model"], **FAST)
    assert [v.name for v in res.variants] == ["int8+flip"] and res.variants[0].tta == "flip"
    res = run_bench([model], data, speed=False, plots=False, tta=["none"], **FAST)
    assert [v.name for v in res.variants] == ["int8"]
