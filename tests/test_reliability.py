"""Issue 12's nine principles, each driven through the installed console script with generated hostile input.

Every case runs `fer-edge` (the venv's console script, as a user would) in a child process with an
address-space limit (RLIMIT_AS) and a wall-clock bound, and asserts: the exit code, a one-line
message without a traceback, the child's peak memory (its VmHWM, see _peak_poller) and, where output is
valid, that it is complete. Bounds on time are generous: the machine running this may be loaded.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from badinput import _face, encode, png_constant
from conftest import region_images
from mosquitto import free_port

FER_EDGE = Path(sys.executable).with_name("fer-edge")   # the console script the venv installed
MB = 1024 * 1024
DEVICE_AS_MB = 2048     # run/doctor/audit: LiteRT + OpenCV need ~1 GB of address space, far less resident
PEAK_MB = 450           # "within a few hundred MB whatever the input"


_INFO_LOG = __import__("re").compile(r"^\d{4}-\d\d-\d\d \S+ (INFO|DEBUG) ")  # the daemon's progress log


@dataclass
class Done:
    rc: int
    out: str
    err: str
    peak_mb: float
    seconds: float

    @property
    def lines(self) -> list[str]:
        """stderr lines that are ours (LiteRT's one INFO line about XNNPACK is the runtime's, not ours)."""
        return [ln for ln in self.err.splitlines() if ln.strip() and not ln.startswith("INFO: Created TensorFlow")
                and not _INFO_LOG.match(ln)]


def _limits(as_mb: int, umask: int | None):
    def pre() -> None:
        # As a terminal starts it, whoever started the suite: an ignored SIGINT is inherited through exec (a
        # script's background job, `cmd &`, starts with it ignored), and fer-edge keeps an inherited SIG_IGN.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_AS, (as_mb * MB, as_mb * MB))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if umask is not None:
            os.umask(umask)
    return pre


def cli_start(args, tmp: Path, *, as_mb: int = DEVICE_AS_MB, stdin=subprocess.DEVNULL, stdout=None, env=None,
              umask: int | None = None) -> tuple[subprocess.Popen, Path, Path]:
    out_p, err_p = tmp / f"out.{time.monotonic_ns()}", tmp / f"err.{time.monotonic_ns()}"
    e = {**os.environ, "COLUMNS": "80", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "INVOCATION_ID"):   # not a service unless a test says so
        if var not in (env or {}):
            e.pop(var, None)
    proc = subprocess.Popen([str(FER_EDGE), *map(str, args)], stdin=stdin,
                            stdout=stdout if stdout is not None else open(out_p, "wb"), stderr=open(err_p, "wb"),
                            env=e, preexec_fn=_limits(as_mb, umask), start_new_session=True)
    return proc, out_p, err_p


def _peak_poller(pid: int, peak: list[int], stop: threading.Event) -> None:
    """The child's own high-water RSS (VmHWM of its post-exec memory map), read until it exits.

    Not ru_maxrss from wait4: Linux folds the RSS the child had at fork - a copy of this pytest process,
    1.7 GB once TensorFlow is loaded by an earlier test - into ru_maxrss at exec, so it measures the
    parent. VmHWM belongs to the exec'd image alone and only grows, so the last reading is the peak
    up to a few milliseconds before exit.
    """
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        try:
            for ln in status.read_text().splitlines():
                if ln.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(ln.split()[1]))
        except OSError:
            return
        stop.wait(0.005)


def cli_wait(proc: subprocess.Popen, out_p: Path, err_p: Path, timeout: float, t0: float) -> Done:
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    peak, stop = [0], threading.Event()
    poller = threading.Thread(target=_peak_poller, args=(proc.pid, peak, stop), daemon=True)
    poller.start()
    try:
        _, status, _usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        stop.set()
        poller.join(1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    read = lambda p: p.read_bytes().decode("utf-8", "replace") if p.exists() else ""  # noqa: E731
    done = Done(proc.returncode, read(out_p), read(err_p), peak[0] / 1024, time.monotonic() - t0)
    assert done.rc != -signal.SIGKILL, f"killed after {timeout} s (hang?):\n{done.err[-2000:]}"
    return done


def cli(args, tmp: Path, timeout: float = 120, **kw) -> Done:
    t0 = time.monotonic()
    proc, o, e = cli_start(args, tmp, **kw)
    return cli_wait(proc, o, e, timeout, t0)


def one_line(done: Done, *words: str) -> str:
    """The run failed with exactly one line on stderr, naming `words`, with no traceback."""
    assert "Traceback" not in done.err, done.err[-3000:]
    assert len(done.lines) == 1, done.err[-3000:]
    line = done.lines[0]
    for w in words:
        assert w.lower() in line.lower(), (w, line)
    assert done.peak_mb < PEAK_MB, f"peak {done.peak_mb:.0f} MB"
    return line


@pytest.fixture
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(3):
        (d / f"p{i}.png").write_bytes(encode(".png", _face(64, i, colour=True)))
    return d


# ------------------------------------------------------------------------------------------------
# 1. Usage errors

@pytest.mark.parametrize("args, words", [
    (["conver"], ["conver", "did you mean 'convert'"]),
    (["doctr", "--json"], ["doctr", "doctor"]),
    (["run", "--sourc", "x"], ["--sourc", "did you mean --source"]),
    (["run", "--bogus-flag"], ["--bogus-flag", "valid options", "--source"]),
    (["run", "--source", "{photos}", "--max-frames", "many"], ["--max-frames", "many"]),
    (["run", "--source", "{photos}", "--color", "gray", "--validate-config"], ["gray", "did you mean 'grey'"]),
    (["run", "--source", "{photos}", "--detector", "yunett", "--validate-config"], ["yunett", "'yunet'"]),
    (["audit", "{photos}", "--kind", "ckplsu"], ["ckplsu", "ckplus"]),
    (["doctor", "extra-arg"], ["extra-arg"]),
])
def test_usage_errors_are_one_line_with_the_closest_choice_and_exit_2(tmp_path, photos, args, words):
    done = cli([a.format(photos=photos) for a in args], tmp_path, timeout=60)
    assert done.rc == 2, done.err
    one_line(done, *words)
    assert done.out == ""


def test_the_installed_versions_are_the_constrained_ones_and_setup_uses_them():
    """setup.sh and CI install with -c constraints.txt; what this venv holds is what was pinned."""
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[1]
    assert "-c constraints.txt" in (root / "setup.sh").read_text()
    pins = dict(ln.split("==", 1) for ln in (root / "constraints.txt").read_text().splitlines()
                if "==" in ln and not ln.startswith("#"))
    for name in ("typer", "pydantic", "numpy", "PyYAML", "opencv-python-headless", "ai-edge-litert"):
        assert name in pins, name
        try:
            assert version(name) == pins[name].strip(), name
        except PackageNotFoundError:
            pytest.fail(f"{name} pinned but not installed")
    assert not any(k.lower().startswith("fer-edge") or k.lower().startswith("fer_edge") for k in pins)


# ------------------------------------------------------------------------------------------------
# 2. A model is checked before it runs

@pytest.fixture(scope="module")
def odd_models(tmp_path_factory, tiny_tflite) -> dict[str, Path]:
    """Models whose metadata lies about their tensors, and models whose outputs are not probabilities."""
    import keras
    import tensorflow as tf

    from fer_edge.metadata import read_metadata, strip, write_tflite

    out = tmp_path_factory.mktemp("odd_models")
    base = tiny_tflite["fp32"].read_bytes()
    meta = read_metadata(tiny_tflite["fp32"])
    models = {}

    def with_meta(name: str, flat: bytes, **changes) -> None:
        models[name] = write_tflite(out / f"{name}.tflite", flat, meta.model_copy(update=changes))
        (out / f"{name}.json").unlink()  # only the embedded record: the sidecar must not mask it

    with_meta("seven_labels_on_three", strip(base), labels=["angry", "disgust", "fear", "happy", "sad",
                                                            "surprise", "neutral"])
    with_meta("two_labels_on_three", strip(base), labels=["happy", "sad"])
    with_meta("wrong_output_dtype", strip(base), output_dtype="uint8")
    with_meta("says_int8", strip(base), variant="int8", input_dtype="uint8")

    keras.utils.set_random_seed(1)
    x, _ = region_images(40)
    inp = keras.Input((32, 32, 1))
    h = keras.layers.Flatten()(keras.layers.Rescaling(1 / 127.5, -1)(inp))
    logits = keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(0, 0.5))(h)
    two = keras.Model(inp, [keras.layers.Softmax()(logits), logits])
    for name, model in (("logits", keras.Model(inp, logits)), ("two_outputs", two)):
        model.export(str(out / f"{name}_saved"), verbose=False)
        flat = tf.lite.TFLiteConverter.from_saved_model(str(out / f"{name}_saved")).convert()
        with_meta(name, flat)
    return models


@pytest.mark.parametrize("name, words", [
    ("seven_labels_on_three", ["7 labels", "3 values"]),
    ("two_labels_on_three", ["2 labels", "3 values"]),
    ("wrong_output_dtype", ["output dtype uint8", "float32"]),
    ("says_int8", ["variant int8", "float32 input"]),
    ("logits", ["not probabilities", "softmax"]),
    ("two_outputs", ["2 outputs"]),
])
def test_a_model_that_disagrees_with_its_metadata_is_refused_at_load(tmp_path, odd_models, photos, name, words):
    done = cli(["run", "--model", odd_models[name], "--source", photos], tmp_path, timeout=90)
    assert done.rc == 4, done.err
    one_line(done, str(odd_models[name].name), *words)
    assert done.out == "", "no frame may be processed by a refused model"


# ------------------------------------------------------------------------------------------------
# 3. Bounded resources

def _png_header(width: int, height: int, depth: int, colour: int) -> bytes:
    """A small, complete PNG whose IHDR claims width x height at `depth` bits, colour type `colour`."""
    data = bytearray(png_constant(16, 16))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", __import__("zlib").crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def _webp_claiming(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + \
        (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_hostile_images_are_refused_from_the_header_within_bounded_memory(tmp_path, tiny_tflite):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "good.png").write_bytes(encode(".png", _face(64, 1, colour=True)))
    hostile = {
        "rgba16_7000.png": _png_header(7000, 7000, 16, 6),     # 49 Mpx x 8 bytes = 392 MB decoded
        "grey_6000.png": png_constant(6000, 6000),             # 36 Mpx: within bytes, over pixels
        "huge.webp": _webp_claiming(16000, 16000),
        "bomb.png": png_constant(4900, 5000),                   # 24.5 Mpx, allowed, decodes within memory
    }
    for name, data in hostile.items():
        (d / name).write_bytes(data)
    done = cli(["run", "--model", tiny_tflite["int8"], "--source", d, "--log-level", "WARNING"], tmp_path, timeout=180)
    assert done.rc == 0, done.err[-2000:]
    assert "Traceback" not in done.err
    for name in ("rgba16_7000.png", "grey_6000.png", "huge.webp"):
        assert f"skipped {name}: too large" in done.err, (name, done.err[-2000:])
    files = [json.loads(ln)["file"] for ln in done.out.splitlines()]
    assert files == ["bomb.png", "good.png"]
    assert done.peak_mb < PEAK_MB, f"peak {done.peak_mb:.0f} MB"


def _metadata_bomb(src: Path, dst: Path, n_bytes: int) -> Path:
    from fer_edge.metadata import MEMBER, strip

    flat = strip(src.read_bytes())
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(MEMBER, "w", force_zip64=True) as m:
            chunk = b" " * MB
            for _ in range(n_bytes // MB):
                m.write(chunk)
    dst.write_bytes(flat + buf.getvalue())
    return dst


def test_model_metadata_bombs_and_deep_json_are_refused_in_bounded_memory(tmp_path, tiny_tflite, photos):
    bomb = _metadata_bomb(tiny_tflite["int8"], tmp_path / "bomb.tflite", 600 * MB)
    assert bomb.stat().st_size < 3 * MB
    done = cli(["run", "--model", bomb, "--source", photos], tmp_path, timeout=90)
    assert done.rc == 4
    one_line(done, "bomb.tflite", "limit")

    from fer_edge.metadata import strip

    deep = tmp_path / "deep.tflite"
    deep.write_bytes(strip(tiny_tflite["int8"].read_bytes()))
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    done = cli(["run", "--model", deep, "--source", photos], tmp_path, timeout=90)
    assert done.rc == 4
    one_line(done, "deep.json", "nested deeper")


@pytest.mark.parametrize("what, text, words", [
    ("many aliases", "a: &a x\n" + "".join(f"k{i}: [{', '.join(['*a'] * 10)}]\n" for i in range(12)), ["aliases"]),
    ("expansion bomb", "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdef", "bcdefg")), ["expands"]),
    ("deep nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n", ["nested deeper"]),
    ("huge file", "# " + "x" * (3 * MB) + "\n", ["too large"]),
])
def test_hostile_config_files_are_refused_fast(tmp_path, photos, what, text, words):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    done = cli(["run", "--config", cfg, "--source", photos, "--validate-config"], tmp_path, timeout=60)
    assert done.rc == 2, (what, done.err)
    one_line(done, "cfg.yaml", *words)
    assert done.seconds < 40


def test_a_csv_with_an_endless_row_is_skipped_without_holding_it(tmp_path):
    from fer_edge.data.readers import FER2013_COLUMNS

    csv_p = tmp_path / "fer2013.csv"
    rng = np.random.default_rng(0)
    with open(csv_p, "w") as fh:
        fh.write(",".join(FER2013_COLUMNS) + "\n")
        for i in range(40):
            fh.write(f"{i % 7}," + " ".join(map(str, rng.integers(0, 255, 2304))) + ",Training\n")
        fh.write("3," + "1 " * (40 * MB) + ",Training\n")                 # an 80 MB row
        fh.write('3,"' + "2 " * (3 * MB) + '\n')                          # an unterminated quote
    done = cli(["audit", csv_p, "--kind", "fer2013_csv"], tmp_path, timeout=180)
    assert done.rc == 0, done.err[-2000:]
    assert "Traceback" not in done.err + done.out
    assert done.peak_mb < PEAK_MB, f"peak {done.peak_mb:.0f} MB"


# ------------------------------------------------------------------------------------------------
# 4. Only regular files; long commands stop on SIGINT/SIGTERM

def _specials(folder: Path) -> list[str]:
    os.mkfifo(folder / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "socket.png"))
    os.symlink("/dev/zero", folder / "zero.jpg")            # a device that never ends
    os.symlink(folder / "gone.png", folder / "broken.png")
    return ["fifo.jpg", "socket.png", "zero.jpg", "broken.png"]


def test_fifos_sockets_devices_and_broken_links_are_skipped_by_run_and_audit(tmp_path, tiny_tflite, photos):
    names = _specials(photos)
    done = cli(["run", "--model", tiny_tflite["int8"], "--source", photos], tmp_path, timeout=60)
    assert done.rc == 0, done.err[-2000:]
    for n in names:
        assert f"skipped {n}: " in done.err, n
    assert "FIFO" in done.err and "socket" in done.err and "character device" in done.err and "broken" in done.err
    assert [json.loads(ln)["file"] for ln in done.out.splitlines()] == ["p0.png", "p1.png", "p2.png"]

    tree = tmp_path / "tree"
    for lab in ("happy", "sad"):
        (tree / lab).mkdir(parents=True)
        for i in range(10):
            (tree / lab / f"{i}.png").write_bytes(encode(".png", _face(48, i + (lab == "sad") * 50)))
    _specials(tree / "happy")
    done = cli(["audit", tree], tmp_path, timeout=120)
    assert done.rc == 0, done.err[-2000:]
    assert "Traceback" not in done.err + done.out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_audit_stops_promptly_on_a_signal(tmp_path, sig):
    # Long enough that the signal lands mid-scan on a fast quiet machine too (12,000 files were scanned in
    # ~4 s there, and a signal at 3 s could meet the process already exiting): 50,000 hard links to one
    # PNG - regular files each, made in a second, no disk. The run is stopped at 3 s, so the size costs nothing.
    tree = tmp_path / "big"
    first = tmp_path / "face.png"
    first.write_bytes(encode(".png", _face(160, 3)))
    for lab in ("happy", "sad"):
        (tree / lab).mkdir(parents=True)
        for i in range(25_000):
            os.link(first, tree / lab / f"{i:05d}.png")
    t0 = time.monotonic()
    proc, o, e = cli_start(["audit", tree, "--workers", "1"], tmp_path)
    time.sleep(3.0)
    assert proc.poll() is None, "audit finished before the signal: make the tree larger"
    os.kill(proc.pid, sig)
    sent = time.monotonic()
    done = cli_wait(proc, o, e, 60, t0)
    assert done.rc == 130, done.err[-2000:]
    assert time.monotonic() - sent < 15, "did not stop promptly"
    one_line(done, signal.Signals(sig).name)


# ------------------------------------------------------------------------------------------------
# 5. Faults are visible and self-limiting

class _Stream:
    """An MJPEG server on loopback: the first connection gets `frames` frames then stalls; every later one
    stalls at once (a camera that hangs). Records when each connection arrived."""

    def __init__(self, frames: int = 15):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        jpg = encode(".jpg", _face(64, 5, colour=True))
        self.connects: list[float] = []
        self.stop = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.connects.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=fr")
                self.end_headers()
                n = frames if len(outer.connects) == 1 else 0
                try:
                    for _ in range(n):
                        self.wfile.write(b"--fr\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg + b"\r\n")
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    return
                outer.stop.wait(120)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def _health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def test_a_stalled_stream_degrades_health_starves_the_watchdog_and_reconnects_with_backoff(tmp_path, tiny_tflite):
    stream = _Stream()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"source: {{type: video, path: '{stream.url}', stall_s: 1.5, retry_initial_s: 0.2, "
                   "retry_max_s: 4}\n"
                   f"outputs: [{{type: http, host: 127.0.0.1, port: {port}}}, {{type: jsonl, path: '-'}}]\n")
    t0 = time.monotonic()
    proc, o, e = cli_start(["run", "--config", cfg, "--model", tiny_tflite["int8"]], tmp_path,
                           env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"})
    pings: list[tuple[float, bytes]] = []
    degraded_at = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (degraded_at is None or time.monotonic() < degraded_at + 12):
            try:
                pings.append((time.monotonic(), notify.recv(4096)))
            except socket.timeout:
                pass
            if degraded_at is None and proc.poll() is None:
                try:
                    if _health(port).get("status") == "degraded":
                        degraded_at = time.monotonic()
                except OSError:
                    pass
        assert degraded_at is not None, "health never turned degraded"
    finally:
        proc.send_signal(signal.SIGTERM)
        done = cli_wait(proc, o, e, 30, t0)
        stream.close()
        notify.close()
    assert done.rc == 0, done.err[-2000:]
    fed = [t for t, msg in pings if b"WATCHDOG=1" in msg]
    assert any(t < degraded_at for t in fed), "the watchdog was fed while frames came"
    assert not [t for t in fed if t > degraded_at + 0.5], "the watchdog was fed while the source was stalled"
    assert len(done.out.splitlines()) >= 5   # the frames before the stall were processed
    gaps = np.diff(stream.connects)
    assert len(stream.connects) >= 4, stream.connects
    assert gaps[-1] > gaps[0] + 0.3, f"no backoff between reconnects: {gaps}"
    assert "stalled" in done.err


def test_an_interactive_camera_that_cannot_deliver_fails_fast_a_service_keeps_retrying(tmp_path, tiny_tflite):
    import pty

    master, slave = pty.openpty()
    try:
        done = cli(["run", "--model", tiny_tflite["int8"], "--source", "/dev/video77"], tmp_path, timeout=60,
                   stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert done.rc == 3, done.err
    one_line(done, "/dev/video77", "wait_for_source")
    assert done.seconds < 30

    port = free_port()
    t0 = time.monotonic()
    proc, o, e = cli_start(["run", "--model", tiny_tflite["int8"], "--source", "/dev/video77",
                            "--output", f"http://127.0.0.1:{port}"], tmp_path, env={"INVOCATION_ID": "test"})
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and status != "degraded":
            try:
                status = _health(port).get("status")
            except OSError:
                time.sleep(0.2)
        assert status == "degraded"
        assert proc.poll() is None, "a service must keep retrying its camera"
    finally:
        proc.send_signal(signal.SIGTERM)
        done = cli_wait(proc, o, e, 30, t0)
    assert done.rc == 0 and "Traceback" not in done.err


def test_loop_over_bad_files_logs_each_warning_once_and_a_folder_of_only_bad_files_stops(tmp_path, tiny_tflite, photos):
    for i in range(3):
        (photos / f"bad{i}.jpg").write_bytes(b"not an image at all")
    t0 = time.monotonic()
    proc, o, e = cli_start(["run", "--model", tiny_tflite["int8"], "--source", photos, "--loop",
                            "--detect-every", "1"], tmp_path)
    time.sleep(6)
    proc.send_signal(signal.SIGTERM)
    done = cli_wait(proc, o, e, 30, t0)
    assert done.rc == 0, done.err[-2000:]
    assert len(done.out.splitlines()) > 6      # it looped
    assert done.err.count("skipped bad0.jpg") == 1, done.err[-3000:]
    assert len(done.err) < 20_000

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    for i in range(3):
        (only_bad / f"x{i}.png").write_bytes(b"")
    done = cli(["run", "--model", tiny_tflite["int8"], "--source", only_bad, "--loop", "--log-level", "ERROR"],
               tmp_path, timeout=60)
    assert done.rc == 3
    one_line(done, "--loop", "no usable frame")


# ------------------------------------------------------------------------------------------------
# 6. Outputs survive the world

def _wait(pred, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _lines(p: Path) -> list[dict]:
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def test_jsonl_file_survives_rotation_removal_truncation_and_sighup(tmp_path, tiny_tflite, photos):
    log = tmp_path / "log" / "out.jsonl"
    t0 = time.monotonic()
    proc, o, e = cli_start(["run", "--model", tiny_tflite["int8"], "--source", photos, "--loop",
                            "--output", f"jsonl:{log}"], tmp_path)
    try:
        assert _wait(lambda: len(_lines(log)) > 3)
        os.rename(log, str(log) + ".1")                                    # logrotate create
        assert _wait(lambda: len(_lines(log)) > 3), "not reopened after a move"
        log.unlink()                                                        # removed by a user
        assert _wait(lambda: len(_lines(log)) > 3), "not reopened after removal"
        with open(log, "r+") as fh:                                         # copytruncate
            fh.truncate(0)
        assert _wait(lambda: 3 < len(_lines(log))), "nothing written after truncation"
        os.rename(log, str(log) + ".2")
        proc.send_signal(signal.SIGHUP)                                     # postrotate: reopen, keep running
        assert _wait(lambda: len(_lines(log)) > 3)
        assert proc.poll() is None, "SIGHUP must not stop the daemon"
    finally:
        proc.send_signal(signal.SIGTERM)
        done = cli_wait(proc, o, e, 30, t0)
    assert done.rc == 0, done.err[-2000:]
    for p in (log, Path(str(log) + ".1"), Path(str(log) + ".2")):
        rows = _lines(p)                    # every line is a whole JSON object (json.loads would fail)
        assert rows and all(r["file"].startswith("p") for r in rows)
    assert stat.S_IMODE(log.stat().st_mode) == 0o644


def test_a_closed_pipe_ends_run_quietly(tmp_path, tiny_tflite, photos):
    t0 = time.monotonic()
    proc, o, e = cli_start(["run", "--model", tiny_tflite["int8"], "--source", photos, "--loop"], tmp_path,
                           stdout=subprocess.PIPE)
    got = [proc.stdout.readline() for _ in range(3)]                    # `| head -n 3`
    proc.stdout.close()
    done = cli_wait(proc, o, e, 60, t0)
    assert all(json.loads(g) for g in got)
    assert done.rc == 0, done.err[-2000:]
    assert "Traceback" not in done.err and "BrokenPipe" not in done.err and "Exception ignored" not in done.err


def test_reports_are_0644_and_an_out_that_is_a_file_or_unwritable_fails_before_work(tmp_path, tiny_tflite, photos):
    from fer_edge.data.synthetic import write_synthetic_tree

    data = write_synthetic_tree(tmp_path / "data", n_per_class=6, size=32, labels=["angry", "happy", "sad"])
    out = tmp_path / "audit" / "report.json"
    done = cli(["audit", data, "--json", out], tmp_path, timeout=120, umask=0o022)
    assert done.rc == 0, done.err[-2000:]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert json.loads(out.read_text())

    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    for target, words in ((blocker, ["blocker", "is a file"]), (blocker / "sub", ["blocker", "is a file"]),
                          (Path("/proc/fer-edge-cannot-be-here"), ["cannot be created"])):
        done = cli(["bench", tiny_tflite["int8"], "--data", data, "--no-speed", "--no-plots", "--out", target],
                   tmp_path, timeout=120, as_mb=8192)
        assert done.rc == 7, done.err[-2000:]
        one_line(done, *words)
    assert blocker.read_text() == "keep me"

    done = cli(["audit", data, "--json", blocker / "x.json"], tmp_path, timeout=60)
    assert done.rc == 7
    one_line(done, "blocker", "is a file")


# ------------------------------------------------------------------------------------------------
# 7. Image folders are photos, not video

def test_a_folder_of_photos_gives_one_independent_result_per_photo_across_a_class_tree(tmp_path, tiny_tflite):
    from test_runtime_support import face_frame

    tree = tmp_path / "tree"
    frames = {"happy/a.png": face_frame(320, 240, 60, 20, 1.0)[0],
              "happy/deep/b.png": face_frame(320, 240, 100, 10, 1.0, background=40)[0],
              "sad/c.png": face_frame(320, 240, 30, 30, 0.9, background=160)[0],
              "sad/empty.png": np.full((240, 320, 3), 90, np.uint8)}
    for rel, img in frames.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(encode(".png", img[:, :, ::-1]))
    os.symlink("..", tree / "sad" / "loop")                                  # a folder cycle
    done = cli(["run", "--model", tiny_tflite["int8"], "--source", tree], tmp_path, timeout=90)
    assert done.rc == 0, done.err[-2000:]
    rows = {r["file"]: r for r in map(json.loads, done.out.splitlines())}
    assert sorted(rows) == sorted(frames)                    # one result per photo, each naming its file
    assert all(r["events"] == [] for r in rows.values())     # no tracks across unrelated photos
    assert rows["sad/empty.png"]["faces"] == []
    with_faces = [f for f in frames if rows[f]["faces"]]
    assert len(with_faces) >= 2, rows
    for f in with_faces:  # alone in its own folder, each photo gets exactly the same answer: nothing carried over
        solo = tmp_path / ("solo_" + f.replace("/", "_"))
        solo.mkdir()
        (solo / "x.png").write_bytes((tree / f).read_bytes())
        alone = json.loads(cli(["run", "--model", tiny_tflite["int8"], "--source", solo], tmp_path).out)
        assert alone["faces"][0]["probabilities"] == rows[f]["faces"][0]["probabilities"], f
        assert rows[f]["faces"][0]["expression"] == rows[f]["faces"][0]["raw_expression"] or \
            rows[f]["faces"][0]["expression"] == "uncertain"


# ------------------------------------------------------------------------------------------------
# 8. The bench tells the truth by default; doctor reports the real op split

def test_bench_warns_on_a_class_that_int8_loses_without_the_gate(tmp_path, tiny_tflite):
    """A deliberately bad int8 beside a good fp32: no --max-class-drop, still a warning naming the class."""
    import keras
    import tensorflow as tf

    from fer_edge.metadata import read_metadata, write_tflite

    x, y = region_images(120, seed=3)
    data = tmp_path / "data"
    meta = read_metadata(tiny_tflite["int8"])
    for i, (img, lab) in enumerate(zip(x, y)):
        (data / meta.labels[lab]).mkdir(parents=True, exist_ok=True)
        (data / meta.labels[lab] / f"{i}.png").write_bytes(encode(".png", img[:, :, 0]))
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model_fp32.tflite").write_bytes(tiny_tflite["fp32"].read_bytes())
    (folder / "model_fp32.json").write_bytes(tiny_tflite["fp32"].with_suffix(".json").read_bytes())
    # int8 of a model that only ever says "sad": it loses the other classes entirely
    inp = keras.Input((32, 32, 1))
    h = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inp))
    o = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant([0.0, 0.0, 4.0]))(h)
    keras.Model(inp, o).export(str(tmp_path / "bad_saved"), verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "bad_saved"))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1].astype("float32")] for i in range(50))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    write_tflite(folder / "model_int8.tflite", conv.convert(), meta)
    done = cli(["bench", folder, "--data", data, "--no-speed", "--no-plots", "--out", tmp_path / "b"], tmp_path,
               timeout=300, as_mb=16384)
    assert done.rc == 0, done.err[-3000:] + done.out[-3000:]
    text = " ".join(done.out.split())
    assert "warning:" in text and "int8" in text and "pp recall" in text and "--max-class-drop" in text, text[-3000:]
    assert "angry" in text.split("pp recall", 1)[1] or "happy" in text.split("pp recall", 1)[1]
    assert str(data) in text    # it says which data it used
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert any("--max-class-drop" in w for w in report["warnings"])


def test_doctor_reports_the_op_split_the_bench_measures(tmp_path, tiny_tflite):
    from fer_edge.ops import analyse_tflite

    done = cli(["doctor", "--json", "--model", tiny_tflite["int8"], "--threads", "1"], tmp_path, timeout=90)
    checks = {c["name"]: c for c in json.loads(done.out)}
    rep = analyse_tflite(str(tiny_tflite["int8"]))
    detail = checks["model ops"]["detail"]
    assert f"{rep.delegated_ops} of {rep.total_ops} ops on XNNPACK in {rep.delegate_partitions} partition(s)" in detail
    assert f"{rep.int8_ops} int8 / {rep.float_ops} float" in detail


# ------------------------------------------------------------------------------------------------
# 9. The HTTP page

@pytest.mark.parametrize("query", ["host=0.0.0.0", "preview=false&host=0.0.0.0", "%68ost=0.0.0.0", "port=1"])
def test_a_query_string_cannot_rebind_the_page(tmp_path, photos, query):
    port = free_port()
    done = cli(["run", "--source", photos, "--output", f"http://127.0.0.1:{port}?{query}", "--validate-config"],
               tmp_path, timeout=60)
    assert done.rc == 2, done.err
    one_line(done, "query string")


def test_viewer_cap_and_connection_threads_hold_under_a_flood(tmp_path, tiny_tflite, photos):
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"outputs: [{{type: http, host: 127.0.0.1, port: {port}, preview: true}}]\n")
    t0 = time.monotonic()
    proc, o, e = cli_start(["run", "--config", cfg, "--model", tiny_tflite["int8"], "--source", photos, "--loop"],
                           tmp_path)
    socks: list[socket.socket] = []
    try:
        assert _wait(lambda: _try_health(port), 60)
        codes: list[int] = []

        def viewer() -> None:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(b"GET /preview.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                codes.append(int(s.recv(64).split()[1]))
            except (OSError, IndexError, ValueError):
                codes.append(0)

        threads = [threading.Thread(target=viewer) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert codes.count(200) <= 8 and codes.count(200) >= 1, codes
        assert codes.count(503) == 24 - codes.count(200), codes
        for _ in range(120):                                   # idle connections that never send a request
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(1.0)
        threads_now = int(next(ln.split()[1] for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                               if ln.startswith("Threads:")))
        assert threads_now < 70, f"{threads_now} threads for {len(socks)} connections"
    finally:
        for s in socks:
            s.close()
    assert _wait(lambda: _try_health(port), 30), "the page must answer again once the flood is gone"
    proc.send_signal(signal.SIGTERM)
    done = cli_wait(proc, o, e, 30, t0)
    assert done.rc == 0, done.err[-2000:]
    assert done.peak_mb < PEAK_MB


def _try_health(port: int) -> bool:
    try:
        return _health(port).get("status") in ("ok", "degraded")
    except OSError:
        return False
