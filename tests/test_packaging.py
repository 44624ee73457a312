"""`python -m build` gives a wheel and an sdist without a warning, and the wheel alone gives a working fer-edge.

Slow (an isolated build, then a fresh venv with the device extra from the package index or pip's
cache): marked slow, still run in CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dist")
    # PYTHONDONTWRITEBYTECODE (set on some machines) makes setuptools print "byte-compiling is disabled"
    # warnings that are the environment's, not the package's; the build itself must print none.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], capture_output=True,
                          text=True, timeout=600, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return out, log


def test_build_log_has_no_warning(dist):
    _, log = dist
    bad = [ln for ln in log.splitlines() if re.search(r"warn|deprecat", ln, re.IGNORECASE)]
    assert bad == [], "\n".join(bad)
    assert "adding license file 'LICENSE'" in log


def test_wheel_and_sdist_carry_the_licence(dist):
    out, _ = dist
    (wheel,) = out.glob("fer_edge-*.whl")
    (sdist,) = out.glob("fer_edge-*.tar.gz")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert any(n.endswith("licenses/fer_edge/assets/NOTICE.md") for n in names)
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta
    assert "fer_edge/assets/face_detection_yunet_2026may.onnx" in names            # the detectors ship
    # the pi extra needs no compiler on the board: picamera2 comes from apt, never from pip
    assert not re.search(r"Requires-Dist: picamera2", meta)
    with tarfile.open(sdist) as t:
        top = {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix() for m in t.getmembers() if m.name.count("/")}
    assert "LICENSE" in top and "pyproject.toml" in top
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()


def test_wheel_with_the_device_extra_works_in_a_fresh_venv(dist, tmp_path):
    out, _ = dist
    (wheel,) = out.glob("fer_edge-*.whl")
    venv = tmp_path / "venv"
    # Nothing from this checkout: with it on PYTHONPATH, pip would take its fer_edge.egg-info for an
    # installed fer-edge and skip the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[device]"],
                         capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert pip.returncode == 0, pip.stderr[-3000:]
    fe = venv / "bin" / "fer-edge"
    version = subprocess.run([str(fe), "--version"], capture_output=True, text=True, timeout=60, env=env)
    assert version.returncode == 0 and "fer-edge 0.1.0" in version.stdout
    model = ROOT / "benchmarks" / "models" / "fer2013_best_int8.tflite"
    proc = subprocess.run([str(fe), "doctor", "--json", "--model", str(model), "--threads", "1"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    checks = {c["name"]: c["status"] for c in json.loads(proc.stdout)}
    for name in ("tflite runtime", "xnnpack", "model", "model ops", "face detector"):
        assert checks[name] == "ok", (name, checks)
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import fer_edge, importlib.util as u; print(fer_edge.__file__); "
                            "print(u.find_spec('tensorflow') is None)"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "True"                # the device side: no TensorFlow
