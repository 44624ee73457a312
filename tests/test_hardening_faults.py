"""Faults on the host side: a full disk during export, SIGTERM/SIGKILL during `fer-edge convert`.

The disk really fills: a small tmpfs is mounted when this process may mount one (root, as in CI
containers); otherwise the same failure is injected as OSError(ENOSPC) at the write.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import region_images
from fer_edge.errors import ModelError

LABELS = ["angry", "happy", "sad"]


@pytest.fixture(scope="module")
def export_inputs():
    """A small untrained Keras model (export does not care how good it is) and its export inputs."""
    import keras

    from fer_edge.convert import export as ex
    from fer_edge.preprocess import PreprocessSpec

    keras.utils.set_random_seed(0)
    x, y = region_images(60)
    inp = keras.Input((32, 32, 1))
    h = keras.layers.Rescaling(1 / 127.5, -1)(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    return ex.ExportInputs(model=model, labels=LABELS, preprocess=PreprocessSpec(input_size=32, color="grey"),
                           backbone="tiny", weights="none", variants=["fp32", "int8"],
                           calib=ex.calibration_set(x, y, LABELS, 20), x_val=x, y_val=y)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_good_models(folder: Path) -> None:
    """Every model_*.tflite at a final path loads, runs and carries its metadata."""
    from fer_edge.interpreter import TFLiteModel

    models = sorted(folder.glob("model_*.tflite"))
    assert models, f"no models in {folder}"
    for m in models:
        tm = TFLiteModel(m, threads=1)
        assert tm.labels and tm.metadata.variant in m.stem
        probs = tm.predict_one(np.zeros(tm.metadata.preprocess.shape, np.uint8))
        assert np.isclose(probs.sum(), 1.0, atol=0.02)


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode(errors='replace').strip()}); "
                    "the injected-ENOSPC test covers the same path")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave_kb: int) -> Path:
    st = os.statvfs(mnt)
    filler = mnt / "filler.bin"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_kb * 1024))
    return filler


@pytest.mark.parametrize("leave_kb", [4, 60, 120])
def test_full_disk_during_export_fails_cleanly_and_keeps_the_previous_models(export_inputs, small_tmpfs, leave_kb):
    """A real full disk at three points of the export (the .keras save, TensorFlow's SavedModel
    writer, the .tflite write): a clear error naming the cause, the models of the previous run
    byte-for-byte as they were, and no staging leftovers."""
    from fer_edge.convert.export import export_all

    out = small_tmpfs / "out"
    export_all(export_inputs, out)
    before = _snapshot(out)
    filler = _fill(small_tmpfs, leave_kb)
    with pytest.raises(ModelError) as err:
        export_all(export_inputs, out)
    filler.unlink()
    msg = str(err.value)
    assert "No space left on device" in msg and "untouched" in msg and str(out) in msg
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)      # no .staging-* left behind
    _assert_good_models(out)


def test_injected_enospc_at_the_tflite_write(export_inputs, tmp_path, monkeypatch):
    """The same guarantee without a mount: the .tflite write raises ENOSPC."""
    from fer_edge import metadata
    from fer_edge.convert.export import export_all

    out = tmp_path / "out"
    export_all(export_inputs, out)
    before = _snapshot(out)

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(metadata, "atomic_write_bytes", disk_full)
    with pytest.raises(ModelError, match="No space left on device.*untouched"):
        export_all(export_inputs, out)
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


# ------------------------------------------------------------------------------------------------
# SIGKILL / SIGTERM during `fer-edge convert` (the real CLI in a subprocess)

CONVERT_FLAGS = ["--model", "face_vgg_tiny", "--epochs", "2", "--fine-tune-epochs", "0", "--input-size", "32", "--batch-size", "16",
                 "--fp32", "--int8", "--calib-images", "12", "--no-test", "--seed", "0"]


def _convert(data: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "fer_edge.cli", "convert", "--data", str(data), "--out", str(out),
                             *CONVERT_FLAGS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
        pytest.fail(f"convert did not finish within {timeout} s:\n{text[-3000:]}")
    return proc.returncode, text


def _kill_when(proc: subprocess.Popen, ready, sig: int, what: str, timeout: float = 240) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"convert ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"convert never reached {what}")
        time.sleep(0.02)
    proc.send_signal(sig)
    return _finish(proc, 60)


def _final_model_files(out: Path) -> list[str]:
    """What a user (or bench, given the folder) would take for a model: visible model_* files."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith("model_"))


@pytest.mark.slow
def test_convert_killed_in_training_and_in_export_never_leaves_a_half_model(tmp_path):
    """SIGKILL while training -> no model at all, rerun resumes and finishes; SIGKILL and SIGTERM while
    exporting over a finished run -> the finished run's models stay byte-identical and loadable; SIGTERM
    cleans up after itself (exit 130, no staging left) and sweeps the folder SIGKILL could not."""
    from fer_edge.data.synthetic import write_synthetic_tree

    data = write_synthetic_tree(tmp_path / "data", n_per_class=10, labels=["happy", "sad", "surprise"])
    out = tmp_path / "out"

    # 1. SIGKILL once the first epoch is checkpointed (training goes on to epoch 2).
    state = out / "checkpoints"
    proc = _convert(data, out)
    rc, text = _kill_when(proc, lambda: any(state.glob("*/state.json")), 9, "the first checkpoint")
    assert rc == -9
    assert _final_model_files(out) == [], text

    # 2. Rerun with the same settings: resumes from the checkpoint and finishes.
    rc, text = _finish(_convert(data, out))
    assert rc == 0, text[-3000:]
    assert "resuming from the checkpoints" in text
    assert "epoch 2 (" in text and "epoch 1 (" not in text, "epoch 1 should have come from the checkpoint"
    _assert_good_models(out)
    good = _snapshot(out)

    # 3. SIGKILL in the middle of a re-export (training is done and skipped): nothing final changes.
    proc = _convert(data, out)
    rc, text = _kill_when(proc, lambda: any(out.glob(".staging-*/model_fp32.tflite")), 9, "export")
    assert rc == -9
    assert _snapshot(out) == good
    _assert_good_models(out)

    # 4. SIGTERM in the middle of a re-export: same guarantee, and it cleans its staging folder up.
    before = set(out.glob(".staging-*"))
    assert before, "SIGKILL cannot clean up: its staging folder should still be there"
    proc = _convert(data, out)
    rc, text = _kill_when(proc, lambda: bool(set(out.glob(".staging-*/saved_model")) - {s / "saved_model" for s in before}),
                          15, "export")
    assert rc == 130, text[-2000:]                                # unwound like Ctrl-C
    assert _snapshot(out) == good
    # its own staging folder removed on the way out, and the one SIGKILL left swept when it started
    assert list(out.glob(".staging-*")) == [], "a staging folder was left behind"
    _assert_good_models(out)
