"""The shared core: registry, labels, preprocessing geometry, metadata round-trip, interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from fer_edge.errors import MetadataError, UnknownNameError
from fer_edge.labels import canonical_label, ordered_labels
from fer_edge.metadata import ModelMetadata, embed, read_metadata, strip, write_tflite
from fer_edge.preprocess import PreprocessSpec, crop_face, square_crop_box, to_model_input
from fer_edge.registry import Registry


def test_registry_suggests_closest_name():
    reg: Registry[int] = Registry("backbone")
    reg.register("mobilenet_v2")(1)
    reg.register("inception_v3")(2)
    assert reg.get("MobileNet_V2") == 1
    with pytest.raises(UnknownNameError) as exc:
        reg.get("mobilenet_v22")
    assert "Did you mean 'mobilenet_v2'" in str(exc.value)
    assert "inception_v3" in str(exc.value)


def test_label_aliases_and_order():
    assert canonical_label("Anger") == "angry"
    assert canonical_label("sadness") == "sad"
    assert canonical_label("HA") == "happy"
    assert canonical_label("yawn") == "yawn"
    assert ordered_labels(["surprise", "anger", "contempt", "yawn", "happy"]) == [
        "angry", "happy", "surprise", "contempt", "yawn"]


def test_to_model_input_shapes_and_colour():
    spec = PreprocessSpec(input_size=24, color="grey")
    rgb = np.zeros((50, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> grey 76 (ITU-R 601 weights)
    out = to_model_input(rgb, spec)
    assert out.shape == (24, 24, 1) and out.dtype == np.uint8
    assert abs(int(out[12, 12, 0]) - 76) <= 1
    rgb_spec = PreprocessSpec(input_size=8, color="rgb")
    grey16 = np.full((10, 10), 65535, np.uint16)
    assert (to_model_input(grey16, rgb_spec) == 255).all()
    assert to_model_input(np.zeros((5, 5, 4), np.uint8), rgb_spec).shape == (8, 8, 3)


@pytest.mark.parametrize("box,w,h", [((10, 10, 30, 50), 100, 80), ((-20, -5, 500, 700), 64, 48),
                                     ((90, 70, 90, 70), 100, 80), ((5, 5, 3, 2), 1, 1)])
def test_square_crop_box_inside_frame_and_nonempty(box, w, h):
    x0, y0, x1, y1 = square_crop_box(box, w, h, 0.2)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert abs((x1 - x0) - (y1 - y0)) <= 1 or min(w, h) == (x1 - x0) or min(w, h) == (y1 - y0)


def test_crop_face_uses_margin():
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[40:60, 40:60] = 255
    tight = crop_face(frame, (40, 40, 60, 60), PreprocessSpec(input_size=20, color="grey", face_margin=0.0))
    loose = crop_face(frame, (40, 40, 60, 60), PreprocessSpec(input_size=20, color="grey", face_margin=0.5))
    # margin 0.5 doubles the side: the 20 px square fills a quarter of the crop
    assert tight.mean() > 250 and abs(loose.mean() - 255 / 4) < 3


def test_metadata_roundtrip_embedded_and_sidecar(tmp_path):
    meta = ModelMetadata(labels=["angry", "happy"], preprocess=PreprocessSpec(input_size=48, color="grey"),
                         variant="int8", metrics={"val_accuracy": 0.5})
    fake = b"TFL3" + bytes(range(256)) * 4
    blob = embed(fake, meta)
    assert strip(blob) == fake and strip(embed(blob, meta)) == fake
    p = write_tflite(tmp_path / "m.tflite", fake, meta)
    (tmp_path / "m.json").unlink()
    back = read_metadata(p)
    assert back == meta.model_copy(update={"created": back.created}) and back.labels == ["angry", "happy"]
    (tmp_path / "bare.tflite").write_bytes(fake)
    with pytest.raises(MetadataError, match="--labels"):
        read_metadata(tmp_path / "bare.tflite")


def test_tflite_fp32_and_int8_agree_with_keras(tiny_tflite):
    import keras

    from conftest import region_images
    from fer_edge.interpreter import TFLiteModel

    x, y = region_images(60, seed=1)
    ref = keras.models.load_model(tiny_tflite["keras"]).predict_on_batch(x.astype("float32"))
    assert (ref.argmax(1) == y).mean() > 0.9, "the fixture model must be trained, or fidelity is trivial"
    fp32 = TFLiteModel(tiny_tflite["fp32"], threads=1)
    np.testing.assert_allclose(fp32.predict(x), ref, atol=1e-4)
    int8 = TFLiteModel(tiny_tflite["int8"], threads=1)
    assert int8.input_dtype == np.uint8
    assert (int8.predict(x).argmax(1) == ref.argmax(1)).mean() > 0.95
    rep = int8.kernel_report()                                        # the core's op analysis, on this interpreter
    assert rep.int8_ops > 0 and rep.input_dtype == "uint8" and rep.output_dtype == "uint8"
    assert rep.float_tensors == 0 and rep.conv_weight_dtypes == ["int8"]
