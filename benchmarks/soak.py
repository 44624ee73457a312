"""Soak: the real daemon at full speed for a long time, with nothing lost and nothing growing.

    .venv/bin/python benchmarks/soak.py --minutes 60 --broker-outage-s 60

What it does: writes a looping 640x480 MJPG video in which a real face (scikit-image's astronaut,
public domain) glides and grows; starts a real mosquitto on loopback and a persistent-session
subscriber that records every frame index it receives on <prefix>/frame; runs `fer-edge run` as a
subprocess (video --loop, JSON-lines file + MQTT + HTTP outputs) for --minutes; every --sample-s it
samples the daemon's resident memory (psutil) and its frame counter, drops and health (/metrics,
/healthz of the HTTP output). With --broker-outage-s S the broker is stopped for S seconds in the
middle and restarted on the same port. At the end the daemon gets SIGTERM and the books are closed:

    produced  = results the daemon reports at exit (frame indices 0..N-1)
    received  = distinct frame indices the subscriber got
    dropped   = sink_dropped{sink="mqtt"} (buffer overflow during the outage, queue, unflushed at exit)
    lost      = produced - received - dropped              -> must be 0

Pass criteria (printed, and in soak.json): RSS growth after warm-up < 10 MB (median of the last 10 %
of samples minus median of the first 10 % after warm-up), no FPS decay (last 10 % >= 90 % of the
first 10 % after warm-up, outage excluded), zero lost. Writes soak.json, soak.md, soak.png into --out
(default benchmarks/results/soak). Exit status 0 when every criterion passes.

Model: --model, else what benchmarks/pipeline_bench.py picks (the newest int8 export under runs/,
else an int8 MobileNet it builds once). Another process loading the CPU (a training) lowers the FPS
for its duration: the load average is recorded at start and end - run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from _broker import Broker, BrokerError, free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "soak"
PREFIX = "soak"
RSS_LIMIT_MB = 10.0
FPS_KEEP = 0.90

_SAMPLE = re.compile(r'^(fer_edge_[a-z_]+)(\{[^}]*\})? ([-+0-9.eEinfaNn]+)$')


# ---------------------------------------------------------------------------------------------
# the subscriber that counts (the broker is benchmarks/_broker.py, shared with the MQTT tests)


class Counter:
    """A persistent-session paho subscriber: how many times each frame index arrived."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.seen = bytearray()
        self.messages = 0
        self.bad = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-counter-{os.getpid()}",
                                  clean_session=False)
        self.client.reconnect_delay_set(0.1, 1.0)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/frame", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            i = int(json.loads(msg.payload)["frame_index"])
        except (ValueError, KeyError, TypeError):
            self.bad += 1
            return
        with self._lock:
            self.messages += 1
            if i >= len(self.seen):
                self.seen.extend(bytes(max(i + 1 - len(self.seen), 65536)))
            if self.seen[i] < 255:
                self.seen[i] += 1

    def received(self, n: int | None = None) -> int:
        with self._lock:
            view = self.seen if n is None else self.seen[:n]
            return len(view) - view.count(0)

    def duplicates(self) -> int:
        with self._lock:
            return sum(v - 1 for v in self.seen if v > 1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------------------------
# the daemon and its endpoints


def scrape(port: int) -> dict:
    """Counters from /metrics: frames, sink_dropped per sink, errors; and the health from /healthz."""
    out: dict = {"frames": None, "dropped": {}, "errors": 0, "health": "?"}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except (OSError, urllib.error.URLError):
        return out
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "fer_edge_frames_total":
            out["frames"] = int(value)
        elif name == "fer_edge_errors_total":
            out["errors"] = int(value)
        elif name == "fer_edge_sink_dropped_total":
            sink = re.search(r'sink="([^"]*)"', labels)
            if sink:
                out["dropped"][sink.group(1)] = out["dropped"].get(sink.group(1), 0) + int(value)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
            out["health"] = json.loads(r.read())["status"]
    except urllib.error.HTTPError as e:
        try:
            out["health"] = json.loads(e.read())["status"]
        except ValueError:
            out["health"] = f"http {e.code}"
    except (OSError, ValueError):
        pass
    return out


def write_config(path: Path, model: Path, video: Path, jsonl: Path, broker_port: int, http_port: int,
                 threads: int, buffer_max: int) -> None:
    import yaml

    cfg = {
        "classifier": {"model": str(model), "threads": threads},
        "source": {"type": "video", "path": str(video), "loop": True},
        "outputs": [
            {"type": "jsonl", "path": str(jsonl), "rotate_mb": 32, "keep": 2},
            {"type": "mqtt", "host": "127.0.0.1", "port": broker_port, "prefix": PREFIX, "qos": 1,
             "buffer_max": buffer_max, "reconnect_min_s": 0.5, "reconnect_max_s": 5.0,
             "client_id": f"soak-daemon-{os.getpid()}", "flush_timeout_s": 1.5},
            {"type": "http", "port": http_port},
        ],
        "logging": {"level": "INFO"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def make_video(path: Path, frames: int) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pipeline_bench import face_frames, write_video

    imgs, _ = face_frames(frames)
    write_video(path, imgs)


def pick_model(explicit: str | None) -> tuple[Path, str]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pipeline_bench import find_model

    return find_model(explicit)


# ---------------------------------------------------------------------------------------------
# judging and reporting


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def judge(samples: list[dict], warmup_s: float, outage: tuple[float, float] | None, books: dict) -> dict:
    steady = [s for s in samples if s["t"] >= warmup_s]
    n = max(1, len(steady) // 10)
    first, last = steady[:n], steady[-n:]
    rss_growth = (_median([s["rss_mb"] for s in last]) - _median([s["rss_mb"] for s in first])) if steady else None

    end = samples[-1]["t"] if samples else 0.0
    recovery = min(30.0, 0.1 * end)      # the reconnect and the buffered burst after the outage

    def calm(s: dict) -> bool:  # FPS samples away from the outage and its reconnect
        return outage is None or not (outage[0] - 1 <= s["t"] <= outage[1] + recovery)

    fps_first = _median([s["fps"] for s in first if calm(s)])
    fps_last = _median([s["fps"] for s in last if calm(s)])
    during = [s["fps"] for s in samples if outage and outage[0] <= s["t"] <= outage[1] and s["fps"] is not None]
    criteria = {
        "rss_growth_mb": {"value": None if rss_growth is None else round(rss_growth, 2), "limit": RSS_LIMIT_MB,
                          "pass": rss_growth is not None and rss_growth < RSS_LIMIT_MB},
        "fps_last_vs_first": {"first": fps_first and round(fps_first, 1), "last": fps_last and round(fps_last, 1),
                              "ratio": round(fps_last / fps_first, 3) if fps_first and fps_last else None,
                              "limit": FPS_KEEP,
                              "pass": bool(fps_first and fps_last and fps_last >= FPS_KEEP * fps_first)},
        "lost": {"value": books["lost"], "pass": books["lost"] == 0},
    }
    return {"criteria": criteria, "fps_during_outage": _median(during), "steady_samples": len(steady),
            "all_pass": all(c["pass"] for c in criteria.values())}


def plot(path: Path, samples: list[dict], warmup_s: float, outage) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot(t, [s["rss_mb"] for s in samples], color="tab:blue")
    a1.set_ylabel("resident memory (MB)")
    a2.plot(t, [s["fps"] for s in samples], color="tab:green")
    a2.set_ylabel("frames per second")
    a2.set_xlabel("minutes")
    for ax in (a1, a2):
        ax.axvspan(0, warmup_s / 60, color="0.9", label="warm-up")
        if outage:
            ax.axvspan(outage[0] / 60, outage[1] / 60, color="tab:red", alpha=0.15, label="broker stopped")
        ax.grid(alpha=0.3)
    a1.legend(loc="lower right")
    a1.set_title("fer-edge run soak: RSS and FPS over time")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def render_md(r: dict) -> str:
    c, b = r["judgement"]["criteria"], r["books"]
    ok = lambda v: "pass" if v else "**FAIL**"  # noqa: E731
    lines = [
        "# Soak: `fer-edge run` at full speed", "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, load average "
        f"{r['machine']['load_start']} at start, {r['machine']['load_end']} at end.  ",
        f"Model: {r['model']['path']} ({r['model']['note']}); {r['settings']['threads']} classifier thread(s); "
        f"video 640x480 MJPG, {r['settings']['video_frames']} frames looped; outputs JSON lines, MQTT "
        f"(qos 1, buffer {r['settings']['mqtt_buffer']}), HTTP.  ",
        f"Duration {r['duration_s'] / 60:.1f} min, warm-up {r['settings']['warmup_s'] / 60:.1f} min, a sample "
        f"every {r['settings']['sample_s']} s"
        + (f"; broker stopped for {r['settings']['broker_outage_s']} s at minute {r['outage'][0] / 60:.1f}."
           if r["outage"] else "."), "",
        "| criterion | measured | limit | verdict |", "|---|---|---|---|",
        f"| RSS growth after warm-up | {c['rss_growth_mb']['value']} MB | < {RSS_LIMIT_MB:g} MB | "
        f"{ok(c['rss_growth_mb']['pass'])} |",
        f"| FPS, last 10 % vs first 10 % after warm-up | {c['fps_last_vs_first']['last']} vs "
        f"{c['fps_last_vs_first']['first']} (x{c['fps_last_vs_first']['ratio']}) | >= x{FPS_KEEP} | "
        f"{ok(c['fps_last_vs_first']['pass'])} |",
        f"| lost results (end to end, MQTT) | {b['lost']} | 0 | {ok(c['lost']['pass'])} |", "",
        "| books | results |", "|---|---|",
        f"| produced by the daemon | {b['produced']} |",
        f"| received by the MQTT subscriber | {b['received']} |",
        f"| dropped and counted by the MQTT sink (sink_dropped) | {b['dropped']} |",
        f"| lost (produced - received - dropped) | {b['lost']} |",
        f"| duplicates (qos 1 redelivery) | {b['duplicates']} |",
        f"| JSON-lines sink dropped | {b['jsonl_dropped']} |", "",
        f"RSS: {r['rss_mb']['start']} MB after warm-up, {r['rss_mb']['end']} MB at the end, peak "
        f"{r['rss_mb']['peak']} MB. FPS during the broker outage: {r['judgement']['fps_during_outage']}.",
        "", "![RSS and FPS over time](soak.png)", "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--broker-outage-s", type=float, default=0.0, help="stop the broker this long, mid-run")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--warmup-s", type=float, default=None, help="default: 20 %% of the run, at most 5 min")
    ap.add_argument("--video-frames", type=int, default=300)
    ap.add_argument("--mqtt-buffer", type=int, default=2000, help="MQTT sink buffer_max")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    import psutil

    duration = args.minutes * 60
    warmup = args.warmup_s if args.warmup_s is not None else min(300.0, 0.2 * duration)
    sample_s = min(args.sample_s, max(0.5, duration / 20))
    work = Path(tempfile.mkdtemp(prefix="fer-edge-soak-"))
    model, model_note = pick_model(args.model)
    video = work / "face_640x480.avi"
    make_video(video, args.video_frames)
    # an offline persistent subscriber must not lose messages to the broker's own queue limit
    broker = Broker(work / "broker", extra=["max_queued_messages 0"], log_all=False).start(timeout=10)
    counter = Counter(broker.port)
    http_port = free_port()
    cfg = work / "soak.yaml"
    write_config(cfg, Path(model).resolve(), video, work / "results.jsonl", broker.port, http_port, args.threads,
                 args.mqtt_buffer)
    load_start = [round(v, 2) for v in os.getloadavg()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    errlog = open(work / "daemon.log", "w+")
    daemon = subprocess.Popen([sys.executable, "-m", "fer_edge.cli", "run", "--config", str(cfg)],
                              stdout=subprocess.DEVNULL, stderr=errlog, env=env, cwd=work)
    proc = psutil.Process(daemon.pid)
    print(f"soak: {args.minutes:g} min, daemon pid {daemon.pid}, broker :{broker.port}, http :{http_port}, "
          f"work dir {work}", flush=True)

    samples: list[dict] = []
    outage = None
    outage_at = duration / 2 - args.broker_outage_s / 2 if args.broker_outage_s > 0 else None
    broker_down = False
    try:
        deadline = time.monotonic() + 120
        while scrape(http_port)["frames"] in (None, 0):
            if daemon.poll() is not None or time.monotonic() > deadline:
                errlog.seek(0)
                sys.exit(f"the daemon did not start:\n{errlog.read()[-3000:]}")
            time.sleep(0.2)
        t0 = time.monotonic()
        prev = (t0, scrape(http_port)["frames"] or 0)
        next_sample = t0 + sample_s
        while True:
            now = time.monotonic()
            t = now - t0
            if outage_at is not None and not broker_down and outage is None and t >= outage_at:
                broker.stop(timeout=10)
                broker_down, outage = True, [t, None]
                print(f"  {t / 60:5.1f} min  broker stopped", flush=True)
            if broker_down and t >= outage[0] + args.broker_outage_s:
                broker.start(timeout=10)
                broker_down, outage[1] = False, t
                print(f"  {t / 60:5.1f} min  broker restarted", flush=True)
            if now >= next_sample:
                next_sample += sample_s
                m = scrape(http_port)
                frames = m["frames"] if m["frames"] is not None else prev[1]
                fps = (frames - prev[1]) / (now - prev[0]) if now > prev[0] else None
                prev = (now, frames)
                s = {"t": round(t, 2), "rss_mb": round(proc.memory_info().rss / 2**20, 2),
                     "fps": round(fps, 2) if fps is not None else None, "frames": frames,
                     "received": counter.messages, "mqtt_dropped": m["dropped"].get("mqtt", 0),
                     "health": m["health"], "errors": m["errors"], "cpu_load": round(os.getloadavg()[0], 2)}
                samples.append(s)
                print(f"  {t / 60:5.1f} min  rss {s['rss_mb']:7.1f} MB  fps {s['fps'] or 0:6.1f}  frames {frames:8d}  "
                      f"mqtt recv {s['received']:8d} dropped {s['mqtt_dropped']:6d}  health {s['health']}", flush=True)
            if daemon.poll() is not None:
                errlog.seek(0)
                sys.exit(f"the daemon exited early ({daemon.returncode}):\n{errlog.read()[-3000:]}")
            if t >= duration:
                break
            time.sleep(0.05)
        final = scrape(http_port)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        if broker_down:
            broker.start(timeout=10)
    errlog.seek(0)
    log = errlog.read()
    errlog.close()
    m = re.search(r"stopped \([^)]*\): (\d+) results", log)
    if code != 0 or not m:
        print(log[-3000:])
        return 2
    produced = int(m.group(1))
    # what could not be flushed at exit was counted by the daemon after the last scrape: read its log
    exit_unflushed = sum(int(x) for x in re.findall(r"mqtt sink 'mqtt': (\d+) buffered result\(s\) not delivered", log))
    exit_unflushed += sum(int(x) for x in re.findall(r"results not flushed at exit: \{[^}]*'mqtt': (\d+)", log))
    settle = time.monotonic() + 15
    last = -1
    while time.monotonic() < settle and counter.received(produced) != last:
        last = counter.received(produced)
        time.sleep(1.0)
    received = counter.received(produced)
    dropped = final["dropped"].get("mqtt", 0) + exit_unflushed
    books = {"produced": produced, "received": received, "dropped": dropped,
             "dropped_before_exit": final["dropped"].get("mqtt", 0), "dropped_at_exit": exit_unflushed,
             "lost": produced - received - dropped, "duplicates": counter.duplicates(),
             "beyond_produced": counter.received() - received, "undecodable": counter.bad,
             "jsonl_dropped": final["dropped"].get("jsonl", 0), "daemon_errors": final["errors"]}
    counter.close()
    broker.stop()
    judgement = judge(samples, warmup, tuple(outage) if outage else None, books)
    steady = [s for s in samples if s["t"] >= warmup] or samples
    result = {
        "command": "benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "load_start": load_start,
                    "load_end": [round(v, 2) for v in os.getloadavg()]},
        "model": {"path": str(model), "note": model_note},
        "settings": {"minutes": args.minutes, "threads": args.threads, "sample_s": sample_s, "warmup_s": warmup,
                     "broker_outage_s": args.broker_outage_s, "mqtt_buffer": args.mqtt_buffer,
                     "video_frames": args.video_frames},
        "duration_s": round(samples[-1]["t"], 1) if samples else 0, "outage": outage, "books": books,
        "rss_mb": {"start": steady[0]["rss_mb"], "end": steady[-1]["rss_mb"],
                   "peak": max(s["rss_mb"] for s in samples)},
        "judgement": judgement, "samples": samples,
    }
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.lower().startswith("model name")), None)
        result["machine"]["cpu"] = cpu or result["machine"]["cpu"]
    except OSError:
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    from fer_edge.atomic import atomic_write_text

    atomic_write_text(args.out / "soak.json", json.dumps(result, indent=1))
    atomic_write_text(args.out / "soak.md", render_md(result))
    plot(args.out / "soak.png", samples, warmup, outage)
    shutil.rmtree(work, ignore_errors=True)
    c = judgement["criteria"]
    print(f"\nbooks: produced {produced}, received {received}, dropped (counted) {dropped}, lost {books['lost']}")
    print(f"RSS growth after warm-up: {c['rss_growth_mb']['value']} MB (< {RSS_LIMIT_MB:g}) "
          f"{'PASS' if c['rss_growth_mb']['pass'] else 'FAIL'}")
    print(f"FPS last/first 10 %: {c['fps_last_vs_first']['last']} / {c['fps_last_vs_first']['first']} "
          f"(>= x{FPS_KEEP}) {'PASS' if c['fps_last_vs_first']['pass'] else 'FAIL'}")
    print(f"lost: {books['lost']} {'PASS' if c['lost']['pass'] else 'FAIL'}")
    print(f"wrote {args.out}/soak.json, soak.md, soak.png")
    return 0 if judgement["all_pass"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokerError as e:
        sys.exit(f"soak: {e}")
