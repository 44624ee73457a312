"""The benchmark harness on tiny generated data: real models, real interpreters, real subprocesses."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import region_images
from fer_edge.bench.core import plan_threads
from fer_edge.ops import analyse_ops
from fer_edge.bench.plots import pareto_front
from fer_edge.bench.timing import measure
from fer_edge.metadata import read_metadata, strip, write_tflite

LABELS = ["angry", "happy", "sad"]
FAST = dict(runs=20, warmup=2, max_seconds=0.3)


def write_region_tree(root: Path, n: int, seed: int) -> Path:
    """region_images as PNG files in a public_test/<class>/ tree (class = which third is bright)."""
    import cv2

    x, y = region_images(n, seed=seed)
    for i, (img, c) in enumerate(zip(x, y)):
        d = root / "public_test" / LABELS[c]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"img_{i:03d}.png"), img[:, :, 0])
    return root


@pytest.fixture(scope="module")
def region_data(tmp_path_factory) -> Path:
    return write_region_tree(tmp_path_factory.mktemp("region_data"), 45, seed=3)


def _copy_with_meta(src: Path, dst: Path, **changes) -> Path:
    """A copy of a .tflite with its metadata changed (e.g. labels permuted)."""
    meta = read_metadata(src).model_copy(update=changes)
    return write_tflite(dst, strip(src.read_bytes()), meta)


@pytest.fixture(scope="module")
def model_dir(tiny_tflite, tmp_path_factory) -> Path:
    """A convert-style folder: float .keras with its sidecar, fp32 and int8 .tflite."""
    d = tmp_path_factory.mktemp("tiny_convert")
    shutil.copy(tiny_tflite["keras"], d / "model_float.keras")
    meta = read_metadata(tiny_tflite["fp32"]).model_copy(update={"variant": "float"})
    (d / "model_float.json").write_text(meta.to_json())
    for v in ("fp32", "int8"):
        shutil.copy(tiny_tflite[v], d / f"model_{v}.tflite")
    return d


def pick(res, folder: Path, variant: str):
    """The row of `variant` from `folder` (names carry a group prefix when several folders are benched)."""
    return next(v for v in res.variants if Path(v.path).parent == folder and v.variant == variant)


@pytest.fixture(scope="module")
def full_run(model_dir, region_data, tmp_path_factory):
    """One complete run (keras + fp32 + int8 + a truncated copy) shared by several checks."""
    from fer_edge.bench import run_bench

    broken_dir = tmp_path_factory.mktemp("broken")
    blob = (model_dir / "model_int8.tflite").read_bytes()
    (broken_dir / "model_int8.tflite").write_bytes(strip(blob)[: len(strip(blob)) // 2])
    (broken_dir / "model_int8.json").write_text(read_metadata(model_dir / "model_int8.tflite").to_json())
    out = tmp_path_factory.mktemp("bench_out")
    res = run_bench([model_dir, broken_dir / "model_int8.tflite"], region_data, threads=(1,), out=out, **FAST)
    return res, out


# ------------------------------------------------------------------------------------------ full run


def test_bench_writes_every_output(full_run):
    res, out = full_run
    names = [v.name for v in res.variants]
    for f in ("bench.json", "bench.csv", "bench.md", "recall_per_class.png", "accuracy_vs_latency.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 200, f
    ok = [v for v in res.variants if v.ok]
    assert len(ok) == 3
    for v in ok:
        png = out / f"confusion_{v.name.replace(':', '_')}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "bench.json").read_text())
    assert [v["name"] for v in doc["variants"]] == names
    assert doc["data"]["n"] == 45 and doc["data"]["split"] == "public_test"
    md = (out / "bench.md").read_text()
    for n in names:
        assert f"| {n}" in md
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert sorted({r["variant"] for r in rows}) == sorted(names)
    assert all(r["recall_happy"] != "" for r in rows if not r["error"])


def test_bench_accuracy_matches_hand_computation(full_run, region_data, model_dir):
    from fer_edge.data.load import load_arrays
    from fer_edge.data.readers import open_dataset
    from fer_edge.interpreter import TFLiteModel

    res, _ = full_run
    ds = open_dataset(region_data)
    meta = read_metadata(model_dir / "model_int8.tflite")
    x, y, _ = load_arrays(ds.split("public_test"), meta.preprocess, ds.labels)
    for v in ("fp32", "int8"):
        pred = TFLiteModel(model_dir / f"model_{v}.tflite", threads=1).predict(x).argmax(1)
        row = pick(res, model_dir, v)
        assert row.scores.accuracy == pytest.approx(float((pred == y).mean()))
        assert np.trace(np.array(row.scores.confusion)) == int((pred == y).sum())
        assert sum(map(sum, row.scores.confusion)) == len(y) == 45
    # the data are easy: a working model is well above chance, and int8 tracks the float model
    assert pick(res, model_dir, "float").scores.accuracy > 0.8
    assert pick(res, model_dir, "int8").scores.agreement > 0.9


def test_bench_reference_latency_and_kernels(full_run, model_dir):
    res, _ = full_run
    flt, fp32, int8 = (pick(res, model_dir, v) for v in ("float", "fp32", "int8"))
    assert flt.is_reference and flt.kind == "keras"
    assert int8.reference == flt.name and fp32.reference == flt.name
    for row in (flt, fp32, int8):
        sp = row.speed[1]
        assert sp.ok and sp.isolated, sp.error
        assert 0 < sp.p50_ms <= sp.p95_ms <= sp.p99_ms
        assert sp.fps > 0 and sp.cold_start_ms > sp.p50_ms and (sp.n_runs == 20 or sp.stopped_by == "time")
        assert sp.peak_rss_mb > 0 and sp.rss_delta_mb >= 0
    k = int8.speed[1].kernels
    assert k["xnnpack"] and k["int8_ops"] > 0 and k["ops"]["CONV_2D"] == 2
    assert fp32.speed[1].kernels["float_ops"] > 0 and fp32.speed[1].kernels["int8_ops"] == 0
    # each variant is measured in its own process: TensorFlow's peak memory is not charged to LiteRT
    assert flt.speed[1].peak_rss_mb > 2 * fp32.speed[1].peak_rss_mb
    assert res.recommendation[fp32.group]["variant"] in (fp32.name, int8.name)


def test_bench_corrupt_model_is_an_error_row(full_run):
    res, out = full_run
    broken = [v for v in res.variants if v.error]
    assert len(broken) == 1 and Path(broken[0].path).parent.name.startswith("broken")
    assert "cannot load" in broken[0].error and broken[0].speed == {}
    assert "ERROR" in (out / "bench.md").read_text()


# ------------------------------------------------------------------------------------------ gate (CLI)


@pytest.fixture(scope="module")
def swapped_dir(model_dir, tmp_path_factory) -> Path:
    """fp32 (stands in as reference) and an int8 whose metadata swaps happy and sad: two classes collapse."""
    d = tmp_path_factory.mktemp("swapped")
    shutil.copy(model_dir / "model_fp32.tflite", d / "model_fp32.tflite")
    _copy_with_meta(model_dir / "model_int8.tflite", d / "model_int8.tflite", labels=["angry", "sad", "happy"])
    return d


def test_gate_fails_naming_the_fallen_classes(swapped_dir, region_data, tmp_path, capsys):
    from fer_edge.cli import main

    rc = main(["bench", str(swapped_dir), "--data", str(region_data), "--no-speed", "--no-plots",
               "--out", str(tmp_path), "--max-drop", "50", "--max-class-drop", "10"])
    err = capsys.readouterr().err
    assert rc == 6, err
    assert "recall of class 'happy'" in err and "recall of class 'sad'" in err and "'angry'" not in err
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["gate"]["checked"] and not doc["gate"]["passed"]
    ref = next(v for v in doc["variants"] if v["is_reference"])
    assert ref["variant"] == "fp32" and "stands in" in " ".join(ref["notes"])


def test_gate_passes_for_the_real_int8(model_dir, region_data, tmp_path):
    from fer_edge.cli import main

    rc = main(["bench", str(model_dir / "model_fp32.tflite"), str(model_dir / "model_int8.tflite"),
               "--data", str(region_data), "--no-speed", "--no-plots", "--out", str(tmp_path),
               "--max-drop", "5", "--max-class-drop", "10"])
    assert rc == 0
    assert json.loads((tmp_path / "bench.json").read_text())["gate"]["passed"]


def test_data_class_missing_from_model_is_named(model_dir, tmp_path):
    from fer_edge.bench import run_bench

    data = write_region_tree(tmp_path / "d", 12, seed=1)
    (data / "public_test" / "fear").mkdir()
    shutil.copy(next((data / "public_test" / "sad").iterdir()), data / "public_test" / "fear" / "x.png")
    res = run_bench([model_dir / "model_fp32.tflite"], data, speed=False)
    assert "'fear' (1 images)" in res.variants[0].error and "angry, happy, sad" in res.variants[0].error


# ------------------------------------------------------------------------------------------ device side


def test_tflite_only_bench_never_imports_tensorflow(model_dir, region_data, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        from fer_edge.bench import run_bench
        import fer_edge.bench.cli
        r = run_bench([{str(model_dir / 'model_fp32.tflite')!r}, {str(model_dir / 'model_int8.tflite')!r}],
                      {str(region_data)!r}, threads=(1,), runs=5, warmup=1, max_seconds=0.2,
                      out={str(tmp_path)!r}, plots=False)
        assert all(v.ok and v.speed[1].ok for v in r.variants), [(v.error, v.speed) for v in r.variants]
        print(json.dumps({{"tf": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                          "ref": [v.name for v in r.variants if v.is_reference]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"tf": False, "keras": False, "ref": ["fp32"]}
    assert "fp32 TFLite standing in" in (tmp_path / "bench.md").read_text()


# ------------------------------------------------------------------------------------------ units


def test_threads_never_exceed_usable_cores():
    keep, warns = plan_threads([4, 1, 2, 2], cores=2)
    assert keep == [1, 2] and "skipped 4" in warns[0]
    keep, warns = plan_threads([8], cores=2)
    assert keep == [2] and "skipped 8" in warns[0]


def test_measure_is_bounded_by_runs_and_time():
    lat = measure(lambda: None, warmup=1, runs=50, max_seconds=10)
    assert lat.n_runs == 50 and lat.stopped_by == "runs"
    import time

    slow = measure(lambda: time.sleep(0.002), warmup=0, runs=10_000, max_seconds=0.05)
    assert 20 <= slow.n_runs < 10_000 and slow.stopped_by == "time" and slow.p50_ms >= 2.0


def test_kernel_report_finds_ops_outside_the_delegate():
    f32, i8 = np.float32, np.int8
    tensors = [{"index": i, "dtype": d} for i, d in enumerate([f32, i8, i8, i8, i8, f32, i8])]
    ops = [
        {"index": 0, "op_name": "QUANTIZE", "inputs": [0], "outputs": [1]},
        {"index": 1, "op_name": "CONV_2D", "inputs": [1, 6], "outputs": [2]},
        {"index": 2, "op_name": "HARD_SWISH", "inputs": [2], "outputs": [3]},
        {"index": 3, "op_name": "CONV_2D", "inputs": [3, 6], "outputs": [4]},
        {"index": 4, "op_name": "DEQUANTIZE", "inputs": [4], "outputs": [5]},
        {"index": 5, "op_name": "DELEGATE", "inputs": [1, 6], "outputs": [2]},
        {"index": 6, "op_name": "DELEGATE", "inputs": [3, 6], "outputs": [4]},
    ]
    rep = analyse_ops(ops, tensors)
    assert rep.delegate_partitions == 2 and rep.delegated_ops == 2
    assert rep.not_delegated == {"QUANTIZE": 1, "HARD_SWISH": 1, "DEQUANTIZE": 1}
    assert rep.int8_ops == 4 and rep.float_ops == 1


def test_op_analysis_reads_the_dtypes_the_export_is_checked_by():
    """One analysis (fer_edge.ops) for the kernels and for the export's checks: I/O and weight dtypes, float ops
    before the last DEQUANTIZE (outside a float head), float tensors; DELEGATE nodes are not model ops."""
    from fer_edge.convert.export import verify
    from fer_edge.errors import ModelError

    f32, i8, i32 = np.float32, np.int8, np.int32
    tensors = [{"index": i, "dtype": d} for i, d in enumerate([i8, i8, i8, i8, f32, f32, f32, f32, i32])]
    ops = [
        {"index": 0, "op_name": "CONV_2D", "inputs": [0, 2, 8], "outputs": [1]},
        {"index": 1, "op_name": "DEQUANTIZE", "inputs": [1], "outputs": [4]},
        {"index": 2, "op_name": "FULLY_CONNECTED", "inputs": [4, 5], "outputs": [6]},
        {"index": 3, "op_name": "SOFTMAX", "inputs": [6], "outputs": [7]},
        {"index": 4, "op_name": "DELEGATE", "inputs": [0, 2], "outputs": [1]},
    ]
    rep = analyse_ops(ops, tensors, inputs=[tensors[0]], outputs=[tensors[7]])
    assert rep.input_dtype == "int8" and rep.output_dtype == "float32"
    assert rep.weight_dtypes == ["float32", "int8"] and rep.conv_weight_dtypes == ["int8"]
    assert rep.float_ops_outside_head == [] and rep.float_tensors == 4
    assert "DELEGATE" not in rep.ops and rep.total_ops == 4 and rep.delegated_ops == 1
    verify("int8", rep)                                            # the float-head int8 export passes
    with pytest.raises(ModelError, match="not fully integer"):
        verify("int8", analyse_ops(ops, tensors, inputs=[tensors[0]], outputs=[tensors[3]]))
    # a float op before the last DEQUANTIZE is float outside the head
    early = [{**ops[0], "inputs": [4, 2]}, *ops[1:]]
    assert analyse_ops(early, tensors).float_ops_outside_head == ["CONV_2D"]
    with pytest.raises(ModelError, match="non-builtin"):
        verify("fp32", analyse_ops([{"index": 0, "op_name": "FlexConv2D", "inputs": [4], "outputs": [5]}], tensors))


def test_pareto_front():
    pts = [(1.0, 70.0), (2.0, 72.0), (3.0, 71.0), (0.5, 60.0), (4.0, 80.0)]
    assert pareto_front(pts) == [3, 0, 1, 4]


def test_keras_reference_without_tensorflow_is_an_error_row_and_fp32_stands_in(model_dir, region_data, tmp_path):
    """A board: the .keras is listed but TensorFlow/Keras cannot be imported."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["keras"] = None        # import keras -> ImportError, as on a board without it
        sys.modules["tensorflow"] = None
        from fer_edge.bench import run_bench
        r = run_bench([{str(model_dir)!r}], {str(region_data)!r}, out={str(tmp_path)!r}, speed=False, plots=False)
        print(json.dumps({{v.name: [v.error, v.is_reference, v.reference] for v in r.variants}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "needs TensorFlow/Keras" in got["float"][0]
    assert got["fp32"] == [None, True, None] and got["int8"] == [None, False, "fp32"]
    assert "fp32 TFLite standing in" in (tmp_path / "bench.md").read_text()


def test_in_process_timing_is_marked_not_isolated(model_dir, region_data):
    from fer_edge.bench import run_bench

    res = run_bench([model_dir / "model_int8.tflite"], region_data, isolate=False, plots=False, **FAST)
    sp = res.variants[0].speed[1]
    assert sp.ok and not sp.isolated and sp.peak_rss_mb is None and sp.kernels["int8_ops"] > 0


def test_clean_figures_leave_out_test_images_copied_in_train(model_dir, tmp_path):
    """A test split with 6 exact copies of training images and a conflicting-label pair: the clean figure is
    scored on the rest, and equals the hand computation on exactly those images."""
    import cv2

    from fer_edge.bench import run_bench
    from fer_edge.data.load import load_arrays
    from fer_edge.data.readers import open_dataset
    from fer_edge.interpreter import TFLiteModel

    root = tmp_path / "data"
    write_region_tree(root, 40, seed=5)                                # public_test/<class>/img_NNN.png
    x, y = region_images(30, seed=6)
    for i, (img, c) in enumerate(zip(x, y)):
        d = root / "train" / LABELS[c]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"tr_{i:03d}.png"), img[:, :, 0])
    copied = []
    for i in range(6):                                                 # train images re-appear in the test split
        c = LABELS[y[i]]
        dst = root / "public_test" / c / f"copy_{i}.png"
        shutil.copy(root / "train" / c / f"tr_{i:03d}.png", dst)
        copied.append(dst)
    # the same test picture under two labels
    src = next((root / "public_test" / "angry").glob("img_*.png"))
    conflict = root / "public_test" / "happy" / "conflict.png"
    shutil.copy(src, conflict)
    res = run_bench([model_dir / "model_fp32.tflite"], root, speed=False, plots=False)
    assert res.data["n"] == 40 + 6 + 1 and res.data["clean_n"] == 40 - 1
    assert "without its 8 image(s)" in res.data["clean_note"]
    row = res.variants[0]
    ds = open_dataset(root)
    keep = [s for s in ds.split("public_test") if Path(s.key).name not in
            {p.name for p in copied} | {"conflict.png", src.name}]
    meta = read_metadata(model_dir / "model_fp32.tflite")
    xk, yk, _ = load_arrays(keep, meta.preprocess, ds.labels)
    pred = TFLiteModel(model_dir / "model_fp32.tflite", threads=1).predict(xk).argmax(1)
    assert row.clean_scores.n == len(keep) == 39
    assert row.clean_scores.accuracy == pytest.approx(float((pred == yk).mean()))
    off = run_bench([model_dir / "model_fp32.tflite"], root, speed=False, plots=False, clean=False)
    assert off.variants[0].clean_scores is None and off.data["clean_note"] == ""
