"""Recipes: one file per published-table row, run end to end by `fer-edge recipe FILE`.

A recipe pins only what its row needs; everything else is the package default of `fer-edge convert`
(ConvertConfig). Running one fine-tunes (or takes a finished model file, or an existing convert
output), exports fp32/int8, benchmarks every variant on the held-out split and writes one row,
`<results>/<recipe>.json`, that benchmarks/table1.py collects. A recipe with `cv:` runs
subject-independent k-fold cross-validation instead (fer_edge.recipes.cv).

    fer-edge recipe converters/fer2013_mobilenet_best.yaml --budget-scale 0.25
    fer-edge recipe converters/fer2013_mobilenet_best.yaml --from-convert runs/fer2013-mobilenet-a025-96

Nothing heavy is imported at module level (the CLI imports this module on every start).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fer_edge.atomic import atomic_write_text
from fer_edge.bench.settings import default as bench_default
from fer_edge.bench.settings import description as bench_description
from fer_edge.convert.settings import default as convert_default
from fer_edge.convert.settings import description as convert_description
from fer_edge.errors import ConfigError, DataError, ModelError

ROW_SCHEMA = "fer-edge-recipe-row/1"
DEFAULT_RESULTS = Path("benchmarks") / "results"
DEFAULT_SHARED = Path("..") / "shared"
# Set by the recipe's own top-level keys, so they may not appear again under `convert:`.
TOP_LEVEL_CONVERT_KEYS = ("model", "data", "kind", "out", "variants")


class PaperFigures(BaseModel):
    """Figures the published table gives for this row (percent), and where they were read."""

    model_config = ConfigDict(extra="forbid")

    train_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    mean_recall: Optional[float] = None
    source: str = Field(..., description="where the figure is quoted from (paper table, issue, page)")
    note: str = ""


class CVSpec(BaseModel):
    """Subject-independent k-fold cross-validation instead of a train/test row."""

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(10, ge=2)
    seed: int = 0
    deploy_model: Optional[str] = Field(
        None, description="after CV, train on every subject and write the int8 model here (repo-relative)")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    row: str = Field(..., description="the row's label in the results table")
    table: str = Field("table1", description="results group: rows go to benchmarks/results/<table>/")
    data: str = Field(..., description="path relative to the shared folder (../shared), absolute, or 'synthetic'")
    kind: str = Field(convert_default("kind"), description=convert_description("kind"))
    split: Optional[str] = Field(None, description="split reported (None: test, else public_test)")
    model: Optional[str] = Field(None, description="backbone name (fer-edge convert --model)")
    model_file: Optional[str] = Field(None, description="a finished Keras model, converted without training "
                                                        "(repo-relative or absolute)")
    # the converter's default variants (one list, in ConvertConfig)
    variants: list[Literal["fp32", "fp16", "dynamic", "int8"]] = Field(
        default_factory=lambda: convert_default("variants"), description=convert_description("variants"))
    convert: dict = Field(default_factory=dict, description="fer-edge convert settings (ConvertConfig fields) "
                                                            "that differ from the package defaults")
    cv: Optional[CVSpec] = None
    threads: int = Field(2, ge=1, description="thread count the latency column is measured at")
    tta: list[str] = Field(default_factory=lambda: ["none"], description="test-time augmentation modes the "
                           "held-out split is also scored with (fer_edge.tta: none, flip); cv recipes only")
    bench_runs: int = Field(bench_default("runs"), ge=1, description=bench_description("runs") + " (fer-edge "
                            "bench --runs)")
    bench_max_seconds: float = Field(bench_default("max_seconds"), gt=0, description=bench_description("max_seconds")
                                     + " (fer-edge bench --max-seconds)")
    train_eval_limit: Optional[int] = Field(3000, ge=1, description="random training images scored for the "
                                                                    "train-accuracy column (None: all)")
    budget_note: str = Field("", description="how this row's budget differs from the published one")
    paper: Optional[PaperFigures] = None
    notes: str = ""

    @model_validator(mode="after")
    def _one_model(self) -> "Recipe":
        if (self.model is None) == (self.model_file is None):
            raise ValueError("give exactly one of `model` (a backbone name) and `model_file` (a Keras model file)")
        if self.model_file is not None and self.cv is not None:
            raise ValueError("`cv` trains a model per fold; it cannot be combined with `model_file`")
        from fer_edge.tta import check_tta

        self.tta = list(dict.fromkeys(check_tta(m) for m in ["none", *self.tta]))
        if self.tta != ["none"] and self.cv is None:
            raise ValueError("`tta` is reported by cv recipes only; bench a table row's models with "
                             "`fer-edge bench --tta none,flip`")
        clash = sorted(set(self.convert) & set(TOP_LEVEL_CONVERT_KEYS))
        if clash:
            raise ValueError(f"convert.{clash[0]} is set by the recipe's top-level keys "
                             f"({', '.join(TOP_LEVEL_CONVERT_KEYS)}); move it there")
        return self


def _describe(loc: tuple, valid: list[str]) -> str:
    key = str(loc[-1])
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{'.'.join(map(str, loc))}'{hint}; valid keys: {', '.join(valid)}"


def _format_errors(path: Path, exc: ValidationError, models: dict[tuple, type[BaseModel]]) -> ConfigError:
    parts = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            owner = models.get(loc[:-1], BaseModel)
            parts.append(_describe(loc, sorted(getattr(owner, "model_fields", {}))))
        else:
            parts.append(f"{'.'.join(map(str, loc)) or '(recipe)'}: {e['msg']}")
    return ConfigError(f"recipe {path}: " + "; ".join(parts))


def parse_recipe(data: dict, path: str | os.PathLike = "<recipe>") -> Recipe:
    """Validate a recipe mapping; the convert: section is checked against ConvertConfig (unknown keys named)."""
    from fer_edge.convert.api import ConvertConfig

    path = Path(path)
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of keys (row, data, model, convert, ...), "
                          f"got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _format_errors(path, exc, {(): Recipe, ("cv",): CVSpec, ("paper",): PaperFigures}) from None
    try:
        ConvertConfig.model_validate({**recipe.convert, "model": recipe.model or recipe.model_file})
    except ValidationError as exc:
        valid = sorted(k for k in ConvertConfig.model_fields if k not in TOP_LEVEL_CONVERT_KEYS)
        msgs = []
        for e in exc.errors():
            loc = ("convert",) + tuple(e["loc"])
            msgs.append(_describe(loc, valid) if e["type"] == "extra_forbidden"
                        else f"{'.'.join(map(str, loc))}: {e['msg']}")
        raise ConfigError(f"recipe {path}: " + "; ".join(msgs)) from None
    return recipe


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a YAML (or TOML) recipe file and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} not found; the recipes are in converters/ (see converters/README.md)")
    from fer_edge import limits
    from fer_edge.errors import LimitError

    try:
        text = limits.read_limited(path, limits.MAX_CONFIG_BYTES, "recipe").decode("utf-8")
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10: no TOML reader in the standard library
                raise ConfigError(f"recipe {path}: TOML recipes need Python 3.11 or newer; "
                                  "write it as YAML (converters/*.yaml)") from None
            data = tomllib.loads(text)
        else:
            data = limits.load_yaml(text, str(path))
    except LimitError as exc:
        raise ConfigError(str(exc)) from None
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"recipe {path} is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {exc}") from None
    return parse_recipe(data, path)


# -- resolution ---------------------------------------------------------------------------------------------

def resolve_data(recipe: Recipe, shared: str | os.PathLike | None) -> str | None:
    """The recipe's data path: absolute as is, 'synthetic' -> None (demo set), else under the shared folder."""
    if recipe.data.lower() in ("synthetic", "demo"):
        return None
    p = Path(recipe.data).expanduser()
    if p.is_absolute():
        return str(p)
    root = Path(shared) if shared is not None else Path(os.environ.get("FER_EDGE_SHARED", DEFAULT_SHARED))
    full = root / p
    if not full.exists():
        raise DataError(f"recipe data {recipe.data} not found under the shared folder {root} ({full}); "
                        "pass --shared DIR (or set FER_EDGE_SHARED) to where data/ lives")
    return str(full)


def scaled_epochs(n: int, scale: float) -> int:
    """Epochs under --budget-scale: a phase that runs keeps at least one epoch; a phase set to 0 stays off."""
    return 0 if n == 0 else max(1, int(math.ceil(n * scale - 1e-9)))


def convert_config(recipe: Recipe, data: str | None, out: Path, budget_scale: float = 1.0, **overrides):
    """The ConvertConfig this recipe runs: package defaults, then the recipe, then the budget scale."""
    from fer_edge.convert.api import ConvertConfig

    if budget_scale <= 0:
        raise ConfigError(f"--budget-scale must be > 0, got {budget_scale}")
    model = recipe.model
    if recipe.model_file is not None:
        model = str(Path(recipe.model_file).expanduser())
        if not Path(model).is_file():
            raise ModelError(f"model file {model} (recipe model_file) not found; converters/README.md says "
                             "how to get it")
    cfg = ConvertConfig(**{**recipe.convert, "model": model, "data": data, "kind": recipe.kind, "out": out,
                           "variants": list(recipe.variants), **overrides})
    if budget_scale != 1.0:
        cfg = cfg.model_copy(update={"epochs": scaled_epochs(cfg.epochs, budget_scale),
                                     "fine_tune_epochs": scaled_epochs(cfg.fine_tune_epochs, budget_scale)})
    return cfg


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _pct(v) -> float | None:
    return None if v is None else round(100.0 * float(v), 2)


def scores_summary(scores) -> dict:
    """The three headline figures (percent) and per-class recall of a fer_edge.metrics.Scores."""
    if scores is None:
        return {}
    return {"n": scores.n, "accuracy": _pct(scores.accuracy), "mean_recall": _pct(scores.mean_recall),
            "macro_f1": _pct(scores.macro_f1), "agreement": _pct(scores.agreement),
            "recall": {k: _pct(v) for k, v in scores.recall.items()}}


# -- one table row -------------------------------------------------------------------------------------------

def _train_accuracy(float_model: Path, data: str | None, kind: str, limit: int | None, console) -> dict:
    """Float model on (a random subset of) the training split, without augmentation or dropout."""
    from fer_edge.bench import run_bench

    try:
        res = run_bench([float_model], data, split="train", limit=limit, speed=False, plots=False,
                        data_kind=kind, console=None, tta=("none",))
    except DataError as exc:
        if console is not None:
            console.print(f"[yellow]note:[/] no train-accuracy figure: {exc}", highlight=False)
        return {"note": f"not measured: {exc}"}
    v = next((v for v in res.variants if v.variant == "float" and v.ok), None)
    if v is None:
        return {"note": "not measured: the float model could not be scored"}
    return {**scores_summary(v.scores), "note": res.data["split_note"] + "; float model, no augmentation"}


def _differences(recipe_cfg, record_cfg: dict) -> list[str]:
    """Training settings where an existing convert run differs from what the recipe asks. Both sides with
    their preset filled in: convert records the resolved settings, and a field the recipe leaves to its preset
    (None here) is no deviation."""
    from fer_edge.convert.api import TRAINING_KEYS

    want = recipe_cfg.resolved().model_dump(mode="json")
    out = []
    for k in TRAINING_KEYS:
        if k in ("data", "kind"):
            continue
        if k in record_cfg and record_cfg[k] != want.get(k):
            out.append(f"{k}: recipe {want.get(k)!r}, run {record_cfg[k]!r}")
    return out


def _train_seconds(record: dict) -> float | None:
    """Training time summed over the learning rates. A run trained elsewhere (say on a GPU box, then
    exported here) spent almost nothing in this process's training step; its rates' own clocks count."""
    here = (record.get("timings") or {}).get("train")
    runs = [r.get("seconds") for r in record.get("runs") or [] if r.get("seconds")]
    return max(here or 0.0, round(sum(runs), 1)) if runs else here


def build_row(recipe: Recipe, name: str, bench, record: dict, train: dict, budget_scale: float, cfg,
              from_convert: bool, deviations: list[str], wall_s: float) -> dict:
    """The results-table row: headline figures for float and int8, speed, size, provenance."""
    by_variant = {v.variant: v for v in bench.variants}

    def speed(variant: str) -> float | None:
        v = by_variant.get(variant)
        s = v.speed.get(recipe.threads) if v is not None else None
        return round(s.p50_ms, 3) if s is not None and s.ok else None

    int8 = by_variant.get("int8")
    float_row = by_variant.get("float") or by_variant.get("fp32")
    model = record.get("model", {})
    return {
        "schema": ROW_SCHEMA,
        "recipe": name, "row": recipe.row, "table": recipe.table,
        "data": recipe.data, "split": bench.data.get("split"), "n_test": bench.data.get("n"),
        "backbone": model.get("backbone"), "weights": model.get("weights"),
        "pretrained": model.get("pretrained"), "alpha": model.get("alpha"),
        "input_size": record.get("preprocess", {}).get("input_size"),
        "class_weights": cfg.class_weights if not cfg.is_model_file else None,
        "class_weighting": (cfg.class_weighting or ("inverse" if cfg.class_weights else "none"))
        if not cfg.is_model_file else None,
        "teachers": [Path(t).name for t in cfg.teachers] if not cfg.is_model_file else [],
        "tta": int8.tta if int8 is not None else None,
        "augment": cfg.augment if not cfg.is_model_file else None,
        "lrs": cfg.lrs if not cfg.is_model_file else None, "chosen_lr": record.get("best_lr"),
        "sweep_epochs": cfg.sweep_epochs if not cfg.is_model_file else None,
        "epochs": cfg.epochs if not cfg.is_model_file else None,
        "fine_tune_epochs": cfg.fine_tune_epochs if not cfg.is_model_file else None,
        "batch_size": cfg.batch_size if not cfg.is_model_file else None, "seed": cfg.seed,
        "budget_scale": budget_scale, "budget_note": recipe.budget_note,
        "train": train,
        "float": {**scores_summary(float_row.scores if float_row else None),
                  "clean": scores_summary(float_row.clean_scores if float_row else None),
                  "variant": float_row.variant if float_row else None},
        "int8": {**scores_summary(int8.scores if int8 else None),
                 "clean": scores_summary(int8.clean_scores if int8 else None)},
        "clean_note": bench.data.get("clean_note", ""),
        "int8_error": int8.error if int8 is not None else "no int8 variant",
        "threads": recipe.threads,
        "latency_p50_ms": {v: speed(v) for v in by_variant},
        "int8_p50_ms": speed("int8"),
        "sizes_bytes": {v.variant: v.size_bytes for v in bench.variants},
        "int8_size_bytes": int8.size_bytes if int8 is not None else None,
        "train_wall_s": _train_seconds(record),
        "train_machines": sorted({r.get("machine") for r in record.get("runs") or [] if r.get("machine")}),
        "convert_wall_s": (record.get("timings") or {}).get("total"),
        "wall_s": round(wall_s, 1),
        "from_convert": from_convert, "deviations": deviations,
        "convert_dir": str(Path(record.get("paths", {}).get("float", ".")).parent),
        "paper": recipe.paper.model_dump() if recipe.paper else None,
        "notes": recipe.notes,
        "machine": {k: bench.machine.get(k) for k in ("cpu", "cores_usable", "tflite_runtime",
                                                       "load_average_start", "load_average_end")},
        "bench_warnings": bench.warnings,
        "git": git_commit(), "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def recipe_name(path: str | os.PathLike) -> str:
    return Path(path).stem


def run_recipe(path: str | os.PathLike, out: str | os.PathLike | None = None, budget_scale: float = 1.0,
               from_convert: str | os.PathLike | None = None, results: str | os.PathLike | None = None,
               shared: str | os.PathLike | None = None, folds: int | None = None, console=None) -> dict:
    """Run one recipe end to end and write its row (or, with `cv:`, the cross-validation summary).

    out: working folder (default runs/recipes/<recipe>). results: folder for the row JSON (default
    benchmarks/results/<table>). from_convert: bench an existing `fer-edge convert` output instead of
    training. folds: with cv, stop after this many folds (sizing a run). Returns the row (or summary) dict.
    """
    from rich.console import Console

    console = console or Console()
    recipe = load_recipe(path)
    name = recipe_name(path)
    out = Path(out) if out is not None else Path("runs") / "recipes" / name
    results_dir = Path(results) if results is not None else DEFAULT_RESULTS / recipe.table
    data = resolve_data(recipe, shared)
    if recipe.cv is not None:
        if from_convert is not None:
            raise ConfigError("--from-convert benches one finished model; a cv recipe trains one per fold")
        from fer_edge.recipes.cv import run_cv

        return run_cv(recipe, name, data, out, results_dir, budget_scale, folds=folds, console=console,
                      recipe_path=path)
    t0 = time.perf_counter()
    deviations: list[str] = []
    if from_convert is not None:
        conv_dir = Path(from_convert)
        rec_file = conv_dir / "convert.json"
        if not rec_file.is_file():
            raise ModelError(f"{conv_dir} holds no convert.json: give a finished `fer-edge convert` output folder")
        record = json.loads(rec_file.read_text())
        cfg = convert_config(recipe, data, conv_dir, budget_scale)
        deviations = _differences(cfg, record.get("config", {}))
        for d in deviations:
            console.print(f"[yellow]note:[/] {conv_dir} differs from the recipe: {d}", highlight=False)
        console.print(f"benching the existing convert output {conv_dir} (no training)")
    else:
        from fer_edge.convert.api import convert

        cfg = convert_config(recipe, data, out / "convert", budget_scale)
        console.print(f"[bold]recipe {name}[/]: {recipe.row}", highlight=False)
        convert(cfg, console=console)
        conv_dir = out / "convert"
        record = json.loads((conv_dir / "convert.json").read_text())
    from fer_edge.bench import run_bench

    # tta none: the table's float and int8 columns are the plain models (build_row picks rows by variant);
    # bench --tta model would score a model whose metadata asks for flip with it, in a different row set
    bench = run_bench([conv_dir], data, split=recipe.split, threads=(recipe.threads,), out=out / "bench",
                      runs=recipe.bench_runs, max_seconds=recipe.bench_max_seconds, data_kind=recipe.kind,
                      console=console, tta=("none",))
    float_model = conv_dir / "model_float.keras"
    train = (_train_accuracy(float_model, data, recipe.kind, recipe.train_eval_limit, console)
             if float_model.is_file() and recipe.model_file is None else
             {"note": "not measured: a finished model file (no training here)" if recipe.model_file
              else "not measured: no float model in the convert output"})
    row = build_row(recipe, name, bench, record, train, budget_scale, cfg, from_convert is not None, deviations,
                    time.perf_counter() - t0)
    row["convert_dir"] = str(conv_dir)
    row["bench_dir"] = str(out / "bench")
    row["command"] = " ".join(["fer-edge recipe", str(path)]
                              + ([f"--budget-scale {budget_scale:g}"] if budget_scale != 1.0 else [])
                              + ([f"--from-convert {from_convert}"] if from_convert is not None else []))
    row_path = results_dir / f"{name}.json"
    atomic_write_text(row_path, json.dumps(row, indent=2, default=str))
    console.print(f"row written to [bold]{row_path}[/]: {recipe.row} - float acc {row['float'].get('accuracy')}%, "
                  f"int8 acc {row['int8'].get('accuracy')}%, int8 p50 {row['int8_p50_ms']} ms at "
                  f"{recipe.threads} threads", highlight=False)
    return row


# -- CLI -----------------------------------------------------------------------------------------------------
