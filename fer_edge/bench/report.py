"""BenchResult -> bench.json (everything), bench.csv (one row per variant and thread count),
bench.md (tables a reader understands without running anything), and the terminal table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from fer_edge.atomic import atomic_write_text
from fer_edge.bench.result import BenchResult, Speed, VariantResult


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}"


def _num(v: float | None, fmt: str | None = None) -> str:
    """Figures without exponents: 3 significant digits for milliseconds, integers for FPS-sized values."""
    if v is None:
        return "-"
    if fmt is not None:
        return format(v, fmt)
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.3g}"
    return f"{v:.{max(2, 2 - int(np.floor(np.log10(v))))}f}" if v > 0 else "0"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def kernels_short(k: dict | None) -> str:
    if not k:
        return "-"
    total = sum(k["ops"].values())
    head = f"XNNPACK {k['delegated_ops']}/{total}" if k["xnnpack"] else "no XNNPACK"
    left = ", ".join(f"{op}x{n}" if n > 1 else op for op, n in sorted(k["not_delegated"].items()))
    return f"{head}; int8 {k['int8_ops']} / float {k['float_ops']}" + (f"; builtin: {left}" if left else "")


def _drop_pp(row: VariantResult, result: BenchResult, attr: str) -> float | None:
    if row.reference is None or not row.ok:
        return None
    ref = result.variant(row.reference)
    return (getattr(ref.scores, attr) - getattr(row.scores, attr)) * 100


def _worst_class(row: VariantResult, result: BenchResult) -> tuple[str, float] | None:
    if row.reference is None or not row.ok:
        return None
    ref = result.variant(row.reference).scores
    drops = [(lab, (ref.recall[lab] - r) * 100) for lab, r in row.scores.recall.items()
             if r is not None and ref.recall.get(lab) is not None]
    return max(drops, key=lambda d: d[1]) if drops else None


# ---------------------------------------------------------------------------------------------- JSON


def to_json(result: BenchResult) -> str:
    return json.dumps(result.as_dict(), indent=2, default=float)


# ---------------------------------------------------------------------------------------------- CSV

CSV_SPEED = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "fps", "n_runs", "cold_start_ms", "load_ms", "peak_rss_mb",
             "rss_delta_mb")


def to_csv(result: BenchResult) -> str:
    labels = result.data["labels"]
    head = (["variant", "group", "kind", "file", "size_bytes", "reference", "accuracy", "mean_recall", "macro_f1",
             "agreement", "mean_abs_prob_diff", "accuracy_drop_pp", "clean_accuracy", "clean_mean_recall",
             "threads", *CSV_SPEED,
             "xnnpack_ops", "int8_ops", "float_ops", "not_delegated"]
            + [f"recall_{lab}" for lab in labels] + [f"precision_{lab}" for lab in labels] + ["error", "flags"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(head)
    for row in result.variants:
        s = row.scores
        base = [row.name, row.group, row.kind, Path(row.path).name, row.size_bytes, row.reference or "",
                s.accuracy if s else "", s.mean_recall if s else "", s.macro_f1 if s else "",
                "" if not s or s.agreement is None else s.agreement,
                "" if not s or s.mean_abs_prob_diff is None else s.mean_abs_prob_diff,
                "" if _drop_pp(row, result, "accuracy") is None else _drop_pp(row, result, "accuracy"),
                row.clean_scores.accuracy if row.clean_scores else "",
                row.clean_scores.mean_recall if row.clean_scores else ""]
        per_class = ([("" if not s or s.recall.get(lab) is None else s.recall[lab]) for lab in labels]
                     + [("" if not s or s.precision.get(lab) is None else s.precision[lab]) for lab in labels])
        speeds = [row.speed[t] for t in result.threads if t in row.speed] or [Speed(threads=0)]
        for sp in speeds:
            k = sp.kernels or {}
            speed = [sp.threads or ""] + ["" if getattr(sp, c) is None else getattr(sp, c) for c in CSV_SPEED]
            kern = [k.get("delegated_ops", ""), k.get("int8_ops", ""), k.get("float_ops", ""),
                    " ".join(f"{op}:{n}" for op, n in sorted((k.get("not_delegated") or {}).items()))]
            err = row.error or sp.error or ""
            w.writerow(base + speed + kern + per_class + [err, " | ".join(row.flags)])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- Markdown


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def to_markdown(result: BenchResult) -> str:
    d, m = result.data, result.machine
    lines = ["# fer-edge bench", ""]
    lines.append(f"- Data: `{d['source']}` - {d['split_note']}; {d['n']} images scored"
                 + (f", {len(d['skipped'])} left out" if d["skipped"] else "") + ".")
    lines.append("- Classes: " + ", ".join(f"{k} {v}" for k, v in d["class_counts"].items()) + ".")
    if d.get("clean_note"):
        lines.append(f"- Raw and clean figures: {d['clean_note']}.")
    lines.append(f"- Machine: {m['cpu']} ({m['machine']}), {m['cores_usable']} usable cores, "
                 f"{m.get('tflite_runtime', '?')}, Python {m['python']}.")
    s = result.settings
    if s.get("speed", True):
        lines.append(f"- Timing: batch 1, {s['warmup']} warm-up runs, then up to {s['runs']} runs or "
                     f"{s['max_seconds']} s per variant and thread count, "
                     f"{'each in a fresh process' if s['isolated'] else 'in one process'}.")
    else:
        lines.append("- Timing: not measured (--no-speed).")
    for mode in [m for m in s.get("tta", []) if m != "none"]:
        lines.append(f"- `+{mode}` rows: the same model scored and timed with {mode} test-time augmentation "
                     "(fer_edge.tta; flip = each image averaged with its mirror image, two invokes per image).")
    refs = [v for v in result.variants if v.is_reference]
    for v in refs:
        how = ("Keras float model (latency via predict_on_batch at batch 1)" if v.kind == "keras"
               else "fp32 TFLite standing in for the float model (no runnable .keras given)")
        lines.append(f"- Reference for `{v.group}`: **{v.name}** - {how}.")
    lines += ["", "## Accuracy", ""]
    acc_rows = []
    for v in result.variants:
        sc = v.scores
        wc = _worst_class(v, result)
        acc_rows.append([
            v.name + (" (ref)" if v.is_reference else ""), _pct(sc.accuracy) if sc else "-",
            _pct(sc.mean_recall) if sc else "-", _pct(sc.macro_f1) if sc else "-",
            _pct(sc.agreement) if sc else "-",
            _num(sc.mean_abs_prob_diff, ".4f") if sc else "-",
            _num(_drop_pp(v, result, "accuracy"), "+.2f"), _num(_drop_pp(v, result, "mean_recall"), "+.2f"),
            f"{wc[0]} {wc[1]:+.2f}" if wc else "-",
            *([_pct(v.clean_scores.accuracy) if v.clean_scores else "-",
               _pct(v.clean_scores.mean_recall) if v.clean_scores else "-"] if d.get("clean_note") else []),
            _size(v.size_bytes), ("ERROR: " + v.error) if v.error else "; ".join(v.notes)])
    lines.append(_md_table(["variant", "accuracy %", "mean recall %", "macro-F1 %", "agreement %", "mean abs dp",
                            "acc drop pp", "recall drop pp", "worst class drop pp",
                            *(["clean acc %", "clean recall %"] if d.get("clean_note") else []), "size", "note"],
                           acc_rows))
    lines += ["", "Drops are reference minus variant (positive = lost). Agreement = top-1 agreement with the "
                  "reference; mean abs dp = mean absolute difference of the probabilities.", "",
              "## Speed (batch 1)", ""]
    sp_rows: list[list[str]] = []
    for v in result.variants:
        if not v.speed:
            continue
        for t in result.threads:
            sp = v.speed.get(t)
            if sp is None:
                continue
            if not sp.ok:
                sp_rows.append([v.name, str(t)] + ["-"] * 8 + [f"ERROR: {sp.error}"])
                continue
            sp_rows.append([v.name, str(t), _num(sp.p50_ms), _num(sp.p95_ms), _num(sp.p99_ms), _num(sp.fps, ".0f"),
                            _num(sp.cold_start_ms), _num(sp.peak_rss_mb, ".1f"), _num(sp.rss_delta_mb, ".1f"),
                            _size(v.size_bytes), kernels_short(sp.kernels) if v.kind == "tflite" else sp.engine])
    if sp_rows:
        lines.append(_md_table(["variant", "threads", "p50 ms", "p95 ms", "p99 ms", "FPS", "cold start ms",
                                "peak RSS MB", "RSS over baseline MB", "size", "kernels"], sp_rows))
        lines += ["", "Cold start = load + first inference in a fresh process. RSS over baseline = peak resident "
                      "memory minus the same process with its runtime imported but no model loaded. Kernels: ops "
                      "inside XNNPACK partitions / all ops; int8 vs float ops; ops left on builtin kernels.", ""]
    else:
        lines += ["Not measured.", ""]
    labels = d["labels"]
    ok = [v for v in result.variants if v.ok]
    if ok:
        lines += ["## Per-class recall %", ""]
        lines.append(_md_table(["class", *[v.name for v in ok]],
                               [[lab, *[_pct(v.scores.recall.get(lab)) for v in ok]] for lab in labels]))
        lines += ["", "## Per-class precision %", ""]
        lines.append(_md_table(["class", *[v.name for v in ok]],
                               [[lab, *[_pct(v.scores.precision.get(lab)) for v in ok]] for lab in labels]))
        lines.append("")
    lines += ["## Verdict", ""]
    if result.gated:
        probs = result.gate_problems()
        lines.append(f"- Gate (max accuracy drop {s['max_drop']} pp, max class-recall drop {s['max_class_drop']} pp): "
                     + ("**passed**." if not probs else "**FAILED**: " + "; ".join(probs) + "."))
    for v in result.variants:
        for f in v.flags:
            lines.append(f"- **{v.name}**: {f}.")
    for group, rec in result.recommendation.items():
        if rec.get("variant"):
            lines.append(f"- Recommended for `{group}`: **{rec['variant']}** - {rec['why']}.")
        else:
            lines.append(f"- No recommendation for `{group}`: {rec['why']}.")
    for w in result.warnings:
        lines.append(f"- Warning: {w}.")
    plots = [Path(f).name for f in result.files if f.endswith(".png")]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- files


def write_outputs(result: BenchResult, out: Path, plots: bool = True) -> list[Path]:
    from fer_edge.atomic import ensure_dir

    ensure_dir(out)
    for stale in out.glob("confusion_*.png"):  # a previous run's variants would mix with this run's
        stale.unlink()
    files: list[Path] = []
    if plots:
        from fer_edge.bench.plots import write_plots

        pngs, note = write_plots(result, out)
        files += pngs
        if note:
            result.warnings.append(note)
    result.files = [str(p) for p in files] + [str(out / n) for n in ("bench.json", "bench.csv", "bench.md")]
    atomic_write_text(out / "bench.csv", to_csv(result))
    atomic_write_text(out / "bench.md", to_markdown(result))
    atomic_write_text(out / "bench.json", to_json(result))
    return [Path(f) for f in result.files]


# ---------------------------------------------------------------------------------------------- terminal


def print_table(result: BenchResult, console) -> None:
    """Two compact tables (accuracy, speed) that fit an 80-column terminal, then the verdict lines."""
    from rich.table import Table

    acc = Table(title=f"accuracy - {result.data['n']} images of {result.data['source']}, {result.data['split_note']}", title_justify="left",
                header_style="bold")
    clean = bool(result.data.get("clean_note"))
    cols = ("variant", "acc %", "mean rec %", *(("clean acc %", "clean rec %") if clean else ()), "F1 %", "agree %",
            "drop pp", "worst class pp", "size")
    for col in cols:
        acc.add_column(col, justify="left" if col == "variant" else "right")
    for v in result.variants:
        if v.error:
            acc.add_row(v.name, "[red]error[/]", *["-"] * (len(cols) - 3), _size(v.size_bytes))
            continue
        sc, drop, wc = v.scores, _drop_pp(v, result, "accuracy"), _worst_class(v, result)
        bad = bool(v.gate_failures)
        cs = v.clean_scores
        acc.add_row(v.name + (" (ref)" if v.is_reference else ""), _pct(sc.accuracy), _pct(sc.mean_recall),
                    *((_pct(cs.accuracy) if cs else "-", _pct(cs.mean_recall) if cs else "-") if clean else ()),
                    _pct(sc.macro_f1), _pct(sc.agreement),
                    "-" if drop is None else (f"[red]{drop:+.2f}[/]" if bad else f"{drop:+.2f}"),
                    f"{wc[0]} {wc[1]:+.1f}" if wc else "-", _size(v.size_bytes))
    console.print(acc)
    if clean:
        console.print(f"[dim]{result.data['clean_note']}[/]", highlight=False)
    speed = Table(title="speed - batch 1", title_justify="left", header_style="bold")
    for col in ("variant", "thr", "p50 ms", "p95 ms", "p99 ms", "FPS", "cold ms", "dRSS MB", "XNNPACK"):
        speed.add_column(col, justify="left" if col == "variant" else "right")
    for v in result.variants:
        for t in result.threads:
            sp = v.speed.get(t)
            if sp is None:
                continue
            if not sp.ok:
                speed.add_row(v.name, str(t), "[red]error[/]", *["-"] * 6)
                continue
            k = sp.kernels
            xnn = (f"{k['delegated_ops']}/{sum(k['ops'].values())} ops" if k and k["xnnpack"] else
                   "[yellow]none[/]" if k else "keras")
            speed.add_row(v.name, str(t), _num(sp.p50_ms), _num(sp.p95_ms), _num(sp.p99_ms), _num(sp.fps, ".0f"),
                          _num(sp.cold_start_ms), _num(sp.rss_delta_mb, ".1f"), xnn)
    if speed.row_count:
        console.print(speed)
    for v in result.variants:
        if v.error:
            console.print(f"[red]{v.name} failed:[/] {v.error}", highlight=False)
        for t, sp in sorted(v.speed.items()):
            if sp.error:
                console.print(f"[red]{v.name} timing at {t} thread(s) failed:[/] {sp.error}", highlight=False)
        for f in v.flags:
            console.print(f"[yellow]{v.name}:[/] {f}", highlight=False)
        for n in v.notes:
            console.print(f"[dim]{v.name}: {n}[/]", highlight=False)
    if result.gated:
        probs = result.gate_problems()
        console.print("[green]gate passed[/]" if not probs else "[red]gate FAILED:[/] " + "; ".join(probs),
                      highlight=False)
    for group, rec in result.recommendation.items():
        if rec.get("variant"):
            console.print(f"[bold]recommended[/] ({group}): [bold green]{rec['variant']}[/] - {rec['why']}",
                          highlight=False)
        else:
            console.print(f"[bold]no recommendation[/] ({group}): {rec['why']}", highlight=False)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    if result.files:
        console.print(f"wrote {len(result.files)} files to {Path(result.files[-1]).parent}", highlight=False)
