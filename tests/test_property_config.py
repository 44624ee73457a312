"""Property-based tests of the daemon config loader (fer_edge/runtime/config.py).

Whatever a user writes - any YAML text, any nesting of known and unknown keys, any value types -
loading either returns a typed DaemonConfig or raises ConfigError with a message that names where
the problem is. Never a KeyError/TypeError/AttributeError from inside the loader, never a pydantic
traceback. And every valid setting written to a file comes back exactly.
"""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fer_edge.errors import ConfigError
from fer_edge.runtime.config import DaemonConfig, load_config, section_model

# The keys of each section (a plugin section: its default plugin's; the source: what every source takes).
SECTIONS = {name: list(getattr(section_model(DaemonConfig, name), "model_fields", {}) or [])
            for name in DaemonConfig.model_fields}
KNOWN_KEYS = sorted({k for keys in SECTIONS.values() for k in keys} | set(SECTIONS) |
                    {"type", "path", "device", "host", "port", "preview", "qos", "prefix", "rotate_mb"})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["video", "images", "camera", "picamera2", "jsonl", "mqtt", "http", "yunet", "blazeface",
                     "-", "clip.avi", "0", "/dev/video0", "INFO", "ema", "int8", "grey", "rgb"]),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(min_size=1, max_size=10))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=5)), max_leaves=20)
section_values = st.one_of(values, st.dictionaries(keys, values, max_size=6))
configs = st.dictionaries(st.one_of(st.sampled_from(sorted(SECTIONS)), st.text(min_size=1, max_size=8)),
                          section_values, max_size=7)


def _load(data: dict):
    try:
        return load_config(None, data)
    except ConfigError as exc:
        msg = str(exc)
        assert msg.strip(), "an empty error message"
        assert "Traceback" not in msg and "errors.pydantic.dev" not in msg    # our words, not pydantic's dump
        return exc


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=configs)
def test_any_mapping_loads_or_is_a_config_error(data):
    res = _load(data)
    assert isinstance(res, (DaemonConfig, ConfigError))


@settings(max_examples=300, deadline=None)
@given(section=st.sampled_from(["classifier", "detector", "tracker", "logging", "privacy"]),
       key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12), value=scalars)
def test_unknown_keys_are_named_with_the_valid_ones(section, key, value):
    if key in SECTIONS[section]:
        return
    data = {"source": {"type": "video", "path": "clip.avi"}, section: {key: value}}
    res = _load(data)
    assert isinstance(res, ConfigError)
    msg = str(res)
    assert f"unknown key '{key}' at {section}.{key}" in msg
    assert "Valid keys here: " + ", ".join(SECTIONS[section]) in msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200))
def test_any_yaml_text_loads_or_is_a_config_error(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("cfg") / "fer-edge.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        load_config(p)
    except ConfigError as exc:
        assert str(p) in str(exc) or "invalid configuration" in str(exc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=configs)
def test_yaml_files_report_the_line_of_the_first_problem(tmp_path_factory, doc):
    """A config written as YAML: an error points at a line that exists in the file."""
    p = tmp_path_factory.mktemp("cfg") / "c.yaml"
    try:
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        return
    p.write_text(text, encoding="utf-8")
    try:
        load_config(p)
    except ConfigError as exc:
        n_lines = max(1, len(re.findall("\r\n|[\n\r\x85\u2028\u2029]", text)))   # YAML's own line breaks
        for m in re.finditer(re.escape(str(p)) + r":(\d+):", str(exc)):
            assert 1 <= int(m.group(1)) <= n_lines + 1


# PyYAML's emitter writes U+0085 (NEL) raw inside a quoted scalar and its parser then folds it into a
# space: a PyYAML round-trip defect (the only code point affected), not one of the config loader.
yaml_safe_text = st.text(min_size=1, max_size=20).filter(lambda t: "\x85" not in t)


valid = st.fixed_dictionaries({
    "classifier": st.fixed_dictionaries({"threads": st.integers(1, 256), "align": st.booleans()}),
    "source": st.one_of(
        st.fixed_dictionaries({"type": st.just("video"), "path": yaml_safe_text,
                               "loop": st.booleans(), "retry_initial_s": st.floats(0.01, 10),
                               "retry_max_s": st.floats(0.01, 600)}),
        st.fixed_dictionaries({"type": st.just("camera"), "device": st.one_of(st.integers(0, 9),
                                                                               st.just("/dev/video0")),
                               "fps": st.floats(1, 120), "fourcc": st.sampled_from(["MJPG", "YUYV"])})),
    "detector": st.fixed_dictionaries({"type": st.sampled_from(["yunet", "blazeface"]),
                                       "input_width": st.integers(32, 4096), "every": st.integers(1, 1000),
                                       "score_threshold": st.floats(0.01, 0.99), "max_faces": st.integers(1, 100)}),
    "tracker": st.fixed_dictionaries({"alpha": st.floats(0.01, 1.0), "window": st.integers(1, 1000),
                                      "smoothing": st.sampled_from(["ema", "window", "none"])}),
    "outputs": st.lists(st.one_of(
        st.fixed_dictionaries({"type": st.just("jsonl"), "path": st.sampled_from(["-", "/tmp/x.jsonl"]),
                               "keep": st.integers(1, 1000)}),
        st.fixed_dictionaries({"type": st.just("http"), "port": st.integers(0, 65535), "preview": st.booleans()})),
        max_size=3),
    "logging": st.fixed_dictionaries({"level": st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"])}),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=valid)
def test_every_valid_setting_round_trips_through_a_yaml_file(tmp_path_factory, doc):
    p = tmp_path_factory.mktemp("cfg") / "ok.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    cfg = load_config(p)
    dumped = cfg.model_dump()
    for section in ("classifier", "detector", "tracker", "logging"):
        for k, v in doc[section].items():
            assert dumped[section][k] == v, (section, k)
    for k, v in doc["source"].items():
        assert dumped["source"][k] == v
    assert [o["type"] for o in dumped["outputs"]] == [o["type"] for o in doc["outputs"]]
    for got, want in zip(dumped["outputs"], doc["outputs"]):
        assert all(got[k] == v for k, v in want.items())


@settings(max_examples=200, deadline=None)
@given(section=st.sampled_from(["detector", "tracker"]), value=st.one_of(st.floats(allow_nan=True), st.integers(),
                                                                          st.text(max_size=5), st.booleans()))
def test_bad_values_name_the_key_and_the_value(section, value):
    key = {"detector": "score_threshold", "tracker": "alpha"}[section]
    res = _load({"source": {"type": "video", "path": "x"}, section: {key: value}})
    if isinstance(res, ConfigError):
        msg = str(res)
        assert f"{section}.{key}:" in msg and "got " in msg
