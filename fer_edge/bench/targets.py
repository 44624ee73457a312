"""Targets a benchmark suite checks (e.g. "int8 at least 2x faster than fp32 at 2 threads"),
each computed from ONE BenchResult, so every ratio compares figures measured side by side."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from fer_edge.bench.result import BenchResult, VariantResult
from fer_edge.registry import Registry


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    metric: Literal["speedup", "size_ratio", "accuracy_drop_pp", "mean_recall_drop_pp"]
    variant: str = "int8"                  # the variant judged (by variant kind: float/fp32/fp16/dynamic/int8)
    against: str = "fp32"                  # what it is compared with
    threads: int | None = None             # speed metrics: which thread count
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_limit(self):
        if (self.min is None) == (self.max is None):
            raise ValueError(f"target '{self.name}': give exactly one of min or max")
        if self.metric == "speedup" and self.threads is None:
            raise ValueError(f"target '{self.name}': a speedup needs 'threads'")
        return self


@dataclass
class TargetCheck:
    name: str
    measured: float | None
    limit: str                             # ">= 2" / "<= 0.27"
    passed: bool | None                    # None: could not be measured in this run
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def status(self) -> str:
        return {True: "pass", False: "MISS", None: "n/a"}[self.passed]


Metric = Callable[[VariantResult, VariantResult, Target], tuple[float | None, str]]
METRICS: Registry[Metric] = Registry("target metric")


@METRICS.register("speedup")
def _speedup(v: VariantResult, ref: VariantResult, t: Target) -> tuple[float | None, str]:
    a, b = v.p50(t.threads), ref.p50(t.threads)
    if a is None or b is None:
        return None, f"no p50 at {t.threads} thread(s) for {v.name if a is None else ref.name}"
    how = " (Keras predict_on_batch)" if ref.kind == "keras" else ""
    return b / a, f"p50 {a:.3g} ms vs {ref.name}{how} {b:.3g} ms at {t.threads} thread(s)"


@METRICS.register("size_ratio")
def _size(v: VariantResult, ref: VariantResult, t: Target) -> tuple[float | None, str]:
    if not v.size_bytes or not ref.size_bytes:
        return None, "file size unknown"
    return v.size_bytes / ref.size_bytes, f"{v.size_bytes:,} vs {ref.size_bytes:,} bytes"


def _drop(attr: str) -> Metric:
    def fn(v: VariantResult, ref: VariantResult, t: Target) -> tuple[float | None, str]:
        if not v.ok or not ref.ok:
            return None, "not scored"
        a, b = getattr(v.scores, attr), getattr(ref.scores, attr)
        return (b - a) * 100, f"{b:.2%} ({ref.name}) -> {a:.2%} ({v.name})"

    return fn


METRICS.register("accuracy_drop_pp")(_drop("accuracy"))
METRICS.register("mean_recall_drop_pp")(_drop("mean_recall"))


def _find(result: BenchResult, group: str | None, variant: str) -> VariantResult | None:
    rows = [v for v in result.variants if v.variant == variant and (group is None or v.group == group)]
    ok = [v for v in rows if v.ok]
    return (ok or rows or [None])[0]


def check_targets(result: BenchResult, targets: list[Target], group: str | None = None) -> list[TargetCheck]:
    out = []
    for t in targets:
        limit = f">= {t.min:g}" if t.min is not None else f"<= {t.max:g}"
        v, ref = _find(result, group, t.variant), _find(result, group, t.against)
        if t.against == "float" and (ref is None or not ref.ok) and t.metric.endswith("_pp"):
            # accuracy losses may be read against the fp32 stand-in (said so in the detail); a speedup
            # over Keras may not: it is a different runtime
            ref = next((r for r in result.variants if r.is_reference and (group is None or r.group == group)), ref)
        if v is None or ref is None or v.error or ref.error:
            missing = t.variant if v is None or v.error else t.against
            out.append(TargetCheck(t.name, None, limit, None, f"no measured {missing} variant in this run"))
            continue
        value, detail = METRICS.get(t.metric)(v, ref, t)
        if value is None:
            out.append(TargetCheck(t.name, None, limit, None, detail))
            continue
        ok = value >= t.min if t.min is not None else value <= t.max
        if ref.variant != t.against:
            detail += f" ({ref.name} stands in for {t.against})"
        out.append(TargetCheck(t.name, value, limit, ok, detail))
    return out


def targets_markdown(checks: list[TargetCheck]) -> str:
    rows = ["| target | measured | limit | result | how |", "|---|---|---|---|---|"]
    for c in checks:
        m = "-" if c.measured is None else f"{c.measured:.3g}"
        rows.append(f"| {c.name} | {m} | {c.limit} | {c.status} | {c.detail} |")
    return "\n".join(rows) + "\n"
