"""Live counters of the running daemon: FPS, per-stage latencies, drops, errors, health.

One `Metrics` object is shared by the pipeline (writer, many calls per frame) and the sinks
(HTTP reads it; sinks count their own drops and errors). Everything is guarded by one lock and
kept in bounded windows, so a daemon that runs for months holds a fixed amount of memory.

Conventions the rest of the runtime relies on:
- the pipeline calls ``inc("frames")`` once per result handed to the sinks; FPS is the rate of
  those calls over the last ``fps_window_s`` seconds;
- ``inc("frames_dropped")`` counts stale camera frames skipped by the capture thread;
- ``inc("errors")`` counts every error that was handled and survived;
- sinks count ``sink_published`` / ``sink_dropped`` / ``sink_errors`` with a ``sink=`` label;
- health is reported per component (the pipeline, each sink); the overall state is the worst.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from typing import Any

HEALTH_STATES = ("ok", "starting", "degraded", "stopping")
# Which state wins when components disagree: a stopping daemon is stopping whatever else is true,
# and one degraded component makes the whole device degraded.
_SEVERITY = {"ok": 0, "starting": 1, "degraded": 2, "stopping": 3}

# Counters every scrape shows even before the first increment, so dashboards and alert rules
# see 0 instead of "no data".
_ALWAYS_COUNTERS = ("frames", "frames_dropped", "errors")

_HELP = {
    "frames": "Frame results handed to the sinks.",
    "frames_dropped": "Camera frames skipped because inference was busy (stale frames).",
    "errors": "Errors that were handled and survived.",
    "sink_published": "Results a sink published.",
    "sink_dropped": "Results a sink could not publish (queue or buffer overflow, unflushed at exit).",
    "sink_errors": "Exceptions raised by a sink while publishing.",
}

_NO_LABELS: tuple[tuple[str, str], ...] = ()

_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


def _metric_name(name: str) -> str:
    return _NAME_RE.sub("_", name)


def _label_value(value: object) -> str:
    # Prometheus text format: backslash, double quote and newline are escaped inside label values.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{_metric_name(k)}="{_label_value(v)}"' for k, v in labels) + "}"


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without numpy."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class _Stage:
    __slots__ = ("window", "count", "total")

    def __init__(self, window: int):
        self.window: deque[float] = deque(maxlen=window)
        self.count = 0
        self.total = 0.0


class Metrics:
    """Thread-safe live metrics. See the module docstring for the naming conventions."""

    def __init__(self, fps_window_s: float = 5.0, latency_window: int = 512):
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._fps_window_s = float(fps_window_s)
        self._latency_window = int(latency_window)
        # Bounded: at most fps_window_s seconds of timestamps (a few thousand even at high FPS).
        self._frame_times: deque[float] = deque()
        self._stages: dict[str, _Stage] = {}
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._health: dict[str, tuple[str, str, float]] = {"pipeline": ("starting", "", time.time())}

    # ---- writers -------------------------------------------------------------------------

    def observe_stage(self, stage: str, ms: float) -> None:
        ms = float(ms)
        with self._lock:
            st = self._stages.get(stage)
            if st is None:
                st = self._stages[stage] = _Stage(self._latency_window)
            st.window.append(ms)
            st.count += 1
            st.total += ms

    def inc(self, name: str, n: int = 1, **labels: object) -> None:
        """Add `n` to counter `name` (optionally labelled, e.g. ``inc("sink_dropped", sink="mqtt")``)."""
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        now = time.monotonic()
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + int(n)
            if name == "frames" and not labels:
                self._frame_times.extend([now] * int(n))
                self._trim_frames(now)

    def set_gauge(self, name: str, value: float, **labels: object) -> None:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            self._gauges[key] = float(value)

    def set_health(self, state: str, reason: str = "", component: str = "pipeline") -> None:
        """Report the health of one component; the overall health is the worst component's."""
        if state not in _SEVERITY:
            raise ValueError(f"health state {state!r} is not one of {', '.join(HEALTH_STATES)}")
        with self._lock:
            self._health[component] = (state, reason, time.time())

    def clear_health(self, component: str) -> None:
        """Forget a component (e.g. a sink that was closed) so it no longer affects the state."""
        with self._lock:
            self._health.pop(component, None)

    # ---- readers -------------------------------------------------------------------------

    def _trim_frames(self, now: float) -> None:
        cutoff = now - self._fps_window_s
        ft = self._frame_times
        while ft and ft[0] < cutoff:
            ft.popleft()

    def _fps_locked(self) -> float:
        now = time.monotonic()
        self._trim_frames(now)
        ft = self._frame_times
        if len(ft) < 2:
            return 0.0
        # Over the span actually covered, so a daemon that just started does not under-report;
        # a stall shows up as a falling FPS because the window's end is "now", not the last frame.
        span = max(now - ft[0], 1e-9)
        return (len(ft) - 1) / span if now - ft[-1] < self._fps_window_s else 0.0

    def fps(self) -> float:
        with self._lock:
            return self._fps_locked()

    def counter(self, name: str, **labels: object) -> int:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            return self._counters.get(key, 0)

    def counter_sum(self, name: str) -> int:
        """The counter summed over all its label sets."""
        with self._lock:
            return sum(v for (n, _), v in self._counters.items() if n == name)

    def health(self) -> tuple[str, str]:
        with self._lock:
            return self._health_locked()[:2]

    def _health_locked(self) -> tuple[str, str, dict[str, dict[str, Any]]]:
        comps: dict[str, dict[str, Any]] = {c: {"state": s, "reason": r, "since": t}
                                            for c, (s, r, t) in self._health.items()}
        if not comps:
            return "ok", "", comps
        worst = max(_SEVERITY[v["state"]] for v in comps.values())
        state = next(s for s, sev in _SEVERITY.items() if sev == worst)
        reasons = [f"{c}: {v['reason']}" if v["reason"] else c
                   for c, v in sorted(comps.items()) if v["state"] == state and state != "ok"]
        return state, "; ".join(reasons), comps

    def _stage_stats_locked(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, st in self._stages.items():
            vals = sorted(st.window)
            out[name] = {
                "p50": _quantile(vals, 0.5),
                "p95": _quantile(vals, 0.95),
                "mean": (sum(vals) / len(vals)) if vals else float("nan"),
                "count": st.count,
                "total_ms": st.total,
            }
        return out

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view (the status page and /api/metrics read this)."""
        with self._lock:
            state, reason, comps = self._health_locked()
            counters: dict[str, object] = {name: 0 for name in _ALWAYS_COUNTERS}
            for (name, labels), v in sorted(self._counters.items()):
                if labels:
                    slot = counters.setdefault(name, {})
                    if not isinstance(slot, dict):  # same name used with and without labels
                        slot = counters[name] = {"": slot}
                    slot[",".join(f"{k}={lv}" for k, lv in labels)] = v
                else:
                    counters[name] = v
            gauges: dict[str, float] = {}
            for (name, labels), gv in sorted(self._gauges.items()):
                key = name + ("{" + ",".join(f"{k}={lv}" for k, lv in labels) + "}" if labels else "")
                gauges[key] = gv
            stages: dict[str, dict[str, float | None]] = {  # NaN is not JSON
                stage: {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in s.items()}
                for stage, s in self._stage_stats_locked().items()}
            return {
                "fps": round(self._fps_locked(), 3),
                "uptime_s": round(time.monotonic() - self._start, 3),
                "health": {"state": state, "reason": reason, "components": comps},
                "stages": stages,
                "counters": counters,
                "gauges": gauges,
            }

    def prometheus_text(self) -> str:
        """Prometheus text exposition format 0.0.4 (``Content-Type: text/plain; version=0.0.4``)."""
        with self._lock:
            state, _, comps = self._health_locked()
            fps = self._fps_locked()
            stages = self._stage_stats_locked()
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            uptime = time.monotonic() - self._start
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family("fer_edge_fps", "gauge", f"Frame results published per second (last {self._fps_window_s:g} s).")
        lines.append(f"fer_edge_fps {_fmt(float(fps))}")
        family("fer_edge_uptime_seconds", "gauge", "Seconds since the metrics were created.")
        lines.append(f"fer_edge_uptime_seconds {_fmt(float(uptime))}")

        family("fer_edge_stage_latency_ms", "summary",
               f"Per-stage latency in milliseconds (quantiles over the last {self._latency_window} frames).")
        for stage, s in sorted(stages.items()):
            for q, key in (("0.5", "p50"), ("0.95", "p95")):
                lines.append(f'fer_edge_stage_latency_ms{{stage="{_label_value(stage)}",quantile="{q}"}} '
                             f"{_fmt(float(s[key]))}")
            lines.append(f'fer_edge_stage_latency_ms_sum{{stage="{_label_value(stage)}"}} {_fmt(float(s["total_ms"]))}')
            lines.append(f'fer_edge_stage_latency_ms_count{{stage="{_label_value(stage)}"}} {s["count"]}')

        by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], int]]] = {n: [] for n in _ALWAYS_COUNTERS}
        for (name, labels), v in counters.items():
            by_name.setdefault(name, []).append((labels, v))
        for name in sorted(by_name):
            metric = f"fer_edge_{_metric_name(name)}_total"
            family(metric, "counter", _HELP.get(name, f"Count of {name}."))
            series = by_name[name] or [((), 0)]
            for labels, v in sorted(series):
                lines.append(f"{metric}{_labels_text(labels)} {v}")

        gauge_names: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {"faces": []}
        for (name, labels), gv in gauges.items():
            gauge_names.setdefault(name, []).append((labels, gv))
        for name in sorted(gauge_names):
            metric = f"fer_edge_{_metric_name(name)}"
            family(metric, "gauge", "Faces in the latest frame." if name == "faces" else f"Gauge {name}.")
            gseries = gauge_names[name] or [(_NO_LABELS, 0.0)]
            for labels, gv in sorted(gseries):
                lines.append(f"{metric}{_labels_text(labels)} {_fmt(float(gv))}")

        family("fer_edge_health", "gauge", "1 for the current overall health state, 0 for the others.")
        for hs in HEALTH_STATES:
            lines.append(f'fer_edge_health{{state="{hs}"}} {1 if hs == state else 0}')
        family("fer_edge_component_health", "gauge", "Per component: 1 for its current state.")
        for comp, info in sorted(comps.items()):
            lines.append(f'fer_edge_component_health{{component="{_label_value(comp)}",'
                         f'state="{info["state"]}"}} 1')
        return "\n".join(lines) + "\n"
