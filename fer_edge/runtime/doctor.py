"""`fer-edge doctor`: what this board can run, checked rather than assumed.

Each check returns a `Check` (ok / warn / fail, a one-line detail, and the fix when it is not ok).
Nothing here imports TensorFlow unless it is the only TFLite runtime installed.
"""

from __future__ import annotations

import os
import platform
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Check:
    name: str
    status: str          # ok | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_platform() -> list[Check]:
    from fer_edge.interpreter import default_threads

    machine = platform.machine()
    bits = struct.calcsize("P") * 8
    board = ""
    model_file = Path("/proc/device-tree/model")
    if model_file.is_file():
        board = model_file.read_bytes().rstrip(b"\0").decode(errors="replace")
    os_name = platform.platform(terse=True)
    rel = Path("/etc/os-release")
    if rel.is_file():
        for line in rel.read_text(errors="replace").splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    out = [Check("cpu", "ok", f"{machine}, {os.cpu_count()} cores ({default_threads()} usable by this process)"
                 + (f", {board}" if board else ""))]
    if bits == 64:
        out.append(Check("os", "ok", f"{os_name}, {bits}-bit Python on {platform.system()} {platform.release()}"))
    else:
        out.append(Check("os", "fail", f"{os_name}, {bits}-bit Python",
                         "LiteRT ships no 32-bit ARM wheels: install the 64-bit Raspberry Pi OS"))
    return out


def check_runtime() -> tuple[list[Check], object | None]:
    from fer_edge.errors import RuntimeUnavailableError
    from fer_edge.interpreter import find_runtime

    try:
        rt = find_runtime()
    except RuntimeUnavailableError as exc:
        return [Check("tflite runtime", "fail", str(exc), "pip install 'fer-edge[device]'")], None
    checks = [Check("tflite runtime", "ok", f"{rt.name} {rt.version}")]
    if rt.name == "tflite_runtime":
        checks[0].status = "warn"
        checks[0].fix = ("tflite-runtime 2.14 (the last release) cannot run TF >= 2.15 dynamic-range models and "
                         "skips XNNPACK for int8; install ai-edge-litert")
    elif rt.name == "tensorflow":
        checks[0].status = "warn"
        checks[0].fix = "falling back to full TensorFlow (slow import, large); install ai-edge-litert"
    return checks, rt


def _xnnpack_probe(rt: Any) -> Check:
    """Load the packaged BlazeFace model and analyse its ops (fer_edge.ops): a DELEGATE partition means XNNPACK
    took the graph."""
    from fer_edge.detectors import BLAZEFACE_ASSET, asset_path
    from fer_edge.ops import analyse_tflite

    try:
        with asset_path(BLAZEFACE_ASSET) as p:
            rep = analyse_tflite(p, threads=1, runtime=rt.name)
    except Exception as exc:  # doctor reports, never crashes
        return Check("xnnpack", "warn", f"could not probe ({type(exc).__name__}: {exc})")
    n = rep.delegate_partitions
    if n:
        return Check("xnnpack", "ok", f"on ({n} DELEGATE node(s) in a float probe model, {rep.delegated_ops} of "
                                      f"its {rep.total_ops} ops delegated)")
    return Check("xnnpack", "warn", "off: no DELEGATE node in the probe model",
                 "this runtime build has no XNNPACK; expect several times slower inference")


def check_camera() -> list[Check]:
    import importlib.util

    from fer_edge.runtime.sources import video_devices

    out = []
    if importlib.util.find_spec("picamera2") is None:
        out.append(Check("picamera2", "warn", "not importable",
                         "on Raspberry Pi OS: sudo apt install python3-picamera2 and a venv made with "
                         "--system-site-packages (device/install.sh); not needed for USB cameras"))
    else:
        try:
            import picamera2

            cams = []
            try:
                cams = picamera2.Picamera2.global_camera_info()
            except Exception:  # doctor reports a failed check, it never crashes
                pass
            out.append(Check("picamera2", "ok" if cams else "warn",
                             f"importable; {len(cams)} camera(s): "
                             + (", ".join(str(c.get("Model", "?")) for c in cams) or "none found"),
                             "" if cams else "check the ribbon cable and `rpicam-hello --list-cameras`"))
        except Exception as exc:  # doctor reports a failed check, it never crashes
            out.append(Check("picamera2", "fail", f"import failed: {exc}",
                             "reinstall python3-picamera2; the venv must use --system-site-packages"))
    devs = video_devices()
    if devs:
        readable = [d for d in devs if os.access(d, os.R_OK | os.W_OK)]
        status = "ok" if readable else "warn"
        out.append(Check("v4l2", status, f"{len(devs)} device(s): {', '.join(devs)}; accessible: {len(readable)}",
                         "" if readable else "add the user to group 'video' (sudo usermod -aG video $USER)"))
    else:
        out.append(Check("v4l2", "warn", "no /dev/video* devices", "plug in a USB camera, or use picamera2"))
    return out


def check_detector() -> Check:
    try:
        import cv2

        from fer_edge.detectors import create_detector

        det = create_detector("yunet")
        frame = np.zeros((240, 320, 3), np.uint8)
        t0 = time.perf_counter()
        det.detect(frame)
        ms = (time.perf_counter() - t0) * 1000
        return Check("face detector", "ok", f"YuNet on OpenCV {cv2.__version__}: one 320x240 pass in {ms:.1f} ms")
    except Exception as exc:  # doctor reports, never crashes
        return Check("face detector", "fail", f"YuNet unavailable: {exc}", "pip install 'opencv-python-headless>=4.10,<5'")


def check_model(path: str | Path, threads: int | None = None, delegate: str | None = None,
                accelerator: str = "cpu") -> list[Check]:
    from fer_edge.interpreter import TFLiteModel

    try:
        model = TFLiteModel(path, threads=threads, delegate=delegate, accelerator=accelerator)
    except Exception as exc:  # doctor reports, never crashes
        return [Check("model", "fail", f"{path}: {exc}", "re-export it with `fer-edge convert`")]
    meta = model.metadata
    x = np.zeros(meta.preprocess.shape, np.uint8)
    t0 = time.perf_counter()
    probs = model.predict_one(x)
    first_ms = (time.perf_counter() - t0) * 1000
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        model.predict_one(x)
        times.append((time.perf_counter() - t0) * 1000)
    # The core's op analysis (fer_edge.ops, the bench's too, so the board's doctor and the bench agree): which
    # ops XNNPACK took and which stayed on the slow builtin kernels.
    rep = model.kernel_report()
    out = [Check("model", "ok" if np.all(np.isfinite(probs)) else "fail",
                 f"{Path(path).name}: {meta.backbone} {meta.variant}, input {meta.preprocess.shape} "
                 f"{meta.preprocess.color}, labels {', '.join(meta.labels)}; loaded in {model.load_seconds * 1000:.0f} ms, "
                 f"first run {first_ms:.1f} ms, median {float(np.median(times)):.2f} ms on {model.threads} thread(s)",
                 "" if np.all(np.isfinite(probs)) else "the model outputs NaN: re-export it")]
    left = ", ".join(f"{op} x{n}" for op, n in sorted(rep.not_delegated.items(), key=lambda kv: -kv[1]))
    out.append(Check("model ops", "ok" if rep.xnnpack and not rep.not_delegated else "warn",
                     f"{rep.delegated_ops} of {rep.total_ops} ops on XNNPACK in {rep.delegate_partitions} "
                     f"partition(s); {rep.int8_ops} int8 / {rep.float_ops} float / {rep.other_ops} other op(s); "
                     f"on builtin kernels: {left or 'none'}",
                     "" if rep.xnnpack and not rep.not_delegated else
                     ("nothing ran on XNNPACK: expect slow inference" if not rep.xnnpack else
                      "the ops listed run on slower builtin kernels; compare variants with `fer-edge bench`")))
    if model.delegate_note:
        out.append(Check("delegate", "warn", model.delegate_note))
    if model.accelerator_note:
        out.append(Check("accelerator", "ok" if model._compiled is not None else "warn", model.accelerator_note,
                         "" if model._compiled is not None else "the CPU (XNNPACK) is the fast path on this board"))
    return out


def run_checks(model: str | None = None, threads: int | None = None, delegate: str | None = None,
               accelerator: str = "cpu") -> list[Check]:
    checks = check_platform()
    rt_checks, rt = check_runtime()
    checks += rt_checks
    if rt is not None:
        checks.append(_xnnpack_probe(rt))
    checks += check_camera()
    checks.append(check_detector())
    if model:
        checks += check_model(model, threads, delegate, accelerator)
    return checks
