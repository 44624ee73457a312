"""Each default exists once: the settings trees (fer_edge.convert.settings.ConvertConfig and
fer_edge.bench.settings.BenchConfig on the host, fer_edge.runtime.config.DaemonConfig and the plugin configs it is made of on the board) hold every default; the
CLI, the Python API and the training code read theirs from there. These tests compare, field by field, what
each of them does when nothing is given with the tree - so a second default written anywhere fails here.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer
import yaml
from typer.main import get_command

from fer_edge.cli import app, main

# A typed flag's default is "not typed" (None, False for a switch, () for a repeatable option): the tree fills it.
UNSET = (None, False, ())


def _command(name: str):
    """The command typer builds for `fer-edge NAME` (its params: .opts, .default, .help)."""
    return get_command(app).commands[name]


@pytest.mark.parametrize("name", ["convert", "run", "bench", "explain"])
def test_cli_options_carry_no_defaults_of_their_own(name):
    for param in _command(name).params:
        if param.param_type_name == "option":
            assert param.default in UNSET, f"fer-edge {name} {param.opts[0]} has its own default {param.default!r}"


# --- host: fer-edge convert ----------------------------------------------------------------------------------

def _printed_convert(capsys, *args: str) -> dict:
    assert main(["convert", *args, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_convert_print_config_is_the_tree_and_does_no_work(capsys, monkeypatch):
    from fer_edge.convert import api
    from fer_edge.convert.settings import ConvertConfig, default

    monkeypatch.setattr(api, "convert", lambda *a, **k: pytest.fail("--print-config converted"))
    printed = _printed_convert(capsys)
    assert set(printed) == set(ConvertConfig.model_fields)
    for name in ConvertConfig.model_fields:
        want = "paper" if name == "preset" else default(name)      # mobilenet's auto preset is the paper's
        want = ConvertConfig.model_construct(**{name: want}).model_dump(mode="json", include={name})[name]
        assert printed[name] == want, f"fer-edge convert's {name} is {printed[name]!r}, the tree's {want!r}"


def test_convert_flags_and_presets_show_in_print_config(capsys):
    from fer_edge.convert.presets import PRESETS

    printed = _printed_convert(capsys, "--model", "face_vgg_tiny", "--epochs", "3", "--no-augment", "--int8")
    assert printed["preset"] == "scratch" and printed["epochs"] == 3 and printed["augment"] is False
    assert printed["variants"] == ["int8"]
    for key, value in PRESETS["scratch"].items():     # the preset fills what was not typed
        if key != "epochs":
            assert printed[key] == value, key


def test_convert_api_and_training_defaults_are_the_trees():
    from fer_edge.convert import backbones
    from fer_edge.convert.api import ConvertConfig, classifier_builder, distill_weight, train_config
    from fer_edge.convert.distill import DistillSettings
    from fer_edge.convert.settings import default, effective
    from fer_edge.convert.train import TrainConfig

    api = ConvertConfig()
    for name in ConvertConfig.model_fields:
        assert effective(api, name) == default(name), name
    # TrainConfig: every field the tree has is the tree's default; a ConvertConfig() trains with TrainConfig()
    shared = [f.name for f in dataclasses.fields(TrainConfig) if f.name in ConvertConfig.model_fields]
    assert len(shared) >= 20
    plain = TrainConfig()
    for name in shared:
        if name != "distill_weight":        # 0 without teachers; with them the tree's (below)
            assert getattr(plain, name) == default(name), f"TrainConfig.{name}"
    assert train_config(api) == plain
    assert distill_weight(ConvertConfig(teachers=["t.tflite"])) == default("distill_weight")
    assert DistillSettings(("t",)).temperature == default("distill_temperature")
    assert DistillSettings(("t",)).mirror == default("teacher_mirror")
    sig = inspect.signature(backbones.build_classifier).parameters
    assert sig["dropout"].default == default("dropout") and sig["bn_momentum"].default == default("bn_momentum")
    assert classifier_builder is not None


# Fields whose flag is named otherwise (a --no-X switch, a repeatable singular, one switch per variant).
CONVERT_FLAG_NAMES = {"lrs": "lr", "teachers": "teacher", "variants": "int8", "class_weights": "no_class_weights",
                      "augment": "no_augment", "eval_test": "no_test", "resume": "no_resume",
                      "teacher_mirror": "no_teacher_mirror", "logit_adjust": "no_logit_adjust"}


def test_every_convert_setting_has_a_flag():
    from fer_edge.convert.settings import ConvertConfig

    names = {p.name for p in _command("convert").params}
    missing = [f for f in ConvertConfig.model_fields if CONVERT_FLAG_NAMES.get(f, f) not in names]
    assert not missing, f"ConvertConfig fields without a fer-edge convert flag: {missing}"


def test_convert_help_is_the_trees_descriptions():
    from fer_edge.convert.settings import description

    helps = {p.name: p.help or "" for p in _command("convert").params}
    assert description("lr_floor").split(" (default")[0].lower() in helps["lr_floor"].lower()
    assert "(default 0.05)" in helps["lr_floor"] and "presets: scratch 0.01, finetune 0.02" in helps["lr_floor"]
    assert "(default 8)" in helps["fine_tune_epochs"] and "scratch 60" in helps["fine_tune_epochs"]


def test_every_recipe_key_is_a_tree_field():
    """The recipes in converters/ set tree fields by name (validated against ConvertConfig when loaded)."""
    from pathlib import Path

    from fer_edge.convert.settings import ConvertConfig

    recipes = sorted((Path(__file__).resolve().parents[1] / "converters").glob("*.yaml"))
    assert recipes
    for path in recipes:
        convert = (yaml.safe_load(path.read_text()) or {}).get("convert") or {}
        assert set(convert) <= set(ConvertConfig.model_fields), (path.name, set(convert) - set(ConvertConfig.model_fields))


# --- host: fer-edge bench -------------------------------------------------------------------------------------

BENCH_ARGS = ("runs/some-model", "--data", "synthetic")


def _printed_bench(capsys, *args: str) -> dict:
    assert main(["bench", *BENCH_ARGS, *args, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_bench_print_config_is_the_tree_and_does_no_work(capsys, monkeypatch, tmp_path):
    from fer_edge.bench import core, photo_path
    from fer_edge.bench.settings import BenchConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(core, "run_bench", lambda *a, **k: pytest.fail("--print-config benchmarked"))
    monkeypatch.setattr(photo_path, "run_photo_path", lambda *a, **k: pytest.fail("--print-config scored"))
    printed = _printed_bench(capsys)
    assert printed == BenchConfig(data="synthetic").model_dump(mode="json")
    assert printed["tta"] == ["model"] and printed["out"] == "bench_results" and printed["threads"] == [1]
    assert not (tmp_path / "bench_results").exists()               # not even the --out folder
    printed = _printed_bench(capsys, "--threads", "1,2", "--no-plots", "--tta", "none,flip", "--device-path")
    assert printed["threads"] == [1, 2] and printed["plots"] is False and printed["tta"] == ["none", "flip"]
    assert printed["device_path"] is True


def test_bench_print_config_through_the_console_script(tmp_path):
    """`python -m fer_edge.cli` is the console script's entry point, run in this checkout."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "fer_edge.cli", "bench", *BENCH_ARGS, "--runs", "7",
                           "--print-config"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["runs"] == 7 and printed["warmup"] == 10 and printed["tta"] == ["model"]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, option", [(("--threads", "a,b"), "--threads"), (("--threads", "0"), "--threads"),
                                          (("--color", "blue"), "--color"), (("--tta", "flp"), "--tta"),
                                          (("--runs", "0"), "--runs"), (("--accelerator", "tpu"), "--accelerator")])
def test_bench_bad_value_is_one_line_naming_the_option(capsys, args, option):
    assert main(["bench", *BENCH_ARGS, *args, "--print-config"]) == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert captured.out == "" and "Traceback" not in captured.err
    assert err.startswith("error: invalid option(s): ") and f"{option}:" in err and args[1] in err, err
    assert len(captured.err.strip().splitlines()) == 1


def test_bench_api_checks_as_the_command_does():
    from fer_edge.bench.core import run_bench
    from fer_edge.errors import ConfigError

    # checked before any model or data is read
    with pytest.raises(ConfigError, match=r"^invalid setting\(s\): threads: .*'a,b'"):
        run_bench(["nowhere.tflite"], None, threads="a,b")
    with pytest.raises(ConfigError, match=r"tta: unknown test-time augmentation 'flp'"):
        run_bench(["nowhere.tflite"], None, tta=["flp"])


def _defaults(fn) -> dict:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


def test_bench_api_defaults_are_the_trees():
    from fer_edge.bench.core import run_bench
    from fer_edge.bench.photo_path import run_photo_path
    from fer_edge.bench.settings import BenchConfig, default

    tree = set(BenchConfig.model_fields)
    bench = _defaults(run_bench)
    # out: the API's None (no files) is documented as its own; console is no setting
    assert set(bench) - tree == {"console"} and "out" in bench and bench["out"] is None
    for name, value in bench.items():
        if name not in ("console", "out"):
            assert value == default(name), f"run_bench's {name} is {value!r}, the tree's {default(name)!r}"
    # run_photo_path's own names for the tree's fields
    names = {"scale": "frame_scale", "tune": "tune_crop", "write": "write_geometry", "kind": "data_kind"}
    for name, value in _defaults(run_photo_path).items():
        if name not in ("console", "out", "threads"):
            field = names.get(name, name)
            assert value == default(field), f"run_photo_path's {name} is {value!r}, the tree's {default(field)!r}"


def test_explain_defaults_are_its_trees(monkeypatch):
    """run_explain's keyword defaults and what the command passes when nothing is typed are ExplainConfig's."""
    from fer_edge.bench import explain
    from fer_edge.bench.settings import BenchConfig, ExplainConfig

    tree = {n: f.default for n, f in ExplainConfig.model_fields.items()}
    api = _defaults(explain.run_explain)
    assert set(api) - set(tree) == {"console"}
    assert {n: v for n, v in api.items() if n != "console"} == tree
    assert tree["data_kind"] == BenchConfig.model_fields["data_kind"].default   # one data-kind default
    seen = {}
    monkeypatch.setattr(explain, "run_explain", lambda models, data, console=None, **kw: seen.update(kw))
    assert main(["explain", "m.tflite", "--data", "synthetic"]) == 0
    assert seen == tree
    assert main(["explain", "m.tflite", "--data", "synthetic", "--n", "0"]) == 2   # the tree's range, one line


def test_bench_callers_read_the_tree():
    """The suites' and recipes' timing budget, the probe's and the timer's are the bench's."""
    from fer_edge.bench.probe import run_probe
    from fer_edge.bench.settings import default
    from fer_edge.bench.suite import Suite
    from fer_edge.bench.timing import measure
    from fer_edge.detectors import DEFAULT_DETECTOR
    from fer_edge.recipes.recipe import Recipe
    from fer_edge.runtime.config import ClassifierConfig

    suite = Suite(name="s", data="d")
    assert (tuple(suite.threads), suite.runs, suite.warmup, suite.max_seconds) == tuple(
        default(n) for n in ("threads", "runs", "warmup", "max_seconds"))
    assert Recipe.model_fields["bench_runs"].default == default("runs")
    assert Recipe.model_fields["bench_max_seconds"].default == default("max_seconds")
    for fn in (run_probe, measure):
        d = _defaults(fn)
        assert (d["warmup"], d["runs"], d["max_seconds"]) == (default("warmup"), default("runs"),
                                                              default("max_seconds")), fn.__name__
    # the bench runs what the board runs: its detector and accelerator
    assert default("detector") == DEFAULT_DETECTOR
    assert default("accelerator") == ClassifierConfig.model_fields["accelerator"].default


def test_every_bench_setting_has_a_flag_and_its_help():
    from fer_edge.bench.settings import BenchConfig, description

    params = {p.name: p for p in _command("bench").params}
    assert set(BenchConfig.model_fields) <= set(params)
    for name in BenchConfig.model_fields:
        assert description(name)[:30].lower() in (params[name].help or "").lower(), name
    assert "(default 200)" in params["runs"].help and "(default model)" in params["tta"].help


# --- board: fer-edge run, the detectors, sources and sinks -------------------------------------------------------

def _printed_run(capsys, *args: str) -> dict:
    assert main(["run", "--source", "rtsp://camera.invalid/live", *args, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_run_print_config_is_the_tree_and_does_no_work(capsys, monkeypatch):
    from fer_edge.runtime import daemon
    from fer_edge.runtime.config import DaemonConfig

    monkeypatch.setattr(daemon.Daemon, "run", lambda self: pytest.fail("--print-config ran the daemon"))
    printed = _printed_run(capsys)
    assert printed == DaemonConfig(source={"type": "video", "path": "rtsp://camera.invalid/live"}).model_dump(mode="json")


def test_run_flags_default_to_the_fields_they_set(capsys):
    from fer_edge.runtime.cli import FLAGS, setting

    printed = _printed_run(capsys)
    for flag, (section, key) in FLAGS.items():
        default = setting(section, key).default
        assert printed[section][key] == (str(default) if key == "model" and default else default), flag
    printed = _printed_run(capsys, "--detector", "blazeface", "--score-threshold", "0.8", "--threads", "2")
    assert printed["detector"]["type"] == "blazeface" and printed["detector"]["score_threshold"] == 0.8
    assert printed["classifier"]["threads"] == 2


def test_one_face_detector_threshold():
    """The issue's example: the detector's score threshold was 0.7 in the detector and 0.6 in the config."""
    from fer_edge.detectors import DETECTORS, DetectorConfig, detector_configs
    from fer_edge.runtime.config import DaemonConfig

    for cls in DETECTORS.objects():
        assert cls.Config in detector_configs()
        params = inspect.signature(cls.__init__).parameters
        assert "score_threshold" not in params            # a detector takes its Config: no defaults of its own
        for field in DetectorConfig.model_fields:          # every detector starts from the same shared defaults
            if field != "type":
                assert cls.Config.model_fields[field].default == DetectorConfig.model_fields[field].default
    cfg = DaemonConfig(source={"type": "video", "path": "x"})
    assert cfg.detector.score_threshold == DetectorConfig.model_fields["score_threshold"].default


def test_plugin_constructors_read_their_configs_defaults():
    from fer_edge.detectors import DetectorConfig
    from fer_edge.runtime.capture import Backoff
    from fer_edge.runtime.classifier import Classifier
    from fer_edge.runtime.config import ClassifierConfig
    from fer_edge.runtime.pipeline import Pipeline
    from fer_edge.runtime.sources import SOURCES, SourceConfig, source_configs

    for cls in SOURCES.objects():
        assert cls.Config in source_configs() and callable(cls.from_config)
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if name in cls.Config.model_fields and param.default is not inspect.Parameter.empty:
                assert param.default == cls.Config.model_fields[name].default, (cls.__name__, name)
    pic = inspect.signature(SOURCES.get("picamera2").__init__).parameters
    assert pic["detect_width"].default == DetectorConfig.model_fields["input_width"].default
    assert Backoff().initial == SourceConfig.model_fields["retry_initial_s"].default
    assert Backoff().maximum == SourceConfig.model_fields["retry_max_s"].default
    pipe = inspect.signature(Pipeline.__init__).parameters
    assert pipe["detect_every"].default == DetectorConfig.model_fields["every"].default
    assert pipe["align"].default == ClassifierConfig.model_fields["align"].default
    clf = inspect.signature(Classifier.__init__).parameters
    for name, param in clf.items():
        if name in ClassifierConfig.model_fields and name != "model":
            assert param.default == ClassifierConfig.model_fields[name].default, name


def test_sections_are_the_union_of_the_registered_plugins():
    import typing

    from fer_edge.detectors import DETECTORS
    from fer_edge.runtime.config import DaemonConfig, DetectorConfigT, SinkConfigT, SourceConfigT
    from fer_edge.runtime.sinks import SINKS
    from fer_edge.runtime.sources import SOURCES

    def members(union):
        return set(typing.get_args(typing.get_args(union)[0]))

    for union, registry in ((SourceConfigT, SOURCES), (DetectorConfigT, DETECTORS), (SinkConfigT, SINKS)):
        assert members(union) == {cls.Config for cls in registry.objects()}
    assert DaemonConfig.model_fields["outputs"].annotation == list[SinkConfigT]
    # every name a detector is registered under is a `type` its section accepts
    for name in DETECTORS.names():
        assert DaemonConfig(source={"type": "video", "path": "x"}, detector={"type": name}).detector.type == name


def test_doctor_accelerator_default_is_the_classifiers():
    from fer_edge.runtime.config import ClassifierConfig

    param = next(p for p in _command("doctor").params if p.name == "accelerator")
    assert param.default is None and f"default {ClassifierConfig.model_fields['accelerator'].default}" in param.help
    assert isinstance(app, typer.Typer)
