"""Accuracy through the device path (detector -> crop -> classifier): scoring, frames, geometry, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from test_runtime_support import FACE, astronaut


def test_a_missed_face_is_a_wrong_answer():
    from fer_edge.bench.photo_path import score_with_misses

    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8]], np.float32)
    found = np.array([True, False, True, True])
    acc, mean_recall, recall = score_with_misses(y, probs, found, ["a", "b"])
    assert acc == pytest.approx(0.75)
    assert recall == {"a": 0.5, "b": 1.0} and mean_recall == pytest.approx(0.75)


def test_padded_frame_puts_the_upscaled_face_in_the_middle():
    from fer_edge.bench.photo_path import padded_frame

    face = (np.arange(48 * 48) % 251).reshape(48, 48).astype(np.uint8)
    f = padded_frame(face, pad=1.0, scale=1.0)
    assert f.shape == (144, 144, 3) and f.dtype == np.uint8
    np.testing.assert_array_equal(f[48:96, 48:96, 1], face)
    assert (f[:48] == 128).all() and (f[:, -48:] == 128).all()
    big = padded_frame(face, pad=0.5, scale=2.0)
    assert big.shape == (192, 192, 3) and (big[:48] == 128).all() and (big[48:144, 48:144] != 128).any()


class BoxDetector:
    """Answers the face's true box on even-numbered frames and nothing on odd ones (a detector that misses)."""

    name = "box"

    def __init__(self, pad: float, scale: float, side: int):
        self.box = (pad * side * scale, pad * side * scale, (pad + 1) * side * scale, (pad + 1) * side * scale)
        self.calls = 0

    def detect(self, frame, detect_image=None):
        from fer_edge.detectors import Detection

        self.calls += 1
        return [Detection(self.box, 0.99)] if self.calls % 2 == 1 else []


def test_detector_path_at_the_true_box_matches_the_crop_path_on_found_faces(tiny_tflite):
    from conftest import region_images

    from fer_edge.interpreter import TFLiteModel
    from fer_edge.bench.photo_path import Geometry, evaluate

    x, y = region_images(40, seed=9)
    labels = ["angry", "happy", "sad"]
    det = BoxDetector(pad=1.0, scale=2.0, side=32)
    crop, exact, wide = evaluate(tiny_tflite["fp32"], list(x[:, :, :, 0]), y, labels, det,
                                 [Geometry(0.0, 0.0), Geometry(1.0, 0.0)], pad=1.0, scale=2.0)
    assert crop.geometry is None and crop.found == 1.0
    assert exact.found == 0.5 == wide.found
    pred = TFLiteModel(tiny_tflite["fp32"]).predict(x).argmax(1)
    found = np.arange(40) % 2 == 0
    # the true box at margin 0 gives back the face (up x2, down x2): the same answers as the crop path
    assert exact.accuracy == pytest.approx(float((pred[found] == y[found]).sum()) / 40, abs=2 / 40)
    assert crop.accuracy == pytest.approx(float((pred == y).mean()))
    assert exact.accuracy <= 0.5 + 1e-9                       # every miss is wrong
    assert wide.accuracy < exact.accuracy - 0.1                # the face shrunk to the middle third of the crop


def test_cli_device_path_with_real_yunet_tunes_and_writes_the_geometry(tiny_tflite, tmp_path):
    """Astronaut faces (the real YuNet finds them) as a labelled folder; the tuned geometry lands in the model."""
    import cv2

    from fer_edge.cli import main
    from fer_edge.metadata import read_metadata

    img = astronaut()
    x0, y0, x1, y1 = FACE
    root = tmp_path / "faces"
    for i, lab in enumerate(["angry", "happy", "sad"]):
        d = root / "public_test" / lab
        d.mkdir(parents=True)
        crop = img[y0 - 4 * i:y1 + 4 * i, x0 - 4 * i:x1 + 4 * i]
        cv2.imwrite(str(d / f"{lab}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    model = tmp_path / "m.tflite"
    shutil.copy(tiny_tflite["int8"], model)
    out = tmp_path / "out"
    rc = main(["bench", str(model), "--data", str(root), "--device-path", "--tune-crop", "--write-geometry",
               "--out", str(out), "--frame-scale", "1", "--pad", "0.6"])
    assert rc == 0
    rec = json.loads((out / "photo_path.json").read_text())
    assert rec["n"] == 3 and all(r["found"] == 1.0 for r in rec["rows"])
    assert len(rec["rows"]) == 1 + 18                          # crop path + the 6 x 3 grid
    chosen = rec["chosen"]
    meta = read_metadata(model)
    assert (meta.preprocess.face_margin, meta.preprocess.face_offset_y) == (chosen["margin"], chosen["offset_y"])
    assert "| crop |" in (out / "photo_path.md").read_text()
    assert main(["bench", str(model), str(model), "--data", str(root), "--device-path"]) != 0
