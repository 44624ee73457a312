"""Security: no frame leaves the process unless asked, nothing is served beyond loopback by default,
no shell is ever built, and the systemd unit is sandboxed. (MQTT username/password, password_file
and TLS against a real broker: test_mqtt_sink.py; loopback binding and Host checks of the HTTP
sink: test_http_sink.py.)"""

from __future__ import annotations

import ast
import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mosquitto import free_port
from test_runtime_support import face_video  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fer_edge"
UNIT = ROOT / "device" / "fer-edge.service"

IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8", b"RIFF", b"P5\n", b"P6\n", b"II*\x00", b"MM\x00*")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_default_config_writes_and_serves_no_frame(tmp_path, face_video, tiny_tflite):
    """The daemon with its defaults plus a file and an HTTP output, run in a private cwd/HOME/TMPDIR:
    afterwards not one image file exists anywhere it could write, the preview endpoints are 404,
    and no result carries pixels."""
    video, _ = face_video
    home, work, tmp = tmp_path / "home", tmp_path / "work", tmp_path / "tmp"
    for d in (home, work, tmp):
        d.mkdir()
    out = work / "results.jsonl"
    port = free_port()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_RUNTIME_DIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "fer_edge.cli", "run", "--model", str(tiny_tflite["int8"]),
                             "--source", str(video), "--loop", "--threads", "1", "--output", f"jsonl:{out}",
                             "--output", f"http://127.0.0.1:{port}"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text().count("\n") >= 30):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no results"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        for path in ("/preview.mjpg", "/preview.jpg"):
            code, body = _get(base + path)
            assert code == 404 and b"preview is off" in body
        code, body = _get(base + "/api/info")
        assert code == 200 and json.loads(body)["preview"] is False
        code, body = _get(base + "/api/latest")
        assert code == 200 and len(body) < 4096
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0
    lines = out.read_text().splitlines()
    assert lines and max(len(x) for x in lines) < 4096                  # no image data in any result
    found = []
    for folder in (home, work, tmp):
        for p in folder.rglob("*"):
            if p.is_file():
                with open(p, "rb") as fh:
                    head = fh.read(8)
                if head.startswith(IMAGE_MAGIC):
                    found.append(str(p))
    assert found == [], f"image files written: {found}"


# ------------------------------------------------------------------------------------------------
# no shell, ever

SHELL_FUNCS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("asyncio", "create_subprocess_shell"), ("os", "execl"), ("os", "execlp"), ("os", "spawnl")}
SUBPROCESS_FUNCS = {"run", "Popen", "call", "check_call", "check_output"}


def shell_findings(source: str, filename: str = "<src>") -> list[str]:
    """Every place a shell could be started or a command built as one string."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{filename}:{node.lineno}: shell={ast.unparse(kw.value)}")
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if (f.value.id, f.attr) in SHELL_FUNCS:
                found.append(f"{filename}:{node.lineno}: {f.value.id}.{f.attr}()")
            if f.value.id == "subprocess" and f.attr in SUBPROCESS_FUNCS and node.args:
                cmd = node.args[0]
                if isinstance(cmd, (ast.JoinedStr, ast.BinOp)) or (isinstance(cmd, ast.Constant)
                                                                  and isinstance(cmd.value, str)):
                    found.append(f"{filename}:{node.lineno}: command built as a string")
    return found


def test_the_shell_detector_detects():
    bad = ("import os, subprocess\nos.system('ls ' + x)\nsubprocess.run(f'ffmpeg -i {p}', shell=True)\n"
           "subprocess.Popen('ls')\nsubprocess.run(['ls'], shell=flag)\n")
    assert len(shell_findings(bad)) == 5
    assert shell_findings("import subprocess\nsubprocess.run(['git', 'status'], shell=False)\n") == []


def test_no_shell_command_is_built_anywhere_in_the_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30
    found = [f for p in files for f in shell_findings(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert found == []


# ------------------------------------------------------------------------------------------------
# the systemd unit


def _unit() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    unit.optionxform = str
    unit.read(UNIT)
    return unit["Service"]


def test_systemd_unit_runs_unprivileged_and_sandboxed():
    svc = _unit()
    assert svc.get("User") not in (None, "", "root", "0") and svc.get("Group") not in (None, "", "root", "0")
    assert "DynamicUser" not in svc or svc["DynamicUser"] == "no"
    required = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
                "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "RestrictNamespaces": "yes",
                "SystemCallArchitectures": "native"}
    for key, value in required.items():
        assert svc.get(key) == value, f"{key}={svc.get(key)!r}, want {value}"
    # no capabilities at all: the empty assignment clears the bounding set
    assert "CapabilityBoundingSet" in svc and svc["CapabilityBoundingSet"].strip() == ""
    assert svc.get("AmbientCapabilities", "").strip() == ""
    families = set(svc["RestrictAddressFamilies"].split())
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} and "AF_PACKET" not in families
    # writes only where it must; the camera in /dev stays reachable (no PrivateDevices/DeviceAllow)
    assert set(svc["ReadWritePaths"].split()) <= {"/var/log/fer-edge", "/var/lib/fer-edge"}
    assert "PrivateDevices" not in svc and "DeviceAllow" not in svc and "ProtectClock" not in svc
    # started directly, not through a shell that could expand anything
    exe = svc["ExecStart"].split()
    assert exe[0].startswith("/") and Path(exe[0]).name == "fer-edge" and exe[0] not in ("/bin/sh", "/bin/bash")
    assert not any(c in svc["ExecStart"] for c in ";|&$`")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path):
    """systemd's own parser: no unknown directive, no bad value (the binary path is swapped for one
    that exists here, since verify checks it)."""
    unit = tmp_path / "fer-edge.service"
    text = UNIT.read_text().replace("/opt/fer-edge/venv/bin/fer-edge", shutil.which("true") or "/bin/true")
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "fer-edge.service" in line and "Documentation" not in line]
    assert r.returncode == 0 and problems == [], r.stdout + r.stderr
