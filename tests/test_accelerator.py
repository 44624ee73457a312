"""--accelerator gpu through LiteRT's CompiledModel, and its CPU fallback (this machine has no GPU adapter).

Real LiteRT, the committed int8 model; where a GPU adapter does exist the same tests check that the
GPU path gives the CPU's labels instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_edge.accelerator import CompiledRunner, check_accelerator, open_accelerated
from fer_edge.errors import ConfigError
from fer_edge.interpreter import TFLiteModel

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "benchmarks" / "models" / "fer2013_best_int8.tflite"


def inputs(n: int = 6) -> np.ndarray:
    """Random crops of the committed model's own input shape (read from its metadata, not assumed)."""
    from fer_edge.metadata import read_metadata

    shape = read_metadata(MODEL).preprocess.shape
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_gpu_falls_back_to_the_cpu_with_one_line_saying_why():
    runner, note = open_accelerated(MODEL, "gpu", "ai_edge_litert", threads=1)
    if runner is not None:  # a machine with a GPU adapter: it must say so and run
        assert "CompiledModel" in note and runner.run(inputs(1)).shape == (1, 7)
        return
    assert "\n" not in note and note.startswith("accelerator gpu unavailable here (")
    assert note.endswith("running on the CPU (XNNPACK)") and "no GPU adapter" in note
    assert len(note) < 300


def test_model_with_gpu_requested_gives_the_cpu_results():
    cpu = TFLiteModel(MODEL, threads=1)
    gpu = TFLiteModel(MODEL, threads=1, accelerator="gpu")
    assert cpu.accelerator_note == "" and gpu.accelerator_note
    x = inputs()
    p_cpu, p_gpu = cpu.predict(x), gpu.predict(x)
    if gpu._compiled is None:
        assert np.array_equal(p_cpu, p_gpu)          # the same interpreter, the same bytes
    else:
        assert (p_cpu.argmax(1) == p_gpu.argmax(1)).all()


def test_compiled_model_path_matches_the_interpreter():
    """The CompiledModel code path (buffers, run, read, dequantise) run for real on LiteRT's CPU accelerator:
    the same int8 outputs as the classic interpreter, byte for byte."""
    runner = CompiledRunner(MODEL, "cpu", threads=1)
    model = TFLiteModel(MODEL, threads=1)
    for x in inputs():
        x = model._quantize_input(x)                 # the pixels in the model's input dtype (int8 for a float head)
        model._interp.set_tensor(model._in["index"], x[None])
        model._interp.invoke()
        want = model._interp.get_tensor(model._out["index"])
        got = runner.run(x[None])
        assert got.dtype == want.dtype and np.array_equal(got, want)
    model._compiled = runner                         # and through predict_one's dequantisation
    assert np.allclose(model.predict(inputs()), TFLiteModel(MODEL, threads=1).predict(inputs()))


def test_unknown_accelerator_names_the_valid_ones():
    assert check_accelerator("GPU") == "gpu" and check_accelerator(None) == "cpu"
    with pytest.raises(ConfigError, match=r"unknown accelerator 'gpuu' \(did you mean gpu\?\); valid: cpu, gpu"):
        check_accelerator("gpuu")


def test_other_runtimes_fall_back_saying_why():
    runner, note = open_accelerated(MODEL, "gpu", "tflite_runtime")
    assert runner is None and "needs ai-edge-litert's CompiledModel, not tflite_runtime" in note


def _fer_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_edge.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_run_with_accelerator_gpu_falls_back_and_matches_cpu(tmp_path):
    import cv2

    from test_runtime_support import face_track

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, (frame, _) in enumerate(face_track(3)):
        cv2.imwrite(str(frames / f"f{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = {}
    for acc in ("cpu", "gpu"):
        proc = _fer_edge("run", "--model", str(MODEL), "--source", str(frames), "--threads", "1",
                         "--accelerator", acc, "--output", f"jsonl:{tmp_path / acc}.jsonl")
        assert proc.returncode == 0, proc.stderr
        out[acc] = [json.loads(x) for x in (tmp_path / f"{acc}.jsonl").read_text().splitlines()]
        notes = [ln for ln in proc.stderr.splitlines() if "accelerator gpu" in ln]
        assert len(notes) == (1 if acc == "gpu" else 0), proc.stderr
    assert any(line["faces"] for line in out["cpu"])
    labels = {acc: [[f["raw_expression"] for f in line["faces"]] for line in out[acc]] for acc in out}
    assert labels["gpu"] == labels["cpu"]


def test_doctor_and_bench_take_the_accelerator(tmp_path):
    proc = _fer_edge("doctor", "--json", "--model", str(MODEL), "--threads", "1", "--accelerator", "gpu")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["accelerator"]["status"] in ("ok", "warn") and "accelerator gpu" in checks["accelerator"]["detail"]
    from fer_edge.bench.backends import open_runner
    from fer_edge.bench.probe import run_probe
    from fer_edge.metadata import read_metadata

    meta = read_metadata(MODEL)
    runner = open_runner("tflite", MODEL, meta, 1, accelerator="gpu")
    assert runner.note and runner.engine.startswith("ai_edge_litert")
    assert runner.engine.endswith(("CompiledModel GPU", "CPU (no GPU adapter)"))
    res = run_probe("tflite", MODEL, meta.to_json(), 1, inputs(1)[0], warmup=1, runs=5, max_seconds=0.5,
                    accelerator="gpu")
    assert "error" not in res and res["engine"] == runner.engine and not res["tensorflow_imported"]
    bad = _fer_edge("bench", str(MODEL), "--data", "synthetic", "--accelerator", "tpu")
    assert bad.returncode != 0 and "unknown accelerator 'tpu'" in (bad.stderr + bad.stdout)


def test_fallback_reason_without_a_native_log_names_litert_s_source_position():
    from fer_edge.accelerator import _reason

    exc = RuntimeError("ERROR: [./litert/cc/litert_compiled_model.h:1961]\n└ ERROR: [litert/runtime/compiled_model.cc:1036]")
    assert _reason(exc, []) == "RuntimeError at litert/runtime/compiled_model.cc:1036"
    assert _reason(exc, ["I0 plugin x: cannot open shared object file", "Warning: Couldn't load Vulkan: libvulkan.so.1: "
                         "cannot open shared object file"]) == "no Vulkan: libvulkan.so.1: cannot open shared object file"
