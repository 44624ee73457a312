"""fer-edge convert: a tiny real conversion (CLI -> fine-tune -> four TFLite variants), checked end to end.

The default run trains the tiny face-native preset (face_vgg_tiny) on tiny generated images: seconds. The same
end-to-end checks on MobileNet from the bundled ImageNet weights, and the ImageNet backbones' own checks, carry
the `backbone` marker (`pytest -m backbone`, a step of its own in .ci/run)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import region_images, texture_images, write_class_tree

LABELS = ["angry", "happy", "sad"]
SIZE = 32
TINY = "face_vgg_tiny"     # the test backbone: the tiny face-native preset


def write_region_tree(root: Path, n: int = 450, seed: int = 0) -> Path:
    """The conftest 3-class region images as a class-per-folder PNG tree (generated, not research data)."""
    return write_class_tree(root, *region_images(n, SIZE, seed), LABELS)


def write_texture_tree(root: Path, n: int = 450, seed: int = 0) -> Path:
    """The conftest 3-class texture images (stripes / checkerboard) as a class-per-folder PNG tree."""
    return write_class_tree(root, *texture_images(n, SIZE, seed), LABELS)


# What each backbone of the `converted` fixture trains on, with which flags, and the weights it records.
CONVERT_RUNS = {
    # The paper's recipe (as for MobileNet: class-weighted loss, fine-tuning schedule), from random weights; the
    # textures because a face-native net pools globally and cannot see which third of the image is bright.
    TINY: (write_texture_tree, ["--preset", "paper", "--fine-tune-epochs", "6"], "none"),
    # MobileNet a0.25 from the bundled ImageNet weights; a flip would swap the left and right classes.
    "mobilenet": (write_region_tree, ["--fine-tune-epochs", "3"], "imagenet:"),
}


@pytest.fixture(scope="module", params=[TINY, pytest.param("mobilenet", marks=pytest.mark.backbone)])
def converted(request, tmp_path_factory):
    """One real `fer-edge convert` run through the CLI at 32 px, two learning rates, all four variants: the tiny
    face-native backbone (default run) and MobileNet from ImageNet weights (`-m backbone`)."""
    from fer_edge.cli import main

    backbone = request.param
    write_tree, flags, weights = CONVERT_RUNS[backbone]
    base = tmp_path_factory.mktemp("convert")
    data = write_tree(base / "faces")
    out = base / "out"
    rc = main(["convert", "--model", backbone, "--data", str(data), "--out", str(out), "--int8", "--fp32",
               "--fp16", "--dynamic", "--input-size", str(SIZE), "--epochs", "0", *flags,
               "--lr", "2e-3", "--lr", "1e-6", "--seed", "0", "--batch-size", "32", "--calib-images", "60",
               "--no-augment"])
    assert rc == 0
    record = json.loads((out / "convert.json").read_text())
    return {"out": out, "data": data, "record": record, "backbone": backbone, "weights": weights}


@pytest.fixture(scope="module")
def val_arrays(converted):
    from fer_edge.data.load import load_arrays
    from fer_edge.data.readers import open_dataset
    from fer_edge.data.splits import make_splits
    from fer_edge.preprocess import PreprocessSpec

    ds = open_dataset(str(converted["data"]))
    splits = make_splits(ds, val_fraction=0.1, seed=0)
    x, y, _ = load_arrays(splits["val"], PreprocessSpec(input_size=SIZE, color="grey"), ds.labels)
    return x, y


def test_outputs_and_lr_sweep_recorded(converted):
    out, rec = converted["out"], converted["record"]
    for name in ("model_float.keras", "model_float.json", "convert.json", "train_log.csv"):
        assert (out / name).is_file(), name
    for v in ("fp32", "fp16", "dynamic", "int8"):
        assert (out / f"model_{v}.tflite").is_file() and (out / f"model_{v}.json").is_file()
    assert not list(out.glob(".staging-*"))
    runs = {r["lr"]: r for r in rec["runs"]}
    assert set(runs) == {2e-3, 1e-6}
    # picked on validation mean per-class recall
    best = max(runs.values(), key=lambda r: r["best_mean_recall"])
    assert rec["best_lr"] == best["lr"] == 2e-3
    assert all(len(r["history"]) >= 1 for r in runs.values())
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("lr,epoch,phase") and len(log) - 1 == sum(len(r["history"]) for r in runs.values())


def test_fp32_matches_keras_on_a_trained_model(converted, val_arrays):
    import keras

    from fer_edge.interpreter import TFLiteModel

    x, y = val_arrays
    model = keras.models.load_model(converted["out"] / "model_float.keras")
    ref = np.asarray(model.predict_on_batch(x.astype(np.float32)))
    acc = float((ref.argmax(1) == y).mean())
    assert acc > 0.7, f"the model must be trained (3 classes, chance 0.33), got {acc:.2f}"
    assert ref.max(1).mean() > 0.5  # not a near-constant softmax
    got = TFLiteModel(converted["out"] / "model_fp32.tflite").predict(x)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_int8_is_integer_in_its_body_with_a_float_head(converted):
    """The default int8 export: int8 pixels in, every convolution int8, only the dense head and softmax float."""
    from fer_edge.metadata import strip
    from fer_edge.ops import analyse_tflite

    info = analyse_tflite(strip((converted["out"] / "model_int8.tflite").read_bytes()))
    assert info.input_dtype == "int8" and info.output_dtype == "float32"
    assert info.conv_weight_dtypes == ["int8"] and info.float_ops_outside_head == []
    assert info.weight_dtypes == ["float32", "int8"]             # the head's dense weights stay float
    assert info.ops.get("FULLY_CONNECTED") == 1 and info.ops.get("SOFTMAX") == 1
    assert not any(op.startswith("Flex") for op in info.ops)


def test_dynamic_and_fp16_weights(converted):
    from fer_edge.metadata import strip
    from fer_edge.ops import analyse_tflite

    dyn = analyse_tflite(strip((converted["out"] / "model_dynamic.tflite").read_bytes()))
    assert dyn.input_dtype == "float32" and dyn.output_dtype == "float32"
    assert "int8" in dyn.weight_dtypes
    fp16 = analyse_tflite(strip((converted["out"] / "model_fp16.tflite").read_bytes()))
    assert "DEQUANTIZE" in fp16.ops and fp16.input_dtype == "float32"
    sizes = {v: (converted["out"] / f"model_{v}.tflite").stat().st_size for v in ("fp32", "fp16", "int8")}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


def test_metadata_round_trips_and_metrics_are_real(converted, val_arrays):
    from fer_edge.interpreter import TFLiteModel
    from fer_edge.metadata import read_metadata
    from fer_edge.metrics import score

    x, y = val_arrays
    out = converted["out"]
    for v in ("fp32", "fp16", "dynamic", "int8"):
        meta = read_metadata(out / f"model_{v}.tflite")
        assert meta.variant == v and meta.labels == LABELS
        assert meta.preprocess.input_size == SIZE and meta.preprocess.color == "grey"
        assert meta.backbone == converted["backbone"] and meta.weights.startswith(converted["weights"])
        assert meta.tool_versions.get("tensorflow")
        # the validation metrics inside the file are those of this very file
        probs = TFLiteModel(out / f"model_{v}.tflite").predict(x)
        assert meta.metrics["val"]["accuracy"] == pytest.approx(score(y, probs, LABELS).accuracy)
        assert meta.metrics["val"]["agreement"] is not None
    meta = read_metadata(out / "model_int8.tflite")
    assert meta.input_dtype == "int8" and meta.output_dtype == "float32" and meta.calibration is not None
    assert meta.calibration.n_images == 60 and sum(meta.calibration.per_class.values()) == 60
    assert max(meta.calibration.per_class.values()) - min(meta.calibration.per_class.values()) <= 1
    assert read_metadata(out / "model_fp32.tflite").calibration is None
    float_meta = json.loads((out / "model_float.json").read_text())
    assert float_meta["variant"] == "float"


def test_calibration_set_is_balanced_and_hashed():
    from fer_edge.convert.export import calibration_set

    y = np.array([0] * 100 + [1] * 10 + [2] * 50)
    x = np.arange(len(y), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(4, 1)
    c = calibration_set(x, y, LABELS, n=60, seed=1)
    assert c.per_class == {"angry": 25, "happy": 10, "sad": 25}
    assert c.sha256 == calibration_set(x, y, LABELS, n=60, seed=1).sha256
    assert c.sha256 != calibration_set(x, y, LABELS, n=60, seed=2).sha256


def test_class_weights_follow_paper_eq1():
    from fer_edge.convert.train import class_weights

    y = np.array([0] * 50 + [1] * 5 + [3] * 20)
    w = class_weights(y, 4)
    n, k = 75, 3  # class 2 absent: K counts the classes present
    np.testing.assert_allclose(w, [n / (k * 50), n / (k * 5), 0.0, n / (k * 20)])
    # a balanced set gets weight 1 everywhere
    np.testing.assert_allclose(class_weights(np.repeat(np.arange(7), 9), 7), np.ones(7))


def test_cli_typo_names_closest_backbone(capsys):
    from fer_edge.cli import main

    rc = main(["convert", "--model", "mobilnet_v2"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2
    assert "mobilnet_v2" in err and "Did you mean 'mobilenet_v2'" in err


def test_missing_imagenet_weights_name_the_file(capsys, monkeypatch, tmp_path):
    from fer_edge.cli import main

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rc = main(["convert", "--model", "mobilenet_v2", "--weights", "imagenet", "--out", str(tmp_path / "o")])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 4
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in err.replace(" ", "")
    assert str(tmp_path / "kh" / "models") in err.replace(" ", "")
    assert "never downloads" in err and "--weights none" in err
    assert "Traceback" not in err


@pytest.mark.backbone
def test_imagenet_weights_load_from_keras_home(monkeypatch, tmp_path):
    """A file in $KERAS_HOME/models wins over the bundled copy, and its values really land in the backbone."""
    import shutil

    import h5py

    from fer_edge.convert import backbones as bb
    from fer_edge.preprocess import PreprocessSpec

    src = bb.BUNDLED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"
    (tmp_path / "models").mkdir()
    shutil.copy(src, tmp_path / "models" / src.name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = bb.get_backbone("mobilenet")
    path, desc = bb.resolve_weights(spec, "imagenet", 0.25)
    assert path == tmp_path / "models" / src.name and desc == f"imagenet:{src.name}"
    model, info = bb.build_classifier("mobilenet", PreprocessSpec(input_size=48, color="grey"), 7, "imagenet")
    assert info["pretrained"]
    with h5py.File(src) as f:
        kernel = np.asarray(f["conv1"]["conv1"]["kernel:0"])
    np.testing.assert_array_equal(model.get_layer("backbone").get_layer("conv1").get_weights()[0], kernel)


@pytest.mark.backbone
def test_backbone_input_adaptation():
    """Grey input is tiled to RGB inside the model; v1 rescales to [-1,1], v3 brings its own rescaling."""
    from fer_edge.convert import backbones as bb
    from fer_edge.errors import ConfigError
    from fer_edge.preprocess import PreprocessSpec

    m1, _ = bb.build_classifier("mobilenet", PreprocessSpec(input_size=32, color="grey"), 3, "none")
    names = [layer.name for layer in m1.layers]
    assert "grey_to_rgb" in names and "pixels_to_range" in names
    assert m1.input_shape == (None, 32, 32, 1)
    m3, _ = bb.build_classifier("mobilenet_v3_small", PreprocessSpec(input_size=32, color="rgb"), 3, "none")
    assert "pixels_to_range" not in [layer.name for layer in m3.layers]
    with pytest.raises(ConfigError, match="minimum is 75"):
        bb.build_classifier("inception_v3", PreprocessSpec(input_size=48, color="grey"), 3, "none")
    assert {"mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "inception_v3",
            "nasnet_mobile"} <= set(bb.BACKBONES.names())


def test_model_file_converts_without_training(tiny_tflite, tmp_path):
    """A finished Keras model (with its own 0..255 rescaling) converts as is: no training, same outputs."""
    import keras

    from fer_edge.convert.api import ConvertConfig, convert
    from fer_edge.interpreter import TFLiteModel

    data = write_region_tree(tmp_path / "faces", n=120, seed=3)
    res = convert(ConvertConfig(model=str(tiny_tflite["keras"]), data=str(data), out=tmp_path / "o",
                                labels=LABELS, input_range="0,255", variants=["fp32", "int8"], calib_images=40,
                                int8_output="uint8"))
    assert res.runs == [] and res.best_lr is None
    assert not (tmp_path / "o" / "checkpoints").exists()
    x, y = region_images(40, SIZE, seed=9)
    ref = keras.models.load_model(tiny_tflite["keras"]).predict_on_batch(x.astype(np.float32))
    got = TFLiteModel(res.paths["fp32"]).predict(x)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert res.metrics["fp32"]["val"]["accuracy"] > 0.7
    q = TFLiteModel(res.paths["int8"])
    assert q.input_dtype == np.uint8 and (q.predict(x).argmax(1) == ref.argmax(1)).mean() > 0.9


def test_interrupted_export_leaves_no_model(converted, val_arrays, tmp_path, monkeypatch):
    import keras

    from fer_edge.convert import export as ex
    from fer_edge.preprocess import PreprocessSpec

    x, y = val_arrays
    model = keras.models.load_model(converted["out"] / "model_float.keras")
    inp = ex.ExportInputs(model=model, labels=LABELS, preprocess=PreprocessSpec(input_size=SIZE, color="grey"),
                          backbone=converted["backbone"], weights="test", variants=["fp32", "int8"],
                          calib=ex.calibration_set(x, y, LABELS, 20), x_val=x, y_val=y)
    real = ex.convert_variant

    def dies_on_int8(saved, variant, *a, **k):
        if variant == "int8":
            raise KeyboardInterrupt  # what Ctrl-C does halfway through
        return real(saved, variant, *a, **k)

    monkeypatch.setattr(ex, "convert_variant", dies_on_int8)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        ex.export_all(inp, out)
    assert sorted(p.name for p in out.iterdir()) == []  # no model, no staging folder
    # a good model already in place survives an interrupted re-export untouched
    (out / "model_fp32.tflite").write_bytes(b"good model")
    with pytest.raises(KeyboardInterrupt):
        ex.export_all(inp, out)
    assert (out / "model_fp32.tflite").read_bytes() == b"good model"
    assert sorted(p.name for p in out.iterdir()) == ["model_fp32.tflite"]


def test_gate_rejects_and_keeps_failed_variant_aside(converted, val_arrays, tmp_path):
    import keras

    from fer_edge.convert import export as ex
    from fer_edge.errors import GateError
    from fer_edge.preprocess import PreprocessSpec

    x, y = val_arrays
    model = keras.models.load_model(converted["out"] / "model_float.keras")
    inp = ex.ExportInputs(model=model, labels=LABELS, preprocess=PreprocessSpec(input_size=SIZE, color="grey"),
                          backbone=converted["backbone"], weights="test", variants=["fp32"], calib=None, x_val=x, y_val=y,
                          max_drop=-1.0)  # any result "drops" more than -1 pp: the gate must fire
    with pytest.raises(GateError, match="fp32: accuracy fell"):
        ex.export_all(inp, tmp_path / "o")
    assert (tmp_path / "o" / "model_float.keras").is_file()
    assert not (tmp_path / "o" / "model_fp32.tflite").exists()
    assert (tmp_path / "o" / "rejected" / "model_fp32.tflite").is_file()


def _tiny_train_data(n=192, seed=0):
    x, y = texture_images(n, SIZE, seed)
    xv, yv = texture_images(48, SIZE, seed + 1)
    return {"x_train": x, "y_train": y, "x_val": xv, "y_val": yv}


def _build(weights: str = "none"):
    from fer_edge.convert import backbones as bb
    from fer_edge.preprocess import PreprocessSpec

    return bb.build_classifier(TINY, PreprocessSpec(input_size=SIZE, color="grey"), 3, weights)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny backbone's weights file: `--weights PATH` makes a model pretrained, as ImageNet weights do (the head
    phase freezes the backbone), without an ImageNet network."""
    from fer_edge.convert import backbones as bb

    model, _ = _build()
    return bb.save_backbone_weights(model, tmp_path_factory.mktemp("tiny_weights") / "tiny.weights.h5")


def test_resume_after_interruption_continues_where_it_stopped(tmp_path, pretrained):
    from fer_edge.convert.train import TrainConfig, train

    build = functools.partial(_build, str(pretrained))

    cfg = TrainConfig(epochs=1, fine_tune_epochs=2, lrs=[2e-3], batch_size=32, seed=0)
    data = _tiny_train_data(96)
    seen = []

    class Stop(Exception):
        pass

    def stop_after_two(row):
        seen.append(row["epoch"])
        if row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(build, data, LABELS, cfg, tmp_path, on_epoch=stop_after_two)
    state = json.loads((tmp_path / "lr_2e-3" / "state.json").read_text())
    assert state["epochs_done"] == 2 and not state["done"]
    resumed_epochs = []
    res = train(build, data, LABELS, cfg, tmp_path, on_epoch=lambda r: resumed_epochs.append(r["epoch"]))
    assert resumed_epochs == [3]  # only the missing epoch ran
    run = res.runs[0]
    assert run.done and [r["epoch"] for r in run.history] == [1, 2, 3]
    # a finished lr is not trained again
    again = []
    train(build, data, LABELS, cfg, tmp_path, on_epoch=lambda r: again.append(r))
    assert again == []


def test_rate_race_trains_only_the_leader_on_and_resumes(tmp_path, pretrained):
    """--sweep-epochs: every rate trains the race's epochs, the validation leader alone finishes its
    plan; an interruption after the race resumes the leader, not the race."""
    from fer_edge.convert.train import TrainConfig, train

    build = functools.partial(_build, str(pretrained))

    cfg = TrainConfig(epochs=0, fine_tune_epochs=3, lrs=[2e-3, 1e-6], batch_size=32, seed=0, sweep_epochs=1)
    data = _tiny_train_data(96)
    seen = []

    class Stop(Exception):
        pass

    def stop_in_leader(row):
        seen.append(row)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        train(build, data, LABELS, cfg, tmp_path, on_epoch=stop_in_leader)
    race = seen[:2]
    assert [(r["lr"], r["epoch"]) for r in race] == [(2e-3, 1), (1e-6, 1)]
    # the choice rule: validation mean recall, then accuracy, then the lower rate
    lead_lr = max(race, key=lambda r: (r["val_mean_recall"], r["val_accuracy"], -r["lr"]))["lr"]
    lost_lr = ({2e-3, 1e-6} - {lead_lr}).pop()
    assert (seen[2]["lr"], seen[2]["epoch"]) == (lead_lr, 2)
    tag = {2e-3: "lr_2e-3", 1e-6: "lr_1e-6"}
    loser = json.loads((tmp_path / tag[lost_lr] / "state.json").read_text())
    assert loser["done"] and loser["epochs_done"] == 1 and "rate race" in loser["note"]
    assert not (tmp_path / tag[lost_lr] / "last.keras").exists()
    resumed = []
    res = train(build, data, LABELS, cfg, tmp_path, on_epoch=lambda r: resumed.append((r["lr"], r["epoch"])))
    assert resumed == [(lead_lr, 3)]
    assert res.best_lr == lead_lr
    lead = next(r for r in res.runs if r.lr == lead_lr)
    lost = next(r for r in res.runs if r.lr == lost_lr)
    assert lead.done and [r["epoch"] for r in lead.history] == [1, 2, 3]
    assert len(lost.history) == 1 and lost.best_mean_recall <= lead.best_mean_recall


def test_sweep_epochs_leaves_old_fingerprints_alone():
    from fer_edge.convert.api import ConvertConfig

    assert ConvertConfig().fingerprint() == ConvertConfig(sweep_epochs=None).fingerprint()
    assert ConvertConfig().fingerprint() != ConvertConfig(sweep_epochs=1).fingerprint()


def test_training_is_deterministic_with_a_seed(tmp_path, pretrained):
    from fer_edge.convert.train import TrainConfig, train

    build = functools.partial(_build, str(pretrained))

    cfg = TrainConfig(epochs=0, fine_tune_epochs=1, lrs=[2e-3], batch_size=32, seed=5)
    data = _tiny_train_data(96)
    a = train(build, data, LABELS, cfg, tmp_path / "a")
    b = train(build, data, LABELS, cfg, tmp_path / "b")
    assert [r["loss"] for r in a.runs[0].history] == [r["loss"] for r in b.runs[0].history]
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_augmentation_is_training_only(tmp_path):
    from fer_edge.convert.train import training_model

    infer, _ = _build()
    tm = training_model(infer, augment=True, seed=0)
    assert {"aug_flip", "aug_crop", "aug_scale", "aug_brightness"} <= {layer.name for layer in tm.layers}
    assert not any(layer.name.startswith("aug_") for layer in infer.layers)
    x = region_images(8, SIZE)[0].astype(np.float32)
    np.testing.assert_allclose(np.asarray(tm(x, training=False)), np.asarray(infer(x, training=False)), atol=1e-6)
    assert not np.allclose(np.asarray(tm.layers[1](x, training=True)), x)  # flip/crop/... do act in training


STRATEGY_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from test_convert import LABELS, _build, _tiny_train_data
    from fer_edge.convert.train import TrainConfig, train
    cfg = TrainConfig(epochs=0, fine_tune_epochs=2, lrs=[2e-3], batch_size=32, strategy="mirrored")
    res = train(lambda: _build(sys.argv[3]), _tiny_train_data(96), LABELS, cfg, Path(sys.argv[1]))
    print(json.dumps({"replicas": res.n_replicas, "loss": [r["loss"] for r in res.runs[0].history]}))
""")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, pretrained):
    tests_dir = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", STRATEGY_SCRIPT, str(tmp_path), tests_dir, str(pretrained)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["replicas"] == 2 and len(res["loss"]) == 2
    assert res["loss"][1] < res["loss"][0]  # it trains across the two replicas


def test_strategy_names_are_checked():
    from fer_edge.convert.distribute import make_scope
    from fer_edge.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="mirrored"):
        make_scope("mirored")
