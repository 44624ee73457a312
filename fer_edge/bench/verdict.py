"""Judgements on measured rows: the accuracy gate, quantized variants slower than fp32, what to ship."""

from __future__ import annotations

from fer_edge.bench.result import VariantResult
from fer_edge.metrics import gate

QUANTIZED = ("fp16", "dynamic", "int8")
# Timing noise on a shared CPU: a variant is called slower than fp32 only past this margin.
SLOWER_MARGIN = 0.05
# Limits the recommendation uses when no gate was asked for (the targets for the default model).
DEFAULT_REC_MAX_DROP = 0.5
DEFAULT_REC_MAX_CLASS_DROP = None
# Without --max-class-drop the bench still warns (it does not fail) when a quantized variant loses more
# than this on any one class: a small overall drop can hide a class that collapsed.
WARN_CLASS_DROP_PP = 5.0


def class_drop_warnings(rows: list[VariantResult], max_class_drop: float | None,
                        threshold_pp: float = WARN_CLASS_DROP_PP) -> list[str]:
    """One warning per quantized row whose recall on some class falls more than `threshold_pp` below its
    reference's; none when the per-class gate was asked for (it reports these as failures)."""
    if max_class_drop is not None:
        return []
    by_name = {r.name: r for r in rows}
    out = []
    for r in rows:
        ref = by_name.get(r.reference) if r.reference else None
        if r.is_reference or not r.ok or ref is None or r.scores is None or ref.scores is None:
            continue
        fails = [f for f in gate(ref.scores, r.scores, None, threshold_pp) if f.what != "accuracy"]
        if fails:
            worst = ", ".join(f"{f.what} {f.reference * 100:.1f}% -> {f.value * 100:.1f}% ({-f.drop_pp:+.1f} pp)"
                              for f in sorted(fails, key=lambda f: -f.drop_pp))
            out.append(f"{r.name} loses more than {threshold_pp:g} pp recall on {len(fails)} class(es) vs "
                       f"{ref.name}: {worst}. Pass --max-class-drop PP to make this fail the run")
    return out


def apply_gate(rows: list[VariantResult], max_drop: float | None, max_class_drop: float | None) -> None:
    """Fill `gate_failures` of every measured non-reference row against its group's reference."""
    if max_drop is None and max_class_drop is None:
        return
    by_name = {r.name: r for r in rows}
    for r in rows:
        if r.is_reference or not r.ok or r.reference is None:
            continue
        r.gate_failures = gate(by_name[r.reference].scores, r.scores, max_drop, max_class_drop)


def _left_fast_kernels(row: VariantResult, base: VariantResult, threads: int) -> str:
    """Ops that run on builtin kernels in `row` but not (or less often) in `base`."""
    mine = ((row.speed[threads].kernels or {}).get("not_delegated") or {})
    theirs = ((base.speed[threads].kernels or {}).get("not_delegated") or {}) if threads in base.speed else {}
    extra = {op: n - theirs.get(op, 0) for op, n in mine.items() if n > theirs.get(op, 0)}
    if not extra:
        return "no extra ops left XNNPACK; the int8/fp16 kernels themselves are slower here"
    return "ops outside XNNPACK: " + ", ".join(f"{op} x{n}" for op, n in sorted(extra.items(), key=lambda kv: -kv[1]))


def flag_slower_than_fp32(rows: list[VariantResult], threads: list[int]) -> None:
    """Quantization is for speed and size; a quantized variant slower than its fp32 model gets a flag."""
    # like with like: int8+flip is compared with fp32+flip, not with the plain fp32
    fp32 = {(r.group, r.tta): r for r in rows if r.variant == "fp32" and r.kind == "tflite" and r.ok}
    for r in rows:
        base = fp32.get((r.group, r.tta))
        if r.variant not in QUANTIZED or base is None or not r.ok:
            continue
        for t in threads:
            mine, ref = r.p50(t), base.p50(t)
            if mine is None or ref is None or mine <= ref * (1 + SLOWER_MARGIN):
                continue
            r.flags.append(f"{mine / ref:.2f}x SLOWER than {base.name} at {t} thread(s) "
                           f"(p50 {mine:.3g} vs {ref:.3g} ms); {_left_fast_kernels(r, base, t)}")


def recommend(rows: list[VariantResult], threads: list[int], max_drop: float | None,
              max_class_drop: float | None) -> dict[str, dict]:
    """Per group: the fastest deployable (.tflite) variant whose accuracy loss stays within the limits."""
    if max_drop is None and max_class_drop is None:
        max_drop, max_class_drop = DEFAULT_REC_MAX_DROP, DEFAULT_REC_MAX_CLASS_DROP
        source = "default limits (no gate given)"
    else:
        source = "the gate"
    by_name = {r.name: r for r in rows}
    out: dict[str, dict] = {}
    for group in dict.fromkeys(r.group for r in rows):
        members = [r for r in rows if r.group == group and r.kind == "tflite" and r.ok]
        measured = [t for t in threads if any(r.p50(t) is not None for r in members)]
        if not members or not measured:
            continue
        t = max(measured)
        cands = []
        for r in members:
            if r.p50(t) is None:
                continue
            ref = by_name.get(r.reference) if r.reference else None
            fails = gate(ref.scores, r.scores, max_drop, max_class_drop) if ref is not None else []
            if not fails:
                cands.append(r)
        limits = {"max_drop_pp": max_drop, "max_class_drop_pp": max_class_drop, "from": source}
        if not cands:
            out[group] = {"variant": None, "threads": t, "limits": limits,
                          "why": "no TFLite variant stays within the accuracy limits"}
            continue
        best = min(cands, key=lambda r: r.p50(t))
        ref = by_name.get(best.reference) if best.reference else None
        drop = (ref.scores.accuracy - best.scores.accuracy) * 100 if ref is not None else 0.0
        out[group] = {
            "variant": best.name, "path": best.path, "threads": t, "p50_ms": best.p50(t),
            "accuracy": best.scores.accuracy, "mean_recall": best.scores.mean_recall,
            "accuracy_drop_pp": drop, "size_bytes": best.size_bytes, "limits": limits,
            "why": (f"fastest TFLite variant at {t} thread(s) ({best.p50(t):.3g} ms p50) whose accuracy "
                    f"drop ({drop:+.2f} pp) stays within {source}"),
        }
    return out
