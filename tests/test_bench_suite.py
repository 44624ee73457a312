"""Benchmark suites (benchmarks/bench_suite.py) and the targets they check."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import ROOT, load_benchmark
from fer_edge.bench.result import BenchResult, Speed, VariantResult
from fer_edge.bench.suite import load_suite
from fer_edge.bench.targets import Target, check_targets
from fer_edge.errors import ConfigError
from fer_edge.metrics import score

LABELS = ["angry", "happy", "sad"]


def test_committed_fer2013_suite_states_the_issue_targets():
    suite = load_suite(ROOT / "benchmarks" / "suites" / "fer2013.yaml")
    assert suite.split == "public_test" and 2 in suite.threads and suite.data.endswith("shared/data/fer2013")
    limits = {(t.metric, t.against): (t.min, t.max, t.threads) for t in suite.targets}
    assert limits == {
        ("speedup", "fp32"): (2.0, None, 2),
        ("speedup", "float"): (10.0, None, 2),
        ("size_ratio", "fp32"): (None, 0.27, None),
        ("accuracy_drop_pp", "float"): (None, 0.5, None),
        ("mean_recall_drop_pp", "float"): (None, 1.0, None),
    }
    assert all(t.variant == "int8" for t in suite.targets)


def test_suite_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\ndata: d\nthreds: [1]\n")
    with pytest.raises(ConfigError, match="threds"):
        load_suite(bad)
    with pytest.raises(ValueError, match="exactly one of min or max"):
        Target(name="t", metric="size_ratio", min=1, max=2)


def _row(name, variant, kind, size, p50, pred, y, ref=None, is_ref=False):
    probs = np.eye(3, dtype=np.float32)[pred]
    v = VariantResult(name=name, group="g", variant=variant, kind=kind, path=f"/m/{name}", size_bytes=size,
                      labels=LABELS, is_reference=is_ref, reference=ref, scores=score(y, probs, LABELS))
    v.speed = {2: Speed(threads=2, p50_ms=p50)}
    return v


def _result(rows):
    return BenchResult(variants=rows, data={"labels": LABELS}, threads=[2], machine={}, settings={})


TARGETS = [
    Target(name="speed vs fp32", metric="speedup", variant="int8", against="fp32", threads=2, min=2.0),
    Target(name="speed vs keras", metric="speedup", variant="int8", against="float", threads=2, min=10.0),
    Target(name="size", metric="size_ratio", variant="int8", against="fp32", max=0.27),
    Target(name="acc", metric="accuracy_drop_pp", variant="int8", against="float", max=0.5),
    Target(name="recall", metric="mean_recall_drop_pp", variant="int8", against="float", max=1.0),
]


def test_targets_are_ratios_of_figures_from_the_same_run():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2, 1, 0])
    good = y.copy()
    worse = y.copy()
    worse[4] = 0                                    # one 'sad' image lost: -10 pp accuracy
    rows = [_row("float", "float", "keras", 4000, 30.0, good, y, is_ref=True),
            _row("fp32", "fp32", "tflite", 1000, 4.0, good, y, ref="float"),
            _row("int8", "int8", "tflite", 260, 1.6, worse, y, ref="float")]
    checks = {c.name: c for c in check_targets(_result(rows), TARGETS)}
    assert checks["speed vs fp32"].measured == pytest.approx(2.5) and checks["speed vs fp32"].passed
    assert checks["speed vs keras"].measured == pytest.approx(18.75) and checks["speed vs keras"].passed
    assert "Keras predict_on_batch" in checks["speed vs keras"].detail
    assert checks["size"].measured == pytest.approx(0.26) and checks["size"].passed
    assert checks["acc"].measured == pytest.approx(10.0) and checks["acc"].passed is False
    # mean recall: sad 3/4 instead of 4/4 -> mean over 3 classes drops 25/3 pp
    assert checks["recall"].measured == pytest.approx(25 / 3) and checks["recall"].status == "MISS"


def test_without_keras_the_speedup_is_not_faked_but_drops_use_the_fp32_stand_in():
    y = np.array([0, 1, 2, 2])
    rows = [_row("fp32", "fp32", "tflite", 1000, 4.0, y, y, is_ref=True),
            _row("int8", "int8", "tflite", 300, 3.0, y, y, ref="fp32")]
    checks = {c.name: c for c in check_targets(_result(rows), TARGETS)}
    assert checks["speed vs keras"].passed is None and checks["speed vs keras"].status == "n/a"
    assert checks["acc"].measured == 0 and checks["acc"].passed and "stands in for float" in checks["acc"].detail
    assert checks["speed vs fp32"].measured == pytest.approx(4 / 3) and checks["speed vs fp32"].passed is False


def _script():
    return load_benchmark("bench_suite")


def test_bench_suite_script_writes_results_and_checks_targets(tiny_tflite, tmp_path, capsys):
    from test_bench import write_region_tree

    models = tmp_path / "tiny_model"
    models.mkdir()
    for v in ("fp32", "int8"):
        shutil.copy(tiny_tflite[v], models / f"model_{v}.tflite")
    data = write_region_tree(tmp_path / "data", 15, seed=4)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""
name: tiny-suite
data: {data}
threads: [1]
runs: 10
warmup: 1
max_seconds: 0.2
model: {models}
targets:
  - {{name: int8 size, metric: size_ratio, variant: int8, against: fp32, max: 0.9}}
  - {{name: int8 1000x faster, metric: speedup, variant: int8, against: fp32, threads: 1, min: 1000}}
""")
    script = _script()
    assert script.main([str(suite), "--out-root", str(tmp_path / "results")]) == 0
    out = tmp_path / "results" / "tiny-suite-tiny_model"
    for f in ("bench.json", "bench.csv", "bench.md", "targets.md", "targets.json", "suite_run.json",
              "accuracy_vs_latency.png"):
        assert (out / f).is_file(), f
    checks = json.loads((out / "targets.json").read_text())
    size = (models / "model_int8.tflite").stat().st_size / (models / "model_fp32.tflite").stat().st_size
    assert checks[0]["measured"] == pytest.approx(size) and checks[0]["passed"]
    assert checks[1]["passed"] is False
    printed = capsys.readouterr().out
    assert "pass" in printed and "MISS" in printed
    assert script.main([str(suite), "--out-root", str(tmp_path / "results"), "--strict"]) == 1
