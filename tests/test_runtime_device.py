"""The deployment kit (device/), `fer-edge doctor`, delegate fallback and the frame (preview) gate."""

from __future__ import annotations

import configparser
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fer_edge.cli import main
from fer_edge.runtime.classifier import Classifier
from fer_edge.runtime.config import load_config, read_config_file
from fer_edge.runtime.daemon import Daemon
from fer_edge.runtime.sinks import SinkSet
from test_runtime_support import ListSink, face_video, frame_results  # noqa: F401  (fixture)

DEVICE = Path(__file__).resolve().parents[1] / "device"


def test_example_config_is_valid_and_private():
    cfg = load_config(DEVICE / "config.example.yaml")
    assert cfg.source.type == "picamera2" and cfg.detector.every == 2
    http = [o for o in cfg.outputs if o.type == "http"]
    assert http and http[0].host == "127.0.0.1" and http[0].preview is False
    # every key in the example is one the daemon knows (load_config would have raised otherwise)
    data, _ = read_config_file(DEVICE / "config.example.yaml")
    assert set(data) <= {"classifier", "source", "detector", "tracker", "outputs", "logging", "privacy"}


def test_systemd_unit_has_notify_watchdog_and_sandbox():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(DEVICE / "fer-edge.service")
    svc = unit["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0 and svc["Restart"] == "on-failure"
    assert svc["User"] == "fer-edge" and svc["SupplementaryGroups"] == "video"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes"}.items():
        assert svc[key] == value
    assert "/var/log/fer-edge" in svc["ReadWritePaths"]
    assert "PrivateDevices" not in svc          # the camera lives in /dev
    assert svc["ExecStart"].endswith("fer-edge run --config /etc/fer-edge/config.yaml")


def test_install_script_parses_and_installs_only_what_it_is_given(tmp_path):
    script = DEVICE / "install.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needle in ("python3-picamera2", "--system-site-packages", "fer-edge[device] @ file://", "useradd",
                   "systemctl"):
        assert needle in text
    # Given no wheel and no checkout it stops before doing anything (as root too: CI runs as root),
    # in one line that names both fixes - it never falls back to `pip install fer-edge` by name.
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--wheel" in lines[0] and "--source" in lines[0] and "package index" in lines[0]
    # a wheel that is not fer-edge's, a folder that is not a checkout, a path that does not exist
    other = tmp_path / "requests-2.0-py3-none-any.whl"
    other.write_bytes(b"PK")
    for args, says in ((["--wheel", str(other)], "not a fer-edge wheel"),
                       (["--source", str(tmp_path)], "not a fer-edge checkout"),
                       (["--wheel", str(tmp_path / "missing.whl")], "no such file")):
        proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and says in proc.stderr and proc.stdout == "", (args, proc.stderr)
    import os

    if os.geteuid() != 0:
        proc = subprocess.run(["bash", str(script), "--source", str(DEVICE.parent)], capture_output=True, text=True)
        assert proc.returncode != 0 and "run as root" in proc.stderr


def test_doctor_json_with_model(tiny_tflite, capsys):
    assert main(["doctor", "--json", "--model", str(tiny_tflite["int8"]), "--threads", "1"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert checks["tflite runtime"]["status"] == "ok" and "ai_edge_litert" in checks["tflite runtime"]["detail"]
    assert checks["xnnpack"]["status"] == "ok"
    assert "64-bit" in checks["os"]["detail"]
    assert checks["model"]["status"] == "ok" and "angry, happy, sad" in checks["model"]["detail"]
    assert "ops on XNNPACK" in checks["model ops"]["detail"] and "partition" in checks["model ops"]["detail"]
    assert checks["face detector"]["status"] == "ok"
    assert {"picamera2", "v4l2", "cpu"} <= set(checks)


def test_doctor_fails_on_a_broken_model(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    assert main(["doctor", "--json", "--model", str(bad)]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert checks["model"]["status"] == "fail"


# LiteRT's own Delegate finaliser would print a traceback for a library that never loaded: it must not run.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_missing_delegate_falls_back_to_cpu_with_a_message(tiny_tflite, caplog):
    clf = Classifier(tiny_tflite["fp32"], threads=1, delegate="/nonexistent/libedgetpu.so.1")
    assert "unavailable" in clf.delegate_note and "CPU" in clf.delegate_note
    assert "libedgetpu" in caplog.text
    probs = clf.classify([np.zeros((32, 32, 1), np.uint8)])
    assert probs.shape == (1, 3) and np.isclose(probs.sum(), 1, atol=1e-3)


class FrameSink(ListSink):
    def __init__(self, wants):
        super().__init__("frames")
        self.wants_frames = wants
        self.frames = []

    def offer_frame(self, frame, result):
        self.frames.append((frame.shape, result.frame_index))


@pytest.mark.parametrize("wants", [False, True])
def test_frames_reach_sinks_only_when_a_sink_asks(face_video, tiny_tflite, wants):
    video, truth = face_video
    cfg = load_config(None, {"classifier": {"model": str(tiny_tflite["fp32"]), "threads": 1},
                             "source": {"type": "video", "path": str(video), "max_frames": 5}})
    sink = FrameSink(wants)
    assert Daemon(cfg, sinks=SinkSet([sink])).run() == 0
    assert len(frame_results(sink.results)) == 5
    assert sink.frames == ([((240, 320, 3), i) for i in range(5)] if wants else [])
