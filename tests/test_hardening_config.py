"""Configuration that is wrong in every way a person gets it wrong, through the real `fer-edge run`:
each error names the file and line, the key or value, and what to do; secrets never appear in
error messages; a port in use and a broker that cannot be found or reached are handled."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from badinput import face_folder, said
from fer_edge.cli import main
from fer_edge.errors import ConfigError
from fer_edge.runtime.config import load_config
from mosquitto import free_port


pytestmark = pytest.mark.usefixtures("wide_console")  # rich must not fold paths in messages


def write(tmp_path: Path, text: str, name: str = "fer-edge.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


SOURCE = "source: {type: video, path: clip.avi}\n"

# (what, yaml, words the message must contain - key, value, line and the fix)
BAD = [
    ("unknown top-level key", SOURCE + "clasifier: {threads: 2}\n",
     [":2:", "unknown key 'clasifier'", "Did you mean 'classifier'?"]),
    ("unknown nested key", SOURCE + "detector:\n  every: 2\n  treshold: 0.5\n",
     [":4:", "unknown key 'treshold' at detector.treshold", "Valid keys here:", "score_threshold"]),
    ("unknown key in a sink", SOURCE + "outputs:\n  - type: http\n    prot: 8080\n",
     [":4:", "unknown key 'prot' at outputs[0].prot", "Did you mean 'port'?"]),
    ("wrong type", SOURCE + "classifier: {threads: two}\n",
     [":2:", "classifier.threads", "valid integer", "'two'"]),
    ("wrong type: list for mapping", SOURCE + "tracker: [ema]\n", [":2:", "tracker", "['ema']"]),
    ("out of range", SOURCE + "detector: {score_threshold: 1.5}\n",
     [":2:", "detector.score_threshold", "less than 1", "1.5"]),
    ("out of range port", SOURCE + "outputs: [{type: http, port: 70000}]\n",
     [":2:", "outputs[0].port", "65535", "70000"]),
    ("duplicate key", SOURCE + "source: {type: video, path: x, retry_initial_s: -1}\n",
     ["key 'source' is given twice", "first on line 1", "merge them"]),
    ("negative retry", "source: {type: video, path: x, retry_initial_s: -1}\n",
     [":1:", "source.retry_initial_s", "greater than 0", "-1"]),
    ("unknown source type", "source: {type: webcam}\n", [":1:", "webcam", "'camera'", "'video'"]),
    ("unknown detector", SOURCE + "detector: {type: yunett}\n", ["unknown detector 'yunett'", "Did you mean 'yunet'"]),
    ("bad enum", SOURCE + "logging: {level: LOUD}\n", [":2:", "logging.level", "'DEBUG'", "'LOUD'"]),
    ("not YAML", SOURCE + "detector: {every: [}\n", [":2:", "not valid YAML"]),
    ("top level a list", "- source\n", ["top level must be a mapping"]),
    ("missing source", "classifier: {threads: 1}\n", ["source: required key is missing"]),
    ("preview with the privacy lock", SOURCE + "privacy: {forbid_frames: true}\noutputs: [{type: http, port: 0, "
     "preview: true}]\n", ["preview: true but privacy.forbid_frames is true", "remove one of them"]),
    ("bad sink URL in the file", SOURCE + "outputs: ['mqtt://broker:99999/x']\n",
     ["cannot read sink 'mqtt://broker:99999/x'", "Port out of range", "Valid forms"]),
]


@pytest.mark.parametrize("what,text,words", BAD, ids=[b[0] for b in BAD])
def test_bad_config_files_name_the_line_the_key_and_the_fix(tmp_path, capsys, what, text, words):
    p = write(tmp_path, text)
    assert main(["run", "--config", str(p), "--validate-config"]) == ConfigError.exit_code
    msg = said(capsys)
    for w in words:
        assert w in msg, f"{what}: {w!r} missing from: {msg}"


def test_a_config_that_is_not_utf8_names_the_line_and_the_fix(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"classifier: {threads: 1}\nsource: {type: video, path: caf\xe9.avi}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        load_config(p)


def test_sinks_may_be_written_as_urls_in_the_file(tmp_path):
    cfg = load_config(write(tmp_path, SOURCE + "outputs: ['jsonl:-', 'mqtt://broker:1884/home', "
                                               "{type: http, port: 8099}]\n"))
    assert [(o.type, getattr(o, "port", None)) for o in cfg.outputs] == [("jsonl", None), ("mqtt", 1884),
                                                                         ("http", 8099)]


def test_secrets_never_appear_in_error_messages(tmp_path, capsys):
    cases = [
        ["--source", str(tmp_path), "--output", "mqtt://bob:Hunter2secret@broker:99999/x"],
        ["--source", str(tmp_path), "--output", "mqtt://broker/x?qos=9&password=Hunter2secret"],
        ["--config", str(write(tmp_path, SOURCE + "outputs:\n  - type: mqtt\n    password: Hunter2secret\n"
                                           "    password_file: /etc/hostname\n"))],
        ["--config", str(write(tmp_path, SOURCE + "outputs:\n  - type: mqtt\n    password: [Hunter2secret]\n",
                               "b.yaml"))],
    ]
    for args in cases:
        assert main(["run", *args, "--validate-config"]) == ConfigError.exit_code
        msg = said(capsys)
        assert "Hunter2secret" not in msg and "***" in msg, msg


# ------------------------------------------------------------------------------------------------
# the network: a port in use, a broker that does not exist or does not answer


@pytest.fixture
def images(tmp_path) -> Path:
    return face_folder(tmp_path, 3)


def test_http_port_in_use_stops_run_with_the_port_and_the_fix(tiny_tflite, images, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["run", "--model", str(tiny_tflite["int8"]), "--source", str(images), "--output",
                     f"http://127.0.0.1:{port}"])
    assert code == ConfigError.exit_code
    msg = said(capsys)
    assert f"port {port} on 127.0.0.1 is already in use" in msg and f"http://127.0.0.1:{port + 1}" in msg


def test_broker_host_that_does_not_exist_stops_run_naming_it(tiny_tflite, images, capsys):
    code = main(["run", "--model", str(tiny_tflite["int8"]), "--source", str(images), "--output",
                 "mqtt://no-such-broker.invalid/fer"])
    assert code == ConfigError.exit_code
    msg = said(capsys)
    assert "broker host 'no-such-broker.invalid' does not resolve" in msg and "fix the host" in msg


def test_broker_that_does_not_answer_never_blocks_the_other_outputs(tmp_path, tiny_tflite, images):
    """Nothing listens on the broker port: the run still finishes at once with every result in the
    JSON lines, and says the broker was unreachable and how many results it could not deliver."""
    out = tmp_path / "o.jsonl"
    port = free_port()
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "fer_edge.cli", "run", "--model", str(tiny_tflite["int8"]),
                        "--source", str(images), "--threads", "1", "--output", f"jsonl:{out}",
                        "--output", f"mqtt://127.0.0.1:{port}/fer?flush_timeout_s=0.3"],
                       capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert [json.loads(x)["file"] for x in out.read_text().splitlines()] == ["f0.png", "f1.png", "f2.png"]
    assert f"127.0.0.1:{port}" in r.stderr and "not delivered" in r.stderr
    assert elapsed < 30
