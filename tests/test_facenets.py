"""Face-native backbones, the from-scratch recipe, distillation, logit adjustment and the float-head int8 export.

Tiny preset, tiny generated images (the conftest region set): seconds, not minutes.
"""

from __future__ import annotations

import json
from pathlib import Path
import math

import numpy as np
import pytest

from conftest import texture_images

LABELS = ["angry", "happy", "sad"]
SIZE = 32


def write_texture_tree(root, n: int = 360, seed: int = 0):
    from conftest import write_class_tree

    return write_class_tree(root, *texture_images(n, SIZE, seed), LABELS)


# -- presets and settings -------------------------------------------------------------------------------------

def test_presets_fill_only_what_the_user_did_not_set():
    from fer_edge.convert.api import ConvertConfig
    from fer_edge.convert.presets import PRESETS

    scratch = ConvertConfig(model="face_vgg_tiny", lrs=[5e-4]).resolved()
    assert scratch.preset == "scratch"
    assert scratch.lrs == [5e-4]                                   # explicit wins
    for k, v in PRESETS["scratch"].items():
        if k != "lrs":
            assert getattr(scratch, k) == v, k
    assert scratch.resolved().model_dump() == scratch.model_dump()  # idempotent
    fine = ConvertConfig(model="face_vgg_tiny", weights="some.weights.h5").resolved()
    assert fine.preset == "finetune" and fine.class_weighting == "sqrt" and fine.epochs == 2
    paper = ConvertConfig(model="mobilenet").resolved()
    assert paper.preset == "paper" and paper.model_dump(exclude={"preset"}) == \
        ConvertConfig(model="mobilenet").model_dump(exclude={"preset"})


def test_cli_passes_only_what_was_typed(monkeypatch, tmp_path):
    """The CLI has no defaults of its own: a bare `convert` is ConvertConfig(), flags override field by field."""
    from fer_edge.cli import main
    from fer_edge.convert import api

    seen = []
    monkeypatch.setattr(api, "convert", lambda cfg, console=None: seen.append(cfg))
    assert main(["convert"]) == 0
    assert main(["convert", "--model", "face_vgg_tiny", "--lr", "3e-3", "--teacher", "t.tflite",
                 "--no-teacher-mirror", "--class-weighting", "sqrt", "--int8"]) == 0
    bare, face = seen
    assert bare.model_dump() == api.ConvertConfig().model_dump()
    assert face.model_fields_set == {"model", "lrs", "teachers", "teacher_mirror", "class_weighting", "variants"}
    assert face.lrs == [3e-3] and face.teachers == ["t.tflite"] and face.teacher_mirror is False


def test_weights_choices_for_face_native_backbones():
    from fer_edge.convert.backbones import get_backbone, resolve_weights
    from fer_edge.errors import ConfigError, WeightsNotFoundError

    spec = get_backbone("face_vgg_tiny")
    assert resolve_weights(spec, "auto", None) == (None, "none")
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        resolve_weights(spec, "imagenet", None)
    with pytest.raises(WeightsNotFoundError, match="ships no FER2013-pretrained weights for face_vgg_tiny"):
        resolve_weights(spec, "fer2013", None)


def test_precision_auto_follows_the_cpu_flags(tmp_path):
    from fer_edge.convert.precision import resolve_precision

    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "b"
    without.write_text("processor: 0\nflags\t\t: fpu sse avx2\n")
    assert resolve_precision("auto", dense=True, cpuinfo=with_bf16)[0] == "mixed_bfloat16"
    assert resolve_precision("auto", dense=True, cpuinfo=without)[0] == "float32"
    assert resolve_precision("auto", dense=False, cpuinfo=with_bf16)[0] == "float32"   # depthwise: slower
    assert resolve_precision("float32", dense=True, cpuinfo=with_bf16) == ("float32", "requested")


# -- training pieces with known answers -----------------------------------------------------------------------

def test_sample_weights_modes():
    from fer_edge.convert.train import sample_weights

    y = np.array([0] * 8 + [1] * 2)
    inv = sample_weights(y, 2, "inverse")
    assert inv.mean() == pytest.approx(1.0)
    assert inv[-1] / inv[0] == pytest.approx(4.0)          # N/(K n_c): 10/4 vs 10/16
    sq = sample_weights(y, 2, "sqrt")
    assert sq.mean() == pytest.approx(1.0) and sq[-1] / sq[0] == pytest.approx(2.0)
    assert sample_weights(y, 2, "none") is None and sample_weights(y, 2, "balanced") is None


def test_balanced_sampling_draws_classes_evenly():
    from fer_edge.convert.train import _epoch_order

    y = np.array([0] * 900 + [1] * 100)
    order = _epoch_order(len(y), 10, seed=0, y=y)
    assert len(order) == 1000
    assert 0.4 < (y[order] == 1).mean() < 0.6


def test_soft_targets_mix_smoothing_and_teachers():
    from fer_edge.convert.train import soft_targets

    t = soft_targets(np.array([1]), 4, label_smoothing=0.2)
    np.testing.assert_allclose(t, [[0.05, 0.85, 0.05, 0.05]])
    teacher = np.array([[0.25, 0.25, 0.25, 0.25]])
    mixed = soft_targets(np.array([1]), 4, label_smoothing=0.2, teacher=teacher, distill_weight=0.5)
    np.testing.assert_allclose(mixed, [[0.15, 0.55, 0.15, 0.15]])
    assert mixed.sum() == pytest.approx(1.0)


def test_warmup_then_cosine_plan():
    from fer_edge.convert.train import PHASE_FULL, TrainConfig, _epoch_plan

    plan = _epoch_plan(TrainConfig(epochs=0, fine_tune_epochs=6, warmup_epochs=2, lr_floor=0.0))
    factors = [f for _, f in plan]
    assert all(p == PHASE_FULL for p, _ in plan)
    np.testing.assert_allclose(factors[:2], [1 / 3, 2 / 3])
    np.testing.assert_allclose(factors[2:], [1.0, 0.75, 0.25, 0.0], atol=1e-9)


def test_logit_adjustment_recovers_the_rare_class():
    """A model that learnt the prior under-calls a rare class; tau > 0 recovers its recall, folded into the bias."""
    from fer_edge.convert.logit_adjust import adjusted, choose_tau, fold_into_head

    rng = np.random.default_rng(0)
    prior = np.array([0.9, 0.1])
    y = (rng.random(4000) < 0.5).astype(int)            # validation balanced: the prior shift hurts
    evidence = np.where(y == 1, 0.8, -0.8) + rng.normal(0, 1.0, len(y))
    logits = np.stack([np.zeros_like(evidence), evidence + np.log(prior[1] / prior[0])], 1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    adj = choose_tau(probs, y, prior, ["a", "b"])
    assert adj.tau > 0.5 and adj.val_mean_recall > adj.base_mean_recall + 0.1
    assert adj.val_accuracy >= adj.base_accuracy

    import keras

    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="head_logits")(inp))
    x = rng.normal(size=(16, 3)).astype(np.float32)
    before = np.asarray(model.predict_on_batch(x))
    fold_into_head(model, prior, adj.tau)
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(x)), adjusted(before, prior, adj.tau), atol=1e-5)


# -- backbones ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params", [("face_vgg_small", (1.1e6, 1.4e6)), ("face_resnet_small", (1.0e6, 1.6e6)),
                                         ("face_vgg_tiny", (1e3, 2e4))])
def test_face_backbones_are_native_size_and_downsample_8x(name, params):
    from fer_edge.convert.backbones import build_classifier
    from fer_edge.preprocess import PreprocessSpec

    model, info = build_classifier(name, PreprocessSpec(input_size=48, color="grey"), 7)
    assert model.input_shape == (None, 48, 48, 1)                      # grey stays one channel
    side = 48 // (8 if "small" in name else 4)
    assert model.get_layer("backbone").output_shape[1:3] == (side, side)
    assert params[0] < model.count_params() < params[1]
    assert info["pretrained"] is False


# -- end to end through the CLI: scratch recipe, float-head int8, distillation with its cache -----------------

@pytest.fixture(scope="module")
def face_runs(tmp_path_factory):
    from fer_edge.cli import main

    base = tmp_path_factory.mktemp("facenet")
    data = write_texture_tree(base / "faces", n=480)
    common = ["--model", "face_vgg_tiny", "--data", str(data), "--input-size", str(SIZE), "--int8", "--fp32",
              "--fine-tune-epochs", "12", "--warmup-epochs", "1", "--batch-size", "32", "--calib-images", "60",
              "--precision", "float32"]
    plain = base / "plain"
    assert main(["convert", *common, "--out", str(plain)]) == 0
    student = base / "student"
    teacher = plain / "model_fp32.tflite"
    args = [*common, "--out", str(student), "--teacher", str(teacher), "--distill-weight", "0.7",
            "--int8-output", "uint8"]
    assert main(["convert", *args]) == 0
    return {"data": data, "plain": plain, "student": student, "teacher": teacher, "args": args}


def test_scratch_recipe_trains_and_records_itself(face_runs):
    rec = json.loads((face_runs["plain"] / "convert.json").read_text())
    assert rec["config"]["preset"] == "scratch" and rec["config"]["optimizer"] == "adamw"
    assert rec["metrics"]["float"]["val"]["accuracy"] > 0.8, rec["metrics"]["float"]["val"]
    assert rec["training"]["precision"]["policy"] == "float32"
    assert "logit_adjustment" in rec["training"] and rec["training"]["machine"]
    # the first epoch warms up at half the rate (one warm-up epoch), then the cosine starts at the full rate
    lrs = [r["epoch_lr"] for r in rec["runs"][0]["history"]]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(2e-3)


def test_float_head_int8_runs_entirely_in_xnnpack_and_matches_float(face_runs):
    from fer_edge.ops import analyse_tflite
    from fer_edge.data.load import load_arrays
    from fer_edge.data.readers import open_dataset
    from fer_edge.interpreter import TFLiteModel
    from fer_edge.metadata import strip
    from fer_edge.preprocess import PreprocessSpec

    path = face_runs["plain"] / "model_int8.tflite"
    info = analyse_tflite(strip(path.read_bytes()))
    assert info.input_dtype == "int8" and info.output_dtype == "float32"
    assert info.conv_weight_dtypes == ["int8"] and info.float_ops_outside_head == []
    assert info.not_delegated == {} and info.xnnpack               # nothing on the slow builtin kernels
    assert analyse_tflite(str(path)).as_dict() == info.as_dict()   # a path or the bytes: the same analysis
    ds = open_dataset(str(face_runs["data"]))
    x, y, _ = load_arrays(ds.samples[:120], PreprocessSpec(input_size=SIZE, color="grey"), LABELS)
    q = TFLiteModel(path).predict(x)
    f = TFLiteModel(face_runs["plain"] / "model_fp32.tflite").predict(x)
    assert (q.argmax(1) == y).mean() > 0.8
    assert (q.argmax(1) == f.argmax(1)).mean() > 0.95
    # float probabilities: no 1/256 steps, so no tied top-2 scores
    top2 = np.sort(q, 1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > 0).all()
    assert not np.allclose(q * 256, np.round(q * 256))


def test_distilled_student_uses_cached_teacher_targets(face_runs):
    from fer_edge.convert.distill import teacher_targets, DistillSettings
    from fer_edge.metadata import read_metadata, strip
    from fer_edge.ops import analyse_tflite

    out = face_runs["student"]
    rec = json.loads((out / "convert.json").read_text())
    dist = rec["training"]["distillation"]
    assert dist["teachers"] == ["model_fp32.tflite"] and dist["weight"] == 0.7 and dist["mirror"] is True
    caches = list((out / "teacher_cache").glob("teachers-*.npy"))
    assert len(caches) == 1
    t = np.load(caches[0])
    assert t.shape[1] == len(LABELS) and np.allclose(t.sum(1), 1, atol=1e-5)
    assert read_metadata(out / "model_int8.tflite").extra["distillation"]["cache_key"] == dist["cache_key"]
    # --int8-output uint8 is plain full-integer post-training quantization
    info = analyse_tflite(strip((out / "model_int8.tflite").read_bytes()))
    assert info.output_dtype == "uint8" and info.float_tensors == 0
    assert rec["metrics"]["float"]["val"]["accuracy"] > 0.8
    # the cache answers a second ask without running the teacher (a missing teacher file would fail otherwise)
    logs = []
    from fer_edge.data.readers import open_dataset
    from fer_edge.data.splits import make_splits

    splits = make_splits(open_dataset(str(face_runs["data"])), val_fraction=0.1, seed=0)
    settings = DistillSettings((str(face_runs["teacher"]),), 1.0, True)
    again, _ = teacher_targets(settings, splits["train"], LABELS, out / "teacher_cache", log=logs.append)
    assert "from the cache" in logs[0]
    np.testing.assert_array_equal(again, t)


def test_teacher_without_a_class_is_refused():
    from fer_edge.convert.distill import label_map, soften
    from fer_edge.errors import ConfigError

    assert list(label_map(["happy", "angry", "sad"], ["angry", "sad"], "t")) == [1, 2]
    with pytest.raises(ConfigError, match="no output for \\['contempt'\\]"):
        label_map(["happy", "angry"], ["angry", "contempt"], "t.tflite")
    p = soften(np.array([[0.8, 0.2]]), 2.0)
    assert p[0, 0] == pytest.approx(math.sqrt(0.8) / (math.sqrt(0.8) + math.sqrt(0.2)))


def test_fer2013_weights_start_a_finetune(face_runs, tmp_path, monkeypatch):
    """`--weights fer2013` loads the backbone weights shipped under assets/fer2013 (here: the plain run's own
    backbone.weights.h5 standing in) and switches to the finetune preset: head warm-up, then the whole net."""
    import shutil

    import keras

    from fer_edge.cli import main
    from fer_edge.convert import backbones as bb

    shipped = tmp_path / "fer2013"
    shipped.mkdir()
    shutil.copy(face_runs["plain"] / "backbone.weights.h5", shipped / "face_vgg_tiny.weights.h5")
    monkeypatch.setattr(bb, "FER2013_DIR", shipped)
    out = tmp_path / "fine"
    assert main(["convert", "--model", "face_vgg_tiny", "--data", str(face_runs["data"]), "--input-size", str(SIZE),
                 "--weights", "fer2013", "--epochs", "1", "--fine-tune-epochs", "1", "--int8", "--out", str(out),
                 "--precision", "float32"]) == 0
    rec = json.loads((out / "convert.json").read_text())
    assert rec["config"]["preset"] == "finetune" and rec["model"]["weights"] == "fer2013:face_vgg_tiny.weights.h5"
    assert [r["phase"] for r in rec["runs"][0]["history"]] == ["head", "full"]
    # same backbone architecture as the shipped weights it started from
    plain = keras.models.load_model(face_runs["plain"] / "model_float.keras").get_layer("backbone")
    fine = keras.models.load_model(out / "model_float.keras").get_layer("backbone")
    assert len(plain.get_weights()) == len(fine.get_weights())
    assert rec["metrics"]["float"]["val"]["accuracy"] > 0.8        # a strong start after 2 epochs


def test_run_without_a_model_uses_the_shipped_fer2013_model(tmp_path):
    """`fer-edge run` with no --model classifies with the model in fer_edge/assets/models: FER2013's labels, a
    face found on a real photo, the model's own flip TTA."""
    import subprocess
    import sys

    import cv2

    from test_runtime_support import astronaut

    from fer_edge.metadata import read_metadata
    from fer_edge.runtime.config import default_model

    shipped = default_model()
    assert shipped is not None and shipped.name == "fer2013_face_vgg_small_int8.tflite"
    meta = read_metadata(shipped)
    assert meta.labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert meta.tta == "flip" and meta.variant == "int8" and meta.preprocess.input_size == 48
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.png"), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    fer_edge = Path(sys.executable).with_name("fer-edge")
    proc = subprocess.run([str(fer_edge), "run", "--source", str(photos), "--output", "jsonl:-",
                           "--log-level", "warning"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    faces = [f for r in results for f in r.get("faces", [])]
    assert len(faces) == 1 and set(faces[0]["probabilities"]) == set(meta.labels)
    assert faces[0]["expression"] == "happy"          # she smiles (scikit-image's public-domain astronaut)
