"""Saliency and occlusion maps point where the model actually looks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fer_edge.bench.saliency import occlusion_map
from fer_edge.metadata import ModelMetadata, read_metadata, strip, write_tflite
from fer_edge.preprocess import PreprocessSpec
from test_bench import write_region_tree

SIZE = 32


@pytest.fixture(scope="module")
def top_left_models(tmp_path_factory) -> dict[str, Path]:
    """A 2-class model whose answer depends only on the mean of the top-left quadrant (fixed weights):
    logit difference = (mean - 180) / 10. Exported to fp32 and int8 TFLite."""
    import keras
    import tensorflow as tf

    out = tmp_path_factory.mktemp("top_left")
    inp = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Cropping2D(((0, SIZE // 2), (0, SIZE // 2)))(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    dense = keras.layers.Dense(2, activation="softmax")
    o = dense(h)
    model = keras.Model(inp, o)
    dense.set_weights([np.array([[0.05, -0.05]], np.float32), np.array([-9.0, 9.0], np.float32)])
    model.export(str(out / "saved"), verbose=False)
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (64, SIZE, SIZE, 1)).astype(np.float32)
    for i, level in enumerate(np.linspace(0, 255, len(calib))):  # calibrate the whole range of quadrant means
        calib[i, : SIZE // 2, : SIZE // 2] = level
    spec = PreprocessSpec(input_size=SIZE, color="grey")
    paths = {"keras": model}
    for variant in ("fp32", "int8"):
        conv = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved"))
        if variant == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.uint8
        meta = ModelMetadata(labels=["happy", "sad"], preprocess=spec, variant=variant, backbone="top_left",
                             input_dtype="uint8" if variant == "int8" else "float32",
                             output_dtype="uint8" if variant == "int8" else "float32")
        paths[variant] = write_tflite(out / f"model_{variant}.tflite", conv.convert(), meta)
    return paths


def bright_dark_model():
    """Grad-CAM check: a 1x1 conv gives a 'brightness' and a 'darkness' map (same geometry as the input);
    class 0 = mean brightness, class 1 = mean darkness."""
    import keras

    inp = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(2, 1, activation="relu")
    h = conv(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inp, dense(h))
    conv.set_weights([np.array([1 / 255, -1 / 255], np.float32).reshape(1, 1, 1, 2), np.array([0, 1], np.float32)])
    dense.set_weights([np.eye(2, dtype=np.float32) * 4, np.zeros(2, np.float32)])
    return model


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_occlusion_lights_up_the_region_the_model_reads(top_left_models, variant):
    from fer_edge.interpreter import TFLiteModel

    model = TFLiteModel(top_left_models[variant], threads=1)
    img = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 1)).astype(np.uint8)
    img[: SIZE // 2, : SIZE // 2] = 200
    heat, target, prob = occlusion_map(model.predict, img, patch=4, stride=2)
    assert target == 0 and 0.8 < prob < 0.95  # logit gap 2: confident but not saturated
    half = SIZE // 2
    inside = heat[: half - 4, : half - 4]          # patches over it only ever touch the quadrant
    outside = [heat[half + 4:, :], heat[:, half + 4:]]   # patches over it never touch the quadrant
    assert inside.min() > 0.01
    assert max(np.abs(o).max() for o in outside) < 1e-6
    # the quadrant carries the map's mass; the rest is a thin band where patches straddle its edge
    assert heat[:half, :half].sum() > 0.9 * np.abs(heat).sum()


def test_occlusion_covers_every_pixel_and_reports_the_base_probability():
    calls = []

    def predict(batch):
        calls.append(len(batch))
        p = batch.reshape(len(batch), -1).mean(1, keepdims=True) / 255.0
        return np.hstack([p, 1 - p]).astype(np.float32)

    img = np.full((10, 10, 1), 255, np.uint8)
    heat, target, prob = occlusion_map(predict, img, patch=3, stride=3)
    assert target == 0 and prob == pytest.approx(1.0)
    # 3x3 patches at 0,3,6 and the edge position 7: every pixel covered, every drop = 9*127/(100*255)
    assert np.allclose(heat, 9 * 127 / (100 * 255), atol=1e-6)
    assert sum(calls) == 1 + 16


@pytest.fixture(scope="module")
def explain_inputs(tiny_tflite, tmp_path_factory):
    d = tmp_path_factory.mktemp("explain_models")
    shutil.copy(tiny_tflite["keras"], d / "model_float.keras")
    (d / "model_float.json").write_text(
        read_metadata(tiny_tflite["fp32"]).model_copy(update={"variant": "float"}).to_json())
    for v in ("fp32", "int8"):
        shutil.copy(tiny_tflite[v], d / f"model_{v}.tflite")
    data = write_region_tree(tmp_path_factory.mktemp("explain_data"), 24, seed=7)
    return d, data


def test_gradient_saliency_is_zero_where_the_model_does_not_look(top_left_models):
    from fer_edge.bench.saliency import gradient_saliency

    img = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 1)).astype(np.uint8)
    sal = gradient_saliency(top_left_models["keras"], img, target=0)
    half = SIZE // 2
    assert sal.shape == (SIZE, SIZE) and sal.max() == pytest.approx(1.0)
    assert sal[:half, :half].min() > 0.5          # every pixel of the quadrant moves the mean equally
    assert np.abs(sal[half:, :]).max() == 0 and np.abs(sal[:, half:]).max() == 0


def test_grad_cam_lights_up_the_evidence_for_the_asked_class():
    from fer_edge.bench.saliency import LayerChain, grad_cam

    model = bright_dark_model()
    img = np.zeros((SIZE, SIZE, 1), np.uint8)
    img[:, : SIZE // 2] = 255                   # left half bright, right half dark
    chain = LayerChain(model, img)
    bright, layer = grad_cam(model, img, 0, chain)
    dark, _ = grad_cam(model, img, 1, chain)
    assert layer == model.layers[1].name         # the conv: the last layer with a spatial output
    half = SIZE // 2
    assert bright[:, :half].min() > 0.9 and bright[:, half + 1:].max() < 0.05
    assert dark[:, half + 1:].min() > 0.9 and dark[:, :half - 1].max() < 0.05


def test_grad_cam_reaches_into_a_nested_backbone():
    """Converted models wrap the backbone (a Functional model) inside the outer model: Grad-CAM must use
    the backbone's last conv, not the input scaling layer before it."""
    import keras

    from fer_edge.bench.saliency import LayerChain

    inner_in = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="c1")(inner_in)
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    backbone = keras.Model(inner_in, keras.layers.Dense(3, activation="softmax")(h), name="backbone")
    outer_in = keras.Input((SIZE, SIZE, 1))
    model = keras.Model(outer_in, backbone(keras.layers.Rescaling(1 / 255.0, name="scale")(outer_in)))
    chain = LayerChain(model, np.zeros((SIZE, SIZE, 1), np.uint8) + 7)
    assert chain.layer_name == "c2" and [lay.name for lay in chain.layers][:2] == ["scale", "c1"]


def test_explain_writes_a_grid_per_image(explain_inputs, tmp_path):
    from fer_edge.bench.explain import run_explain

    models, data = explain_inputs
    res = run_explain([models], data, n=2, out=tmp_path)
    pngs = sorted(tmp_path.glob("explain_*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    doc = json.loads((tmp_path / "explain.json").read_text())
    assert doc["models"] == ["float", "int8"] and len(doc["images"]) == 2
    for rec in doc["images"]:
        assert set(rec["models"]) == {"float", "int8"} and 0 < rec["models"]["int8"]["prob"] <= 1
    assert not res.warnings  # the tiny model is a layer chain: Grad-CAM ran


def test_explain_disagree_picks_only_images_where_float_and_int8_differ(explain_inputs, tmp_path):
    from fer_edge.cli import main

    models, data = explain_inputs
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    src = models / "model_int8.tflite"
    meta = read_metadata(src).model_copy(update={"labels": ["angry", "sad", "happy"]})
    write_tflite(swapped / "model_int8.tflite", strip(src.read_bytes()), meta)
    out = tmp_path / "out"
    rc = main(["explain", str(models / "model_fp32.tflite"), str(swapped / "model_int8.tflite"),
               "--data", str(data), "--disagree", "--n", "3", "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "explain.json").read_text())
    assert len(doc["images"]) == 3 and doc["disagree"]
    for rec in doc["images"]:
        preds = {m["pred"] for m in rec["models"].values()}
        assert len(preds) == 2 and rec["true"] in ("happy", "sad")
