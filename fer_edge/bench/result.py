"""What a benchmark found, as plain data: one row per variant, one speed record per thread count."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fer_edge.errors import GateError
from fer_edge.metrics import GateFailure, Scores


@dataclass
class Speed:
    threads: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    fps: float | None = None
    n_runs: int | None = None
    stopped_by: str | None = None
    cold_start_ms: float | None = None
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    rss_delta_mb: float | None = None      # over the same process with the runtime imported, no model
    engine: str | None = None
    kernels: dict | None = None            # fer_edge.ops.KernelReport.as_dict() (TFLite only)
    isolated: bool = True                  # measured in a fresh process
    error: str | None = None

    @classmethod
    def from_probe(cls, threads: int, res: dict, isolated: bool = True) -> "Speed":
        if "error" in res:
            return cls(threads=threads, error=res["error"], isolated=isolated)
        lat = res["latency"]
        return cls(threads=threads, p50_ms=lat["p50_ms"], p95_ms=lat["p95_ms"], p99_ms=lat["p99_ms"],
                   mean_ms=lat["mean_ms"], fps=lat["fps"], n_runs=lat["n_runs"], stopped_by=lat["stopped_by"],
                   cold_start_ms=res.get("cold_start_ms"), load_ms=res.get("load_ms"),
                   peak_rss_mb=res.get("peak_rss_mb"), rss_delta_mb=res.get("rss_delta_mb"),
                   engine=res.get("engine"), kernels=res.get("kernels"), isolated=isolated)

    @property
    def ok(self) -> bool:
        return self.error is None and self.p50_ms is not None


@dataclass
class VariantResult:
    name: str
    group: str
    variant: str                           # float | fp32 | fp16 | dynamic | int8
    kind: str                              # keras | tflite
    path: str
    size_bytes: int | None = None
    labels: list[str] = field(default_factory=list)
    is_reference: bool = False
    reference: str | None = None           # name of the row this one is compared with
    scores: Scores | None = None
    clean_scores: Scores | None = None     # on the clean subset (BenchResult.data["clean_note"])
    speed: dict[int, Speed] = field(default_factory=dict)
    error: str | None = None
    gate_failures: list[GateFailure] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tta: str = "none"                      # test-time augmentation (fer_edge.tta)

    @property
    def ok(self) -> bool:
        return self.error is None and self.scores is not None

    def p50(self, threads: int) -> float | None:
        s = self.speed.get(threads)
        return s.p50_ms if s is not None and s.ok else None

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("scores", "clean_scores", "speed", "gate_failures")}
        d["scores"] = self.scores.as_dict() if self.scores else None
        d["clean_scores"] = self.clean_scores.as_dict() if self.clean_scores else None
        d["speed"] = {str(t): asdict(s) for t, s in sorted(self.speed.items())}
        d["gate_failures"] = [dict(asdict(g), message=str(g)) for g in self.gate_failures]
        return d


@dataclass
class BenchResult:
    variants: list[VariantResult]
    data: dict                             # source, kind, split, split_note, n, labels, class_counts, skipped
    threads: list[int]
    machine: dict
    settings: dict                         # runs, warmup, max_seconds, limit, gate limits
    recommendation: dict[str, dict] = field(default_factory=dict)   # group -> what to ship and why
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def variant(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant '{name}'; have {', '.join(v.name for v in self.variants)}")

    @property
    def gate_failures(self) -> list[tuple[str, GateFailure]]:
        return [(v.name, g) for v in self.variants for g in v.gate_failures]

    @property
    def gated(self) -> bool:
        return self.settings.get("max_drop") is not None or self.settings.get("max_class_drop") is not None

    def gate_problems(self) -> list[str]:
        """Every reason the gate fails: drops past the limits, and (with a gate set) variants that
        could not be measured or had no float reference to be compared with."""
        out = [f"{name}: {g}" for name, g in self.gate_failures]
        if self.gated:
            for v in self.variants:
                if v.error:
                    out.append(f"{v.name}: could not be measured ({v.error})")
                elif not v.is_reference and v.reference is None:
                    out.append(f"{v.name}: no float reference in its folder to compare with "
                               "(add the .keras or the fp32 .tflite)")
        return out

    @property
    def passed(self) -> bool:
        return not self.gate_problems()

    def raise_for_gate(self) -> None:
        """GateError naming every variant and class that fell further than --max-drop/--max-class-drop."""
        problems = self.gate_problems()
        if problems:
            raise GateError("quantization gate failed - " + "; ".join(problems)
                            + ". Recalibrate with more/representative images, try the dynamic or fp16 variant, "
                            "or loosen --max-drop/--max-class-drop if the loss is acceptable.")

    def as_dict(self) -> dict:
        return {
            "schema": "fer-edge-bench/1",
            "data": self.data, "threads": self.threads, "machine": self.machine, "settings": self.settings,
            "variants": [v.as_dict() for v in self.variants],
            "recommendation": self.recommendation, "warnings": self.warnings,
            "gate": {"checked": self.gated, "passed": self.passed,
                     "problems": self.gate_problems()},
        }
