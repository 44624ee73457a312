"""Recipes (`fer-edge recipe`): validation, a tiny row end to end, subject-disjoint CV, the Table 1 renderer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, load_benchmark, region_images
from fer_edge.errors import ConfigError
from fer_edge.recipes import load_recipe, parse_recipe, scaled_epochs

LABELS = ["angry", "happy", "sad"]
SIZE = 32
TINY_CONVERT = {"preset": "paper", "input_size": SIZE, "epochs": 1, "fine_tune_epochs": 1, "lrs": [2e-3], "augment": False,
                "calib_images": 40, "batch_size": 32}


def _write(path: Path, img: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img[:, :, 0])


def _write_recipe(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def shared_tree(tmp_path_factory) -> Path:
    """A generated stand-in for ../shared: data/tiny (train/ + test/) and data/ck (CK+-style names)."""
    root = tmp_path_factory.mktemp("shared")
    for split, n, seed in (("train", 180, 0), ("test", 45, 1)):
        x, y = region_images(n, SIZE, seed)
        for i, (img, c) in enumerate(zip(x, y)):
            _write(root / "data" / "tiny" / split / LABELS[c] / f"{split}_{i:04d}.png", img)
    x, y = region_images(96, SIZE, 5)
    for i, (img, c) in enumerate(zip(x, y)):
        # 8 subjects, several sequences each: S0xx_sequence_frame, as CK+ names them
        _write(root / "data" / "ck" / LABELS[c] / f"S{10 + i % 8:03d}_{i // 8:03d}_{i:08d}.png", img)
    return root


# -- validation ---------------------------------------------------------------------------------------------

BASE = {"row": "r", "data": "data/tiny", "model": "mobilenet"}
# The end-to-end rows train the tiny face-native preset (seconds) with the paper's recipe, as the ImageNet
# backbones' rows do.
TINY = {**BASE, "model": "face_vgg_tiny"}


def test_unknown_top_level_key_is_named_with_a_hint():
    with pytest.raises(ConfigError) as ei:
        parse_recipe({**BASE, "modle_file": "x.h5"}, "r.yaml")
    msg = str(ei.value)
    assert "r.yaml" in msg and "'modle_file'" in msg and "did you mean 'model_file'" in msg


def test_unknown_convert_key_is_named_with_a_hint():
    with pytest.raises(ConfigError) as ei:
        parse_recipe({**BASE, "convert": {"fine_tune_epoch": 3}}, "r.yaml")
    msg = str(ei.value)
    assert "convert.fine_tune_epoch" in msg and "did you mean 'fine_tune_epochs'" in msg


def test_nested_cv_key_and_bad_values_are_named():
    with pytest.raises(ConfigError, match=r"cv\.fold'.*did you mean 'folds'"):
        parse_recipe({**BASE, "cv": {"fold": 10}})
    with pytest.raises(ConfigError, match=r"convert\.lrs"):
        parse_recipe({**BASE, "convert": {"lrs": [5.0]}})
    with pytest.raises(ConfigError, match="exactly one of `model`"):
        parse_recipe({"row": "r", "data": "d"})
    with pytest.raises(ConfigError, match="convert.model is set by the recipe's top-level keys"):
        parse_recipe({**BASE, "convert": {"model": "inception_v3"}})


def test_every_committed_recipe_validates():
    files = sorted((ROOT / "converters").glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        r = load_recipe(f)
        assert r.row
    paper = {f.stem: load_recipe(f).paper for f in files}
    assert paper["fer2013_mobilenet_unweighted"].test_accuracy == 71.33
    assert paper["fer2013_mobilenet"].test_accuracy == 60.91


def test_a_toml_recipe_reads_like_its_yaml_or_says_what_python_it_needs(tmp_path, monkeypatch):
    import builtins
    import sys

    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text('row: "tiny"\ndata: synthetic\nmodel: face_vgg_tiny\nconvert:\n  epochs: 1\n')
    toml_file = tmp_path / "r.toml"
    toml_file.write_text('row = "tiny"\ndata = "synthetic"\nmodel = "face_vgg_tiny"\n[convert]\nepochs = 1\n')
    if sys.version_info >= (3, 11):
        assert load_recipe(toml_file) == load_recipe(yaml_file)
    real_import = builtins.__import__

    def no_tomllib(name, *args, **kwargs):
        if name == "tomllib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "tomllib", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_tomllib)
    with pytest.raises(ConfigError, match="TOML recipes need Python 3.11"):
        load_recipe(toml_file)


def test_tta_is_checked_and_only_for_cv_recipes():
    with pytest.raises(ConfigError, match="flip"):
        parse_recipe({**BASE, "cv": {"folds": 2}, "tta": ["mirror"]})
    with pytest.raises(ConfigError, match="cv recipes only"):
        parse_recipe({**BASE, "tta": ["flip"]})
    assert parse_recipe({**BASE, "cv": {"folds": 2}, "tta": ["flip"]}).tta == ["none", "flip"]


def test_budget_scale_keeps_a_phase_alive_and_an_off_phase_off():
    assert [scaled_epochs(n, 0.25) for n in (0, 1, 3, 24)] == [0, 1, 1, 6]


# -- end to end ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_row(shared_tree, tmp_path_factory):
    from fer_edge.cli import main

    base = tmp_path_factory.mktemp("recipe")
    recipe = _write_recipe(base / "tiny_row.yaml", {
        **TINY, "convert": TINY_CONVERT, "train_eval_limit": 60, "bench_runs": 20, "bench_max_seconds": 0.3,
        "paper": {"test_accuracy": 50.0, "source": "a test"}})
    rc = main(["recipe", str(recipe), "--shared", str(shared_tree), "--out", str(base / "out"),
               "--results", str(base / "results")])
    assert rc == 0
    return {"base": base, "recipe": recipe, "row": json.loads((base / "results" / "tiny_row.json").read_text()),
            "shared": shared_tree}


def test_tiny_recipe_writes_its_row(tiny_row):
    row = tiny_row["row"]
    assert row["recipe"] == "tiny_row" and row["split"] == "test" and row["n_test"] == 45
    assert row["weights"] == "none" and row["input_size"] == SIZE and row["lrs"] == [2e-3]
    for part in ("float", "int8"):
        assert 0 <= row[part]["accuracy"] <= 100 and set(row[part]["recall"]) == set(LABELS)
    assert row["train"]["n"] == 60 and row["train"]["accuracy"] is not None
    assert row["int8_p50_ms"] > 0 and row["threads"] == 2
    int8_file = Path(row["convert_dir"]) / "model_int8.tflite"
    assert row["int8_size_bytes"] == int8_file.stat().st_size
    assert row["train_wall_s"] > 0 and row["paper"]["test_accuracy"] == 50.0
    # the int8 figures are the real int8 model's: rescore it here
    from fer_edge.bench import run_bench

    res = run_bench([int8_file], str(tiny_row["shared"] / "data" / "tiny"), split="test", speed=False, plots=False)
    assert round(100 * res.variants[0].scores.accuracy, 2) == row["int8"]["accuracy"]


def test_from_convert_benches_without_training_and_records_deviations(tiny_row):
    from fer_edge.recipes import run_recipe

    base = tiny_row["base"]
    recipe = _write_recipe(base / "other.yaml", {**TINY, "convert": {**TINY_CONVERT, "batch_size": 64},
                                                 "train_eval_limit": 30, "bench_runs": 10, "bench_max_seconds": 0.2})
    conv = Path(tiny_row["row"]["convert_dir"])
    before = (conv / "model_int8.tflite").stat().st_mtime_ns
    row = run_recipe(recipe, out=base / "out2", from_convert=conv, results=base / "results",
                     shared=tiny_row["shared"])
    assert row["from_convert"] is True and row["deviations"] == ["batch_size: recipe 64, run 32"]
    assert (conv / "model_int8.tflite").stat().st_mtime_ns == before           # nothing retrained
    assert row["int8"]["accuracy"] == tiny_row["row"]["int8"]["accuracy"]
    assert row["train_wall_s"] == tiny_row["row"]["train_wall_s"]


def test_deviations_compare_preset_filled_settings():
    """A recipe that leaves the scratch preset's fields unset is no deviation from the run it trained
    (convert.json records the settings with the preset filled in); a field that differs is one."""
    from fer_edge.convert.settings import ConvertConfig
    from fer_edge.recipes.recipe import _differences

    cfg = ConvertConfig(model="face_vgg_tiny", input_size=SIZE, fine_tune_epochs=3)
    record = cfg.resolved().model_dump(mode="json")
    assert record["optimizer"] == "adamw" and cfg.optimizer is None       # the preset filled it
    assert _differences(cfg, record) == []
    assert _differences(cfg, {**record, "bn_momentum": 0.9}) == ["bn_momentum: recipe 0.99, run 0.9"]


def test_cv_keeps_subjects_apart_and_writes_summary_and_deploy_model(shared_tree, tmp_path):
    from fer_edge.metadata import read_metadata
    from fer_edge.recipes import run_recipe

    deploy = tmp_path / "models" / "ck_int8.tflite"
    recipe = _write_recipe(tmp_path / "ck_cv.yaml", {
        "row": "cv", "table": "ckplus", "data": "data/ck", "model": "face_vgg_tiny", "variants": ["int8"],
        "convert": {**TINY_CONVERT, "fine_tune_epochs": 0}, "cv": {"folds": 2, "deploy_model": str(deploy)},
        "tta": ["flip"]})
    summary = run_recipe(recipe, out=tmp_path / "out", results=tmp_path / "res", shared=shared_tree)
    assert summary["folds_done"] == 2 and summary["n_subjects"] == 8
    # the same fold models scored again with the mirror-averaged test images
    assert summary["scored"] == ["float", "int8", "float+flip", "int8+flip"]
    flip = summary["summary"]["int8+flip"]["pooled"]
    assert flip["n"] == 96 and flip["accuracy"] == pytest.approx(100 * np.trace(flip["confusion"]) / 96, abs=0.01)
    tests = [set(f["test_subjects"]) for f in summary["fold_rows"]]
    for f in summary["fold_rows"]:
        assert set(f["train_subjects"]).isdisjoint(f["test_subjects"]) and f["test_subjects"]
        assert "accuracy" in f["float"] and "accuracy" in f["int8"]
    assert tests[0].isdisjoint(tests[1]) and len(tests[0] | tests[1]) == 8
    assert sum(f["n_test"] for f in summary["fold_rows"]) == 96                # every image tested once
    s = summary["summary"]["int8"]
    accs = [f["int8"]["accuracy"] for f in summary["fold_rows"]]
    assert s["accuracy"]["mean"] == pytest.approx(np.mean(accs), abs=0.01)
    assert s["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1), abs=0.01)
    assert s["pooled"]["n"] == 96
    on_disk = json.loads((tmp_path / "res" / "ck_cv.json").read_text())
    assert on_disk["folds_done"] == 2 and "± " in (tmp_path / "res" / "ck_cv.md").read_text()
    meta = read_metadata(deploy)
    assert meta.variant == "int8" and meta.extra["cv_estimate"]["folds"] == 2
    # a rerun skips the finished folds (their results are reused, not recomputed)
    mtimes = [p.stat().st_mtime_ns for p in sorted((tmp_path / "out" / "folds").glob("*/fold.json"))]
    again = run_recipe(recipe, out=tmp_path / "out", results=tmp_path / "res2", shared=shared_tree, folds=1)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "out" / "folds").glob("*/fold.json"))] == mtimes
    assert again["fold_rows"] == json.loads(json.dumps(summary["fold_rows"][:1]))


# -- the table ----------------------------------------------------------------------------------------------

def _table1():
    return load_benchmark("table1")


def _row(name: str, acc: float, weighted: bool, paper: float | None) -> dict:
    scores = {"accuracy": acc, "mean_recall": acc - 2, "macro_f1": acc - 3, "recall": {"angry": acc, "happy": acc - 5}}
    return {"schema": "fer-edge-recipe-row/1", "recipe": name, "row": f"Row {name}", "split": "public_test",
            "n_test": 3589, "weights": "none", "input_size": 96, "class_weights": weighted, "lrs": [1e-3, 1e-4],
            "chosen_lr": 1e-4, "epochs": 12, "fine_tune_epochs": 4, "train": {"accuracy": acc + 10},
            "float": scores, "int8": {**scores, "accuracy": acc - 0.5}, "int8_p50_ms": 1.234,
            "int8_size_bytes": 300 * 1024, "latency_p50_ms": {"fp32": 2.5, "int8": 1.234}, "train_wall_s": 600,
            "threads": 2, "budget_note": "reduced",
            "paper": {"test_accuracy": paper, "source": "the paper, quoted", "note": "MobileNet"} if paper else None,
            "machine": {"cpu": "cpu", "tflite_runtime": "litert"}}


def test_table1_renders_rows_beside_the_paper(tmp_path):
    t1 = _table1()
    res = tmp_path / "table1"
    res.mkdir()
    (res / "a.json").write_text(json.dumps(_row("a", 61.0, True, 60.91)))
    (res / "b.json").write_text(json.dumps(_row("b", 55.5, False, None)))
    (res / "c_cpu.json").write_text(json.dumps(_row("c_cpu", 30.0, True, None)))  # c's CPU-budget version
    (res / "junk.json").write_text(json.dumps({"schema": "something-else"}))
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "c.yaml").write_text("row: Row c\ndata: d\nmodel: mobilenet\npaper: {test_accuracy: 74.04, "
                                    "source: quoted, note: best Inception}\nbudget_note: hours\n")
    (recipes / "a.yaml").write_text("row: Row a\ndata: d\nmodel: mobilenet\n")
    assert t1.main(["--results", str(res), "--recipes", str(recipes)]) == 0
    md = (res / "table1.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| `")]
    a = next(line for line in lines if line.startswith("| `a`"))
    assert "61.00" in a and "60.50" in a and "1.23" in a and "300" in a and "60.91" in a and "| yes |" in a
    assert "0.0001 / 0.001, 0.0001" in a
    b = next(line for line in lines if line.startswith("| `b`"))
    assert "55.50" in b and "| no |" in b
    assert not any(line.startswith("| `junk`") for line in lines)
    # the paper's figures are marked as quoted, with their source, and unrun recipes are listed
    assert "quoted, not measured here" in md and "| 74.04 | best Inception | quoted | `c` |" in md
    assert "| `c` | Row c | `fer-edge recipe converters/c.yaml` | hours A CPU-budget version of this row is in " \
           "the table: `c_cpu`. |" in md
    assert "`fer-edge recipe converters/a.yaml`" not in md
    csv_lines = (res / "table1.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("recipe,row,weights")
    # the two plots are written beside the table and linked from it
    for png in ("table1_accuracy_vs_latency.png", "table1_recall_per_class.png"):
        assert (res / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({png})" in md
