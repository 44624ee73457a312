"""Bad models: truncated files, a .tflite without fer-edge metadata (accepted only with explicit
labels/input size/colour), metadata that belongs to another export, a float model where int8 was
asked. Each is a clear error naming the file and the fix, through the real CLI (run and bench)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from badinput import face_folder, said
from fer_edge.cli import main
from fer_edge.errors import ConfigError, MetadataError, ModelError
from fer_edge.interpreter import TFLiteModel, resolve_metadata
from fer_edge.metadata import sidecar_path, strip


@pytest.fixture
def images(tmp_path) -> Path:
    return face_folder(tmp_path, 2)


pytestmark = pytest.mark.usefixtures("wide_console")  # rich must not fold paths in messages


def run(model: Path, images: Path, out: Path, *flags: str) -> int:
    return main(["run", "--model", str(model), "--source", str(images), "--output", f"jsonl:{out}",
                 "--threads", "1", *flags])


def bare(tmp_path: Path, model: Path, name: str = "foreign.tflite") -> Path:
    """The same flatbuffer without fer-edge metadata (as a model exported by another tool)."""
    p = tmp_path / name
    p.write_bytes(strip(model.read_bytes()))
    return p


def test_truncated_tflite_is_a_clear_error_in_run_and_an_error_row_in_bench(tmp_path, tiny_tflite, images, capsys):
    src = tiny_tflite["int8"]
    cut = tmp_path / "model_int8.tflite"
    data = strip(src.read_bytes())
    cut.write_bytes(data[: len(data) // 2])                       # copy interrupted halfway
    shutil.copy(sidecar_path(src), sidecar_path(cut))             # the sidecar made it
    assert run(cut, images, tmp_path / "o.jsonl") == ModelError.exit_code
    err = said(capsys)
    assert str(cut) in err and "truncated" in err and "re-export" in err
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""

    # bench: the broken file is a row with its error; with nothing runnable the command fails
    from fer_edge.data.synthetic import write_synthetic_tree

    data_dir = write_synthetic_tree(tmp_path / "d", n_per_class=2, size=32, labels=["angry", "happy", "sad"])
    code = main(["bench", str(cut), str(tiny_tflite["fp32"]), "--data", str(data_dir), "--out", str(tmp_path / "b"),
                 "--no-speed", "--no-plots"])
    assert code == 0                                               # the good model was benchmarked
    rows = {Path(v["path"]).name: v for v in json.loads((tmp_path / "b" / "bench.json").read_text())["variants"]}
    assert "truncated" in rows["model_int8.tflite"]["error"] and rows["model_fp32.tflite"]["error"] is None

    # without its sidecar a truncated file has no metadata left: the message says what to pass, and
    # passing it reaches the real problem
    sidecar_path(cut).unlink()
    with pytest.raises(MetadataError, match="no fer-edge metadata.*--labels"):
        resolve_metadata(cut)
    with pytest.raises(ModelError, match="truncated"):
        resolve_metadata(cut, ["angry", "happy", "sad"], 32, "grey")


def test_model_without_metadata_runs_only_with_explicit_labels_and_input(tmp_path, tiny_tflite, images, capsys):
    foreign = bare(tmp_path, tiny_tflite["int8"])
    out = tmp_path / "o.jsonl"
    assert run(foreign, images, out) == ModelError.exit_code
    err = said(capsys)
    assert "carries no fer-edge metadata" in err and "--labels" in err and "--input-size" in err

    assert run(foreign, images, out, "--labels", "anger,happiness,sad", "--input-size", "32", "--color", "grey") == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["file"] for r in lines] == ["f0.png", "f1.png"]

    # the explicit description is checked against the model's own tensors
    meta = resolve_metadata(foreign, ["angry", "happy", "sad"], 32)
    assert meta.variant == "int8" and meta.preprocess.color == "grey" and meta.labels == ["angry", "happy", "sad"]
    for labels, size, color, words in ((["angry", "happy"], 32, None, "names 2 classes but the model has 3"),
                                       (["angry", "happy", "sad"], 48, None, "is not (1, 48, 48"),
                                       (["angry", "happy", "sad"], 32, "rgb", "takes 1-channel input")):
        with pytest.raises(ModelError, match=re.escape(words)):
            resolve_metadata(foreign, labels, size, color)
    # and a model that has metadata is never relabelled by flags
    with pytest.raises(ConfigError, match=r"--labels \['happy', 'angry', 'sad'\] \(the model says"):
        resolve_metadata(tiny_tflite["int8"], ["happy", "angry", "sad"])


def test_bench_scores_a_model_without_metadata_like_the_original(tmp_path, tiny_tflite):
    from fer_edge.bench.core import run_bench
    from fer_edge.data.synthetic import write_synthetic_tree

    data = write_synthetic_tree(tmp_path / "d", n_per_class=4, size=32, labels=["angry", "happy", "sad"])
    foreign = bare(tmp_path, tiny_tflite["fp32"], "model_fp32.tflite")
    plain = run_bench([tiny_tflite["fp32"]], str(data), speed=False, plots=False)
    assert plain.variants[0].error is None
    refused = run_bench([foreign], str(data), speed=False, plots=False)
    assert "no fer-edge metadata" in refused.variants[0].error
    explicit = run_bench([foreign], str(data), speed=False, plots=False, labels=["angry", "happy", "sad"],
                         input_size=32, color="grey")
    a, b = plain.variants[0].scores, explicit.variants[0].scores
    assert b is not None and a.accuracy == b.accuracy and np.array_equal(a.confusion, b.confusion)


def test_metadata_of_another_export_is_refused(tmp_path, tiny_tflite, images, capsys):
    """A float flatbuffer beside the int8 export's sidecar: passed off as int8 until now."""
    fake = bare(tmp_path, tiny_tflite["fp32"], "model_int8.tflite")
    shutil.copy(sidecar_path(tiny_tflite["int8"]), sidecar_path(fake))
    with pytest.raises(ModelError, match="says variant int8, but the model takes float32 input"):
        TFLiteModel(fake, threads=1)
    assert run(fake, images, tmp_path / "o.jsonl") == ModelError.exit_code
    assert "sidecar .json copied beside the wrong model" in said(capsys)


def test_float_model_where_int8_is_required(tmp_path, tiny_tflite, images, capsys):
    out = tmp_path / "o.jsonl"
    assert run(tiny_tflite["fp32"], images, out, "--require-variant", "int8") == ConfigError.exit_code
    err = said(capsys)
    assert "require_variant is int8" in err and "fp32 export" in err and "model_int8.tflite" in err
    assert run(tiny_tflite["int8"], images, out, "--require-variant", "int8") == 0
    assert len(out.read_text().splitlines()) == 2
    assert run(tiny_tflite["int8"], images, out, "--require-variant", "int9") == ConfigError.exit_code
    assert "classifier.require_variant" in said(capsys)


def test_every_exported_variant_agrees_with_its_tensors(tiny_tflite):
    """The consistency check itself must accept what fer-edge exports."""
    for v in ("fp32", "int8"):
        m = TFLiteModel(tiny_tflite[v], threads=1)
        assert m.metadata.variant == v
        assert m.predict_one(np.zeros(m.metadata.preprocess.shape, np.uint8)).shape == (3,)


def test_convert_on_a_broken_model_file_and_on_data_with_no_usable_image(tmp_path, capsys):
    from badinput import write_bad_images

    broken = tmp_path / "emotion_model.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)           # an HDF5 signature, then nothing
    data = tmp_path / "data"
    for c in ("happy", "sad"):
        write_bad_images(data / c)
    for f in data.rglob("*"):
        if f.is_file() and f.name.startswith("huge"):
            f.unlink()                                             # keep the test light on disk reads
    assert main(["convert", "--model", str(broken), "--data", str(data), "--out", str(tmp_path / "o")]) == 4
    msg = said(capsys)
    assert f"{broken}: Keras cannot load it" in msg
    # only unusable and odd images: the odd ones load, so force a set where nothing is usable
    for f in data.rglob("*"):
        if f.is_file() and not any(k in f.name for k in ("empty", "truncated", "notes", "one_pixel")):
            f.unlink()
    assert main(["convert", "--data", str(data), "--out", str(tmp_path / "o2"), "--epochs", "1",
                 "--fine-tune-epochs", "0", "--input-size", "32"]) == 3
    cap = capsys.readouterr()
    msg = " ".join((cap.out + cap.err).split())                   # the skipped files are listed on stdout
    assert "need training and validation images" in msg
    assert msg.count("empty file (0 bytes)") >= 2 and "truncated JPEG" in msg
    assert not list((tmp_path / "o2").glob("model_*"))
