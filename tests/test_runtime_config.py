"""Daemon config: YAML with line numbers in errors, flags over the file, privacy, --validate-config."""

from __future__ import annotations

import textwrap

import pytest

from fer_edge.cli import main
from fer_edge.errors import ConfigError, UnknownNameError
from fer_edge.runtime.config import YamlLines, load_config, source_from_spec


def write(tmp_path, text: str):
    p = tmp_path / "fer-edge.yaml"
    p.write_text(text)
    return p


GOOD = textwrap.dedent("""\
    classifier:
      threads: 2
    source:
      type: video
      path: clip.avi
    detector:
      type: blazeface
      every: 3
    tracker:
      alpha: 0.5
    outputs:
      - type: jsonl
        path: /tmp/out.jsonl
      - type: http
        port: 8081
    """)


def test_good_file_loads_typed(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.classifier.threads == 2 and cfg.classifier.model is None
    assert cfg.source.type == "video" and cfg.source.path == "clip.avi" and cfg.source.loop is False
    assert cfg.detector.type == "blazeface" and cfg.detector.every == 3
    assert cfg.tracker.alpha == 0.5
    assert [o.type for o in cfg.outputs] == ["jsonl", "http"]
    assert cfg.outputs[1].host == "127.0.0.1" and cfg.outputs[1].preview is False  # private by default


def test_unknown_top_level_key_names_key_and_line(tmp_path):
    p = write(tmp_path, GOOD + "telemetry: true\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:16:" in msg and "unknown key 'telemetry'" in msg


def test_unknown_nested_key_names_line_and_suggests(tmp_path):
    text = GOOD.replace("  alpha: 0.5\n", "  alpha: 0.5\n  alpah: 0.3\n")
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:11:" in msg and "unknown key 'alpah' at tracker.alpah" in msg and "Did you mean 'alpha'" in msg


def test_unknown_key_inside_a_list_item_of_a_tagged_union(tmp_path):
    text = GOOD.replace("    port: 8081\n", "    port: 8081\n    prevew: true\n")
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:16:" in msg and "outputs[1].prevew" in msg and "Did you mean 'preview'" in msg


def test_bad_values_name_key_line_and_value(tmp_path):
    p = write(tmp_path, GOOD.replace("every: 3", "every: 0").replace("type: blazeface", "type: yunet"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:8: detector.every" in str(e.value) and "got 0" in str(e.value)
    p = write(tmp_path, GOOD.replace("type: blazeface", "type: blazefase"))
    with pytest.raises(UnknownNameError, match="Did you mean 'blazeface'"):
        load_config(p)


def test_yaml_syntax_error_names_line(tmp_path):
    p = write(tmp_path, "source:\n  type: video\n  path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"fer-edge.yaml:\d+: not valid YAML"):
        load_config(p)


def test_yaml_lines_map():
    lines = YamlLines("a:\n  b: 1\n  c:\n    - x: 1\n    - y: 2\n")
    assert lines.line(("a", "b")) == 2
    assert lines.line(("a", "c", 1, "y")) == 5
    assert lines.line(("a", "c", 1, "mqtt", "y")) == 5   # a union tag pydantic inserts is skipped


def test_flags_override_file(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), {
        "classifier": {"threads": 4},
        "detector": {"every": 1},
        "source": {"type": "images", "path": str(tmp_path)},
    })
    assert cfg.classifier.threads == 4 and cfg.detector.every == 1
    assert cfg.detector.type == "blazeface"          # untouched keys keep the file's values
    assert cfg.source.type == "images"               # another source type replaces the section
    cfg = load_config(write(tmp_path, GOOD), {"source": {"loop": True}})
    assert cfg.source.type == "video" and cfg.source.loop is True


def test_source_specs(tmp_path):
    assert source_from_spec("picamera2") == {"type": "picamera2"}
    assert source_from_spec("0") == {"type": "camera", "device": 0}
    assert source_from_spec("/dev/video1") == {"type": "camera", "device": "/dev/video1"}
    assert source_from_spec("rtsp://x/y") == {"type": "video", "path": "rtsp://x/y"}
    assert source_from_spec(str(tmp_path)) == {"type": "images", "path": str(tmp_path)}


def test_privacy_lock_rejects_preview(tmp_path):
    text = GOOD.replace("    port: 8081\n", "    port: 8081\n    preview: true\n") + \
        "privacy:\n  forbid_frames: true\n"
    with pytest.raises(ConfigError, match="forbid_frames"):
        load_config(write(tmp_path, text))


def test_default_output_is_jsonl_stdout(tmp_path):
    cfg = load_config(None, {"source": {"type": "images", "path": str(tmp_path)}})
    assert [(o.type, o.path) for o in cfg.outputs] == [("jsonl", "-")]


def test_cli_validate_config(tmp_path, capsys, tiny_tflite):
    p = write(tmp_path, GOOD)
    assert main(["run", "--config", str(p), "--model", str(tiny_tflite["fp32"]), "--validate-config"]) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out and "angry, happy, sad" in out
    bad = write(tmp_path, GOOD + "telemetry: true\n")
    assert main(["run", "--config", str(bad), "--validate-config"]) == 2
    err = capsys.readouterr().err
    assert "telemetry" in err and ":16:" in err
    assert main(["run", "--model", "m.tflite"]) == 2                      # no source at all
    assert "no source" in capsys.readouterr().err
    assert main(["run", "--source", str(tmp_path), "--output", "ftp://x", "--validate-config"]) == 2
