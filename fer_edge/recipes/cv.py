"""Subject-independent k-fold cross-validation for a `cv:` recipe (e.g. CK+).

Per fold: a tree of symlinks with train/ (the other folds' subjects) and test/ (this fold's),
`fer-edge convert` on it (validation carved from train, by subject), then `run_bench` scores the
float and int8 models on the held-out subjects. Every finished fold is written at once
(<out>/folds/fold_NN/fold.json) and the summary (<results>/<recipe>.json + .md) is rewritten after
each, so an interrupted run loses nothing finished and a rerun skips the folds already done.

The deployable model is then trained on every subject (no test split; validation carved by
subject) and its int8 file written to `cv.deploy_model`: the CV figures are its estimate, the
standard practice when a set is too small to hold out a test group for the shipped model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from typing import Any, Sequence

from fer_edge.atomic import atomic_write_text
from fer_edge.errors import ConfigError, DataError

CV_SCHEMA = "fer-edge-recipe-cv/1"
METRICS = ("accuracy", "mean_recall", "macro_f1")


def write_fold_tree(root: Path, train, test) -> Path:
    """root/{train,test}/<label>/<file> as symlinks to the original images (nothing is copied)."""
    if root.exists():
        shutil.rmtree(root)
    for split, samples in (("train", train), ("test", test)):
        for s in samples:
            if s.path is None:
                raise DataError(f"{s.key}: cross-validation needs images on disk (a folder tree such as CK+)")
            d = root / split / s.label
            d.mkdir(parents=True, exist_ok=True)
            link = d / Path(s.path).name
            if link.exists():
                raise DataError(f"two images named {link.name} in class {s.label}: cannot lay out fold {root.name}")
            os.symlink(Path(s.path).resolve(), link)
    return root


def _scores(v) -> dict:
    from fer_edge.recipes.recipe import scores_summary

    if v is None or not v.ok:
        return {"error": getattr(v, "error", "missing")}
    return {**scores_summary(v.scores), "confusion": v.scores.confusion}


def scored_variants(tta: list[str]) -> list[str]:
    """The rows a fold reports: float and int8, then each again per test-time augmentation ('int8+flip')."""
    from fer_edge.tta import tta_name

    return [tta_name(v, m) for m in tta for v in ("float", "int8")]


def summarise(folds: list[dict], labels: list[str], variants: Sequence[str] = ("float", "int8")) -> dict:
    """Mean and sample std (ddof=1) over folds of each headline metric, plus pooled figures from the
    summed confusion matrices (every image counted once)."""
    out: dict = {}
    for variant in variants:
        ok = [f[variant] for f in folds if "accuracy" in f.get(variant, {})]
        if not ok:
            continue
        d: dict = {"folds": len(ok)}
        for m in METRICS:
            vals = np.array([f[m] for f in ok], float)
            d[m] = {"mean": round(float(vals.mean()), 2),
                    "std": round(float(vals.std(ddof=1)), 2) if len(vals) > 1 else None,
                    "min": round(float(vals.min()), 2), "max": round(float(vals.max()), 2)}
        cm = np.sum([np.array(f["confusion"], np.int64) for f in ok], axis=0)
        support = cm.sum(1)
        recall = {lab: (round(100.0 * cm[i, i] / support[i], 2) if support[i] else None)
                  for i, lab in enumerate(labels)}
        present = [r for r in recall.values() if r is not None]
        d["pooled"] = {"n": int(cm.sum()), "accuracy": round(100.0 * np.trace(cm) / max(cm.sum(), 1), 2),
                       "mean_recall": round(float(np.mean(present)), 2) if present else None,
                       "recall": recall, "confusion": cm.tolist()}
        out[variant] = d
    return out


def _fmt(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['mean']:.2f} ± {d['std']:.2f}" if d.get("std") is not None else f"{d['mean']:.2f}"


def render_md(summary: dict) -> str:
    s = summary["summary"]
    lines = [f"# {summary['row']}", "",
             f"Subject-independent {summary['folds']}-fold cross-validation on `{summary['data']}` "
             f"({summary['n_images']} images, {summary['n_subjects']} subjects, labels "
             f"{', '.join(summary['labels'])}); {summary['folds_done']} of {summary['folds']} folds done. "
             "No subject is on both sides of any fold; validation (early stopping, learning-rate choice) is "
             "carved by subject from each fold's training subjects.", "",
             "| model | accuracy % (mean ± std) | mean per-class recall % | macro-F1 % | pooled accuracy % | "
             "pooled mean recall % |", "|---|---|---|---|---|---|"]
    for v in summary.get("scored", ["float", "int8"]):
        d = s.get(v)
        if d:
            lines.append(f"| {v} | {_fmt(d['accuracy'])} | {_fmt(d['mean_recall'])} | {_fmt(d['macro_f1'])} | "
                         f"{d['pooled']['accuracy']:.2f} | {d['pooled']['mean_recall']:.2f} |")
    lines += ["", "std is the sample standard deviation over folds; pooled figures sum the folds' confusion "
              "matrices (each image counted once)."
              + (" `+flip`: each test image averaged with its mirror image (test-time augmentation, "
                 "fer_edge.tta); the same models." if any("+" in v for v in summary.get("scored", [])) else ""),
              ""]
    if s.get("float") and s.get("int8"):
        lines += ["Pooled per-class recall %:", "",
                  "| class | " + " | ".join(summary["labels"]) + " |",
                  "|---|" + "---|" * len(summary["labels"])]
        for v in [v for v in summary.get("scored", ["float", "int8"]) if s.get(v)]:
            lines.append(f"| {v} | " + " | ".join("-" if s[v]["pooled"]["recall"][lab] is None
                                                   else f"{s[v]['pooled']['recall'][lab]:.1f}"
                                                   for lab in summary["labels"]) + " |")
        lines.append("")
    lines += ["| fold | test subjects | test images | float acc | float recall | int8 acc | int8 recall | lr | "
              "train s |", "|---|---|---|---|---|---|---|---|---|"]
    for f in summary["fold_rows"]:
        fl, q = f.get("float", {}), f.get("int8", {})
        lines.append(f"| {f['fold']} | {len(f['test_subjects'])} | {f['n_test']} | {fl.get('accuracy', '-')} | "
                     f"{fl.get('mean_recall', '-')} | {q.get('accuracy', '-')} | {q.get('mean_recall', '-')} | "
                     f"{f.get('chosen_lr')} | {f.get('train_wall_s')} |")
    cfg = summary["convert"]
    lines += ["", f"Settings: backbone {cfg['model']} alpha {cfg.get('alpha')}, {cfg.get('input_size')} px "
              f"{cfg.get('color')}, weights {cfg.get('weights')}, lr {cfg.get('lrs')}, epochs {cfg.get('epochs')} "
              f"head + {cfg.get('fine_tune_epochs')} fine-tune (patience {cfg.get('patience')}), batch "
              f"{cfg.get('batch_size')}, class weights {cfg.get('class_weights')}, augment {cfg.get('augment')}, "
              f"seed {cfg.get('seed')}; budget scale {summary['budget_scale']}.",
              f"Reproduce: `{summary['command']}`", ""]
    dep = summary.get("deploy")
    if dep:
        lines += [f"Deployable model: `{dep['path']}` ({dep['size_bytes']} bytes), trained on all "
                  f"{summary['n_subjects']} subjects (validation carved by subject: val accuracy "
                  f"{dep.get('val_accuracy')}%, mean recall {dep.get('val_mean_recall')}%); the CV figures above "
                  "are its estimate of accuracy on unseen people.", ""]
    return "\n".join(lines)


def _fold_key(cfg, test_subjects: list[str], tta: Sequence[str] = ("none",)) -> str:
    # tta joins the key only when asked for, so folds done before it existed are still recognised
    extra = "" if list(tta) == ["none"] else "|tta:" + ",".join(tta)
    return hashlib.sha256((cfg.fingerprint() + ",".join(test_subjects) + extra).encode()).hexdigest()[:16]


def _train_deploy(recipe, data: str, labels: list[str], out: Path, budget_scale: float, summary: dict,
                  console) -> dict:
    """Train on every subject, export int8, write it (metadata carries the CV estimate) to cv.deploy_model."""
    from fer_edge.convert.api import convert
    from fer_edge.metadata import read_metadata, strip, write_tflite
    from fer_edge.recipes.recipe import convert_config

    cfg = convert_config(recipe, data, out / "deploy", budget_scale, labels=labels, eval_test=False)
    console.print("[bold]deployable model[/]: training on every subject", highlight=False)
    res = convert(cfg, console=console)
    src = res.paths["int8"]
    meta = read_metadata(src)
    est = {v: {m: summary["summary"][v][m] for m in ("accuracy", "mean_recall")}
           for v in summary["scored"] if v in summary["summary"]}
    meta = meta.model_copy(update={"extra": {**meta.extra, "cv_estimate": {
        "folds": summary["folds"], "subject_independent": True, **est,
        "note": "trained on every subject; these k-fold figures estimate accuracy on unseen people"}}})
    dest = Path(recipe.cv.deploy_model)
    write_tflite(dest, strip(src.read_bytes()), meta)
    val = res.metrics.get("int8", {}).get("val", {})
    return {"path": str(dest), "size_bytes": dest.stat().st_size, "convert_dir": str(res.out),
            "val_accuracy": round(100 * val["accuracy"], 2) if "accuracy" in val else None,
            "val_mean_recall": round(100 * val["mean_recall"], 2) if "mean_recall" in val else None}


def run_cv(recipe, name: str, data: str | None, out: Path, results_dir: Path, budget_scale: float = 1.0,
           folds: int | None = None, console=None, recipe_path: str | os.PathLike | None = None) -> dict:
    """Run (or resume) the k folds, then the deployable model; returns the summary dict."""
    from fer_edge.bench import run_bench
    from fer_edge.convert.api import convert
    from fer_edge.data.readers import open_dataset
    from fer_edge.data.splits import subject_kfold
    from fer_edge.recipes.recipe import convert_config, git_commit
    from fer_edge.tta import tta_name

    if data is None:
        raise ConfigError("a cv recipe needs real data on disk with subjects (e.g. data/ckplus48), not 'synthetic'")
    if "int8" not in recipe.variants:
        raise ConfigError("a cv recipe reports float and int8: keep int8 in `variants`")
    k = recipe.cv.folds
    ds = open_dataset(data, recipe.kind, recipe.convert.get("labels"))
    labels = list(ds.labels)
    split_of = subject_kfold(ds.samples, k=k, seed=recipe.cv.seed)
    n_subjects = len({s.subject for s in ds.samples if s.subject is not None})
    command = f"fer-edge recipe {recipe_path or Path('converters') / (name + '.yaml')}" + (
        f" --budget-scale {budget_scale:g}" if budget_scale != 1.0 else "")
    summary = {"schema": CV_SCHEMA, "recipe": name, "row": recipe.row, "data": recipe.data,
               "n_images": len(ds.samples), "n_subjects": n_subjects, "labels": labels, "folds": k,
               "cv_seed": recipe.cv.seed, "budget_scale": budget_scale, "command": command,
               "scored": scored_variants(recipe.tta), "fold_rows": []}
    results_dir.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        summary["folds_done"] = len(summary["fold_rows"])
        summary["summary"] = summarise(summary["fold_rows"], labels, summary["scored"])
        summary["git"] = git_commit()
        atomic_write_text(results_dir / f"{name}.json", json.dumps(summary, indent=2, default=str))
        atomic_write_text(results_dir / f"{name}.md", render_md(summary))

    todo = range(k if folds is None else min(k, folds))
    for i in todo:
        train, test = split_of[i]
        test_subjects = sorted({s.subject for s in test if s.subject is not None})
        fold_dir = out / "folds" / f"fold_{i:02d}"
        tree = fold_dir / "data"
        cfg = convert_config(recipe, str(tree), fold_dir / "convert", budget_scale, labels=labels)
        summary["convert"] = cfg.model_dump(mode="json", exclude={"data", "out"})
        key = _fold_key(cfg, test_subjects, recipe.tta)
        done_file = fold_dir / "fold.json"
        if done_file.is_file():
            prev = json.loads(done_file.read_text())
            if prev.get("key") == key:
                console.print(f"fold {i}: already done ({done_file}); skipped", highlight=False)
                summary["fold_rows"].append(prev)
                save()
                continue
        console.print(f"[bold]fold {i + 1}/{k}[/]: {len(train)} train / {len(test)} test images, "
                      f"{len(test_subjects)} held-out subjects", highlight=False)
        t0 = time.perf_counter()
        write_fold_tree(tree, train, test)
        res = convert(cfg, console=console)
        bench = run_bench([res.out], str(tree), split="test", speed=False, plots=False, console=None,
                          tta=recipe.tta)
        by_variant = {tta_name(v.variant, v.tta): v for v in bench.variants}
        train_subjects = sorted({s.subject for s in train if s.subject is not None})
        row: dict[str, Any] = {"fold": i, "key": key, "test_subjects": test_subjects, "train_subjects": train_subjects,
               "n_train": len(train), "n_test": len(test),
               **{v: _scores(by_variant.get(v)) for v in summary["scored"]},
               "chosen_lr": res.best_lr, "train_wall_s": round(res.timings.get("train", 0.0), 1),
               "wall_s": round(time.perf_counter() - t0, 1)}
        atomic_write_text(done_file, json.dumps(row, indent=2, default=str))
        shutil.rmtree(tree, ignore_errors=True)
        summary["fold_rows"].append(row)
        save()
        console.print(f"fold {i}: float acc {row['float'].get('accuracy')}% recall {row['float'].get('mean_recall')}%"
                      f" | int8 acc {row['int8'].get('accuracy')}% recall {row['int8'].get('mean_recall')}% "
                      f"({row['wall_s']} s)", highlight=False)
    if len(summary["fold_rows"]) == k and recipe.cv.deploy_model:
        summary["deploy"] = _train_deploy(recipe, data, labels, out, budget_scale, summary, console)
        save()
    elif recipe.cv.deploy_model:
        console.print(f"[yellow]note:[/] {len(summary['fold_rows'])} of {k} folds done: the deployable model is "
                      "trained once every fold has run", highlight=False)
    return summary
