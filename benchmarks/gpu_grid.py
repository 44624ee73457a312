"""Train the FER2013 Table 1 grid on a borrowed GPU box, export and bench it here.

The grid (3 backbones x weighted/unweighted loss x 3 learning rates, plus MobileNetV2) needs hours on the
2-core CPUs, minutes on one GPU. The GPU box has JAX but no TensorFlow, no data set and no network, and
gives back at most 64 MiB per command; so the work is split where TensorFlow is needed:

    here:  python benchmarks/gpu_grid.py pack  RECIPE...       # decoded splits + resolved settings -> .gpu/
    GPU:   python benchmarks/gpu_grid.py train --deadline S     # every (recipe, lr), 6 at a time, KERAS_BACKEND=jax
    GPU:   python benchmarks/gpu_grid.py bundle --out DIR       # checkpoints -> parts of <= 64 MiB (float16 weights)
    here:  python benchmarks/gpu_grid.py unpack FILES...        # -> runs/recipes/<recipe>/convert/checkpoints
    here:  fer-edge recipe converters/RECIPE.yaml               # resumes from those checkpoints: export + bench
    here:  python benchmarks/gpu_grid.py report RECIPE...       # every learning rate of the sweep, as a table

Training writes the very checkpoint layout `fer-edge convert` writes (per-rate state.json and best
weights, the settings fingerprint), so the last step is the ordinary recipe command: it finds every rate
done, loads the chosen rate's weights, exports fp32/int8 and benches on PublicTest. Selection happens on
the validation split carved from train, as everywhere else; the reported split never leaves this machine.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import pickle
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

# The checkout whose runs/recipes/ receive the checkpoints (overridable so that tests work in a scratch folder)
ROOT = Path(os.environ.get("FER_EDGE_GPU_GRID_ROOT") or Path(__file__).resolve().parents[1])
PACK_DIR = ROOT / ".gpu"                 # git-ignored: research-only pixels never commit
PACK_FILE = "fer2013_splits.pkl.xz"
MANIFEST = "manifest.json"
PART_BYTES = 62 * 2**20                  # what one device command may bring back (64 MiB), with room to spare
CHUNK_BYTES = 15 * 2**20                 # one returned file is at most 16 MiB
MAX_CHUNKS = 8
# Weights files that fit one returned file travel as they are; larger ones (InceptionV3: 88 MB) as float16,
# which moves the float model's probabilities by up to ~2% (int8 export quantizes far coarser anyway).
FLOAT16_ABOVE = CHUNK_BYTES


# -- here: pack ----------------------------------------------------------------------------------------------

def pack(recipes: list[str], shared: str | None) -> None:
    """Decode the splits once (native 48 px) and resolve each recipe to its exact convert settings."""
    from fer_edge.data.load import load_arrays
    from fer_edge.data.readers import open_dataset
    from fer_edge.data.splits import make_splits
    from fer_edge.preprocess import PreprocessSpec
    from fer_edge.recipes import convert_config, load_recipe, recipe_name, resolve_data

    entries, key = [], None
    for path in recipes:
        r = load_recipe(path)
        name = recipe_name(path)
        data = resolve_data(r, shared)
        cfg = convert_config(r, data, Path("runs") / "recipes" / name / "convert")
        k = (data, cfg.kind, cfg.val_fraction, cfg.seed, r.split)
        if key is None:
            key = k
        elif k != key:
            raise SystemExit(f"{path}: every packed recipe must share data, val_fraction and seed ({k} != {key})")
        entries.append({"recipe": name, "path": str(path), "config": cfg.model_dump(mode="json"),
                        "fingerprint": cfg.fingerprint(), "row": r.row, "split": r.split})
    data, kind, val_fraction, seed = key[:4]
    ds = open_dataset(data, kind, None)
    splits = make_splits(ds, val_fraction=val_fraction, seed=seed)
    spec = PreprocessSpec(input_size=48, color="grey")
    arrays = {"labels": list(ds.labels)}
    # train and val only: the reported split never travels (it is not needed there, and the device's
    # 64 MiB transfer limit has no room for it)
    for split in ("train", "val"):
        x, y, skipped = load_arrays(splits[split], spec, list(ds.labels))
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        print(f"{split}: {len(y)} images, {len(skipped)} skipped")
    _check_native_size(splits["train"][:200])
    PACK_DIR.mkdir(exist_ok=True)
    with lzma.open(PACK_DIR / PACK_FILE, "wb", preset=6) as f:
        pickle.dump(arrays, f, protocol=5)
    (PACK_DIR / MANIFEST).write_text(json.dumps({"entries": entries}, indent=1))
    print(f"packed {len(entries)} recipes, {(PACK_DIR / PACK_FILE).stat().st_size / 2**20:.1f} MiB")


def _check_native_size(samples) -> None:
    """The GPU side resizes the packed 48 px crops; that equals decoding the file at the model size only
    when the file itself is 48 px (FER2013's are)."""
    from fer_edge.data.load import sample_image

    shapes = {sample_image(s).shape[:2] for s in samples}
    if shapes != {(48, 48)}:
        raise SystemExit(f"expected 48x48 images, found {sorted(shapes)}")


# -- GPU box: train ------------------------------------------------------------------------------------------

def _load_pack() -> tuple[dict, dict]:
    manifest = json.loads((PACK_DIR / MANIFEST).read_text())
    with lzma.open(PACK_DIR / PACK_FILE, "rb") as f:
        arrays = pickle.load(f)
    return manifest, arrays


def _resize(x48: np.ndarray, size: int) -> np.ndarray:
    from fer_edge.preprocess import PreprocessSpec, to_model_input

    spec = PreprocessSpec(input_size=size, color="grey")
    return np.stack([to_model_input(img, spec) for img in x48])


class Deadline(Exception):
    pass


def train_one(recipe: str, lr: float, deadline: float, limit: int = 0) -> None:
    """One (recipe, learning rate): the same train_lr `fer-edge convert` runs, in its checkpoint folder."""
    import contextlib

    import keras

    from fer_edge.convert import backbones as bb
    from fer_edge.convert.api import ConvertConfig, classifier_builder, train_config
    from fer_edge.convert.train import LrRun, _lr_tag, predict_probs, sample_weights, train_lr
    from fer_edge.metrics import score
    from fer_edge.preprocess import PreprocessSpec

    manifest, arrays = _load_pack()
    if limit:  # a smoke test of the whole path on a CPU; the packed splits are sorted by class
        for split in ("train", "val"):
            keep = np.sort(np.random.default_rng(0).permutation(len(arrays[f"y_{split}"]))[:limit])
            arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][keep], arrays[f"y_{split}"][keep]
    entry = next(e for e in manifest["entries"] if e["recipe"] == recipe)
    cfg = ConvertConfig.model_validate(entry["config"])
    spec_b = bb.get_backbone(cfg.model)
    size = cfg.input_size or spec_b.default_size
    labels = arrays["labels"]
    data = {"x_train": _resize(arrays["x_train"], size), "y_train": arrays["y_train"],
            "x_val": _resize(arrays["x_val"], size), "y_val": arrays["y_val"]}
    tcfg = train_config(cfg)
    preprocess = PreprocessSpec(input_size=size, color=cfg.color)
    sw = sample_weights(data["y_train"], len(labels), tcfg.weighting)
    work = ROOT / cfg.out / "checkpoints"
    ckpt = work / _lr_tag(lr)

    build = classifier_builder(cfg, preprocess, len(labels))
    last = [time.time()]

    def on_epoch(row: dict) -> None:
        now = time.time()
        per_epoch, last[0] = now - last[0], now
        print(f"{recipe} lr {lr:g} epoch {row['epoch']}: loss {row['loss']:.3f} acc {row['accuracy']:.3f} "
              f"val acc {row['val_accuracy']:.3f} recall {row['val_mean_recall']:.3f} ({per_epoch:.1f} s)", flush=True)
        if now + per_epoch > deadline:
            raise Deadline(f"stopped after epoch {row['epoch']}: the next would pass the device deadline")

    note = ""
    try:
        train_lr(build, lr, data, labels, tcfg, ckpt, sw, contextlib.nullcontext, on_epoch=on_epoch, resume=True)
    except Deadline as exc:
        note = str(exc)
    state_path = ckpt / "state.json"
    run = LrRun(**json.loads(state_path.read_text()))
    if note:
        # What it reached counts as done: the exporting side must not silently go on training on a CPU.
        run.done, run.note = True, note
        state_path.write_text(json.dumps(run.to_dict(), indent=1))
        (ckpt / "last.keras").unlink(missing_ok=True)
    # Figures for the record: the chosen weights on validation and on training images (no augmentation).
    keras.utils.set_random_seed(cfg.seed)
    model, _ = build()
    model.load_weights(ckpt / "best.weights.h5")
    ev = {"recipe": recipe, "lr": lr, "best_epoch": run.best_epoch, "epochs_done": run.epochs_done,
          "seconds": round(run.seconds, 1), "machine": run.machine, "note": run.note}
    sub = np.sort(np.random.default_rng(0).permutation(len(data["y_train"]))[:3000])
    for name, (x, y) in {"val": (data["x_val"], data["y_val"]),
                         "train": (data["x_train"][sub], data["y_train"][sub])}.items():
        s = score(y, predict_probs(model, x), labels)
        ev[name] = {"accuracy": round(100 * s.accuracy, 2), "mean_recall": round(100 * s.mean_recall, 2),
                    "macro_f1": round(100 * s.macro_f1, 2)}
    (ckpt / "device_eval.json").write_text(json.dumps(ev, indent=1))
    print(f"{recipe} lr {lr:g} done: {json.dumps(ev)}", flush=True)


def train_all(deadline_s: float, only: list[str] | None, log_dir: Path, limit: int = 0, jobs: int = 6) -> None:
    """Every (recipe, lr) as its own process, `jobs` at a time, each capped to its share of GPU memory.

    Measured on an H100: all 21 runs at once without a cap failed - JAX's allocator grows per process
    until CUDA runs out (OOM in the predict step, 'all configs failed' in conv autotuning), and 21
    concurrent XLA compiles left one epoch each before the deadline. Six at once with 12% of the memory
    each ran 8 epochs of MobileNet 1.0 at 96 px in ~60 s per run (~6 s per epoch, 24 s compile).
    """
    manifest = json.loads((PACK_DIR / MANIFEST).read_text())
    deadline = time.time() + deadline_s
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax"), "PYTHONUNBUFFERED": "1",
           "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.75 / max(1, jobs):.3f}"}
    env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/fer-edge-jax-cache")
    queue = []
    for e in manifest["entries"]:
        if only and e["recipe"] not in only:
            continue
        work = ROOT / e["config"]["out"] / "checkpoints"
        work.mkdir(parents=True, exist_ok=True)
        (work / "fingerprint.txt").write_text(e["fingerprint"])
        queue += [(e["recipe"], lr) for lr in e["config"]["lrs"]]
    print(f"{len(queue)} training runs, {jobs} at a time; deadline in {deadline_s:.0f} s", flush=True)
    running: list[tuple[str, float, subprocess.Popen, object]] = []
    t0 = time.time()
    while queue or running:
        while queue and len(running) < jobs and time.time() < deadline - 60:
            recipe, lr = queue.pop(0)
            log = open(log_dir / f"{recipe}_lr{lr:g}.log", "w")
            cmd = [sys.executable, __file__, "_train_one", recipe, repr(lr), repr(deadline), str(limit)]
            running.append((recipe, lr, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        if queue and time.time() >= deadline - 60:
            print(f"not started (too close to the deadline): {queue}", flush=True)
            queue = []
        time.sleep(2)
        for item in [r for r in running if r[2].poll() is not None]:
            recipe, lr, p, log = item
            log.close()
            running.remove(item)
            print(f"{time.time() - t0:.0f} s: {recipe} lr {lr:g} exit {p.returncode}", flush=True)
        if time.time() > deadline + 45:
            for recipe, lr, p, log in running:
                p.kill()
                p.wait()
                log.close()
                print(f"killed at the deadline: {recipe} lr {lr:g}", flush=True)
            running = []


# -- GPU box: bundle; here: unpack ---------------------------------------------------------------------------

def _h5_cast(src: Path, dst: Path, dtype) -> None:
    """Copy a Keras weights file with every float32/float16 dataset cast to `dtype`; a tensor that float16
    would not hold to 1e-3 (overflow, say a large BatchNorm variance) stays float32."""
    import h5py

    with h5py.File(src, "r") as fi, h5py.File(dst, "w") as fo:
        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                g = fo.require_group(name)
                g.attrs.update(dict(obj.attrs))
            elif isinstance(obj, h5py.Dataset):
                a = obj[()]
                if isinstance(a, np.ndarray) and a.dtype.kind == "f":
                    with np.errstate(over="ignore"):  # an overflow is detected below and keeps float32
                        c = a.astype(dtype)
                    if np.dtype(dtype) == np.float16:
                        back = c.astype(np.float32)
                        if not np.all(np.isfinite(back)) or np.max(np.abs(back - a), initial=0) > 1e-3 * max(1.0, np.max(np.abs(a), initial=0)):
                            c = a
                    a = c
                d = fo.create_dataset(name, data=a)
                d.attrs.update(dict(obj.attrs))
        fo.attrs.update(dict(fi.attrs))
        fi.visititems(visit)


def bundle(out: Path, scratch: Path) -> None:
    """Checkpoints -> parts that each fit one device command's 64 MiB: states, evaluations and logs first,
    then the chosen rate's weights per recipe (float16 where large), largest first."""
    manifest = json.loads((PACK_DIR / MANIFEST).read_text())
    scratch.mkdir(parents=True, exist_ok=True)
    small: list[Path] = []
    heavy: list[tuple[int, Path]] = []
    summary = []
    for e in manifest["entries"]:
        work = ROOT / e["config"]["out"] / "checkpoints"
        if not work.is_dir():
            continue
        small.append(work / "fingerprint.txt")
        runs = []
        for ck in sorted(work.glob("lr_*")):
            for f in ("state.json", "device_eval.json"):
                if (ck / f).is_file():
                    small.append(ck / f)
            if (ck / "state.json").is_file():
                st = json.loads((ck / "state.json").read_text())
                runs.append((st["best_mean_recall"], st["best_accuracy"], -st["lr"], ck, st))
        done = [r for r in runs if r[4].get("done")]
        if not done:
            continue
        best = max(done)[3]
        w32, w16 = best / "best.weights.h5", best / "best.weights.f16.h5"
        if w32.is_file() and w32.stat().st_size <= FLOAT16_ABOVE:
            heavy.append((w32.stat().st_size, w32))
        elif w32.is_file():
            _h5_cast(w32, w16, np.float16)
            heavy.append((w16.stat().st_size, w16))
        summary.append({"recipe": e["recipe"], "chosen": best.name,
                        "rates": [{"lr": -r[2], "val_mean_recall": r[0], "val_accuracy": r[1],
                                   "epochs_done": r[4]["epochs_done"], "seconds": r[4]["seconds"],
                                   "note": r[4].get("note", "")} for r in runs]})
    logs = sorted(Path(scratch.parent / "logs").glob("*.log")) if (scratch.parent / "logs").is_dir() else []
    (scratch / "summary.json").write_text(json.dumps(summary, indent=1))
    parts: list[list[Path]] = [[scratch / "summary.json", *small, *logs]]
    sizes = [sum(p.stat().st_size for p in parts[0])]
    for size, path in sorted(heavy, key=lambda t: -t[0]):
        for i in range(len(parts)):
            if sizes[i] + size <= PART_BYTES:
                parts[i].append(path)
                sizes[i] += size
                break
        else:
            parts.append([path])
            sizes.append(size)
    for i, files in enumerate(parts):
        d = out / f"part{i}"
        d.mkdir(parents=True, exist_ok=True)
        tar_path = scratch / f"part{i}.tar"
        with tarfile.open(tar_path, "w") as tar:
            for f in files:
                # checkpoints keep their repository paths; the summary and logs go to runs/gpu-grid/
                arc = f.relative_to(ROOT) if f.is_relative_to(ROOT) else Path("runs") / "gpu-grid" / f.name
                tar.add(f, arcname=str(arc))
        data = tar_path.read_bytes()
        n = 0
        for j in range(0, len(data), CHUNK_BYTES):
            (d / f"part{i}.tar.{j // CHUNK_BYTES:03d}").write_bytes(data[j:j + CHUNK_BYTES])
            n += 1
        assert n <= MAX_CHUNKS, n
        print(f"part{i}: {len(files)} files, {len(data) / 2**20:.1f} MiB in {n} chunk(s)", flush=True)


def unpack(chunks: list[Path], dest: Path) -> None:
    """Reassemble parts (any order, any subset) and restore float32 weights where the checkpoints expect them."""
    import io

    by_part: dict[str, list[Path]] = {}
    for c in chunks:
        by_part.setdefault(c.name.rsplit(".", 1)[0], []).append(c)
    for part, files in sorted(by_part.items()):
        data = b"".join(p.read_bytes() for p in sorted(files, key=lambda p: p.name))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
        print(f"{part}: {len(files)} chunk(s) unpacked into {dest}")
    for w16 in dest.glob("runs/recipes/*/convert/checkpoints/lr_*/best.weights.f16.h5"):
        _h5_cast(w16, w16.with_name("best.weights.h5"), np.float32)
        w16.unlink()
        print(f"restored {w16.with_name('best.weights.h5')}")


def report(recipes: list[str], out: Path) -> None:
    """Every learning rate of every recipe, from the checkpoints: the sweep the table's rows were chosen from."""
    from fer_edge.atomic import atomic_write_text

    rows = []
    for name in recipes:
        work = ROOT / "runs" / "recipes" / name / "convert" / "checkpoints"
        for ck in sorted(work.glob("lr_*"), key=lambda p: -float(json.loads((p / "state.json").read_text())["lr"])
                         if (p / "state.json").is_file() else 0):
            if not (ck / "state.json").is_file():
                continue
            st = json.loads((ck / "state.json").read_text())
            ev = json.loads((ck / "device_eval.json").read_text()) if (ck / "device_eval.json").is_file() else {}
            rows.append({"recipe": name, "lr": st["lr"], "epochs_done": st["epochs_done"],
                         "best_epoch": st["best_epoch"], "val_accuracy": round(100 * st["best_accuracy"], 2),
                         "val_mean_recall": round(100 * st["best_mean_recall"], 2),
                         "train_accuracy": (ev.get("train") or {}).get("accuracy"),
                         "seconds": round(st["seconds"], 1), "machine": st.get("machine", ""),
                         "note": st.get("note", "")})
    best = {}
    for r in rows:
        key = (r["val_mean_recall"], r["val_accuracy"], -r["lr"])
        if r["recipe"] not in best or key > best[r["recipe"]][0]:
            best[r["recipe"]] = (key, r["lr"])
    lines = ["# The learning-rate sweep behind each Table 1 row (validation split, carved from train)", "",
             "Chosen = best validation mean per-class recall (the paper's selection metric); PublicTest never "
             "takes part. Train acc: 3,000 random training images, no augmentation. Seconds: the run's own "
             "clock, compile included, sharing the GPU with the runs beside it.", "",
             "| recipe | lr | chosen | epochs | best epoch | val acc | val mean recall | train acc | seconds | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        chosen = "yes" if best[r["recipe"]][1] == r["lr"] else ""
        lines.append(f"| `{r['recipe']}` | {r['lr']:g} | {chosen} | {r['epochs_done']} | {r['best_epoch']} | "
                     f"{r['val_accuracy']:.2f} | {r['val_mean_recall']:.2f} | "
                     f"{'-' if r['train_accuracy'] is None else format(r['train_accuracy'], '.2f')} | "
                     f"{r['seconds']:.0f} | {r['note']} |")
    machines = sorted({r["machine"] for r in rows if r["machine"]})
    lines += ["", f"Trained on: {'; '.join(machines)}.", "",
              "Regenerate: `.venv/bin/python benchmarks/gpu_grid.py report RECIPE...` after unpacking the checkpoints.", ""]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "gpu_grid_sweep.md", "\n".join(lines))
    atomic_write_text(out / "gpu_grid_sweep.json", json.dumps(rows, indent=1))
    print(f"{len(rows)} runs -> {out / 'gpu_grid_sweep.md'}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_train_one":
        train_one(argv[1], float(argv[2]), float(argv[3]), int(argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("recipes", nargs="+")
    p.add_argument("--shared", default=None)
    t = sub.add_parser("train")
    t.add_argument("--deadline", type=float, required=True, help="seconds from now by which training stops")
    t.add_argument("--only", nargs="*", default=None, help="recipe names (default: all packed)")
    t.add_argument("--logs", type=Path, default=Path("/tmp/fer-edge-gpu/logs"))
    t.add_argument("--limit", type=int, default=0, help="use only N random images per split (smoke test)")
    t.add_argument("--jobs", type=int, default=6, help="training processes at once (default 6, see train_all)")
    b = sub.add_parser("bundle")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--scratch", type=Path, default=Path("/tmp/fer-edge-gpu/bundle"))
    u = sub.add_parser("unpack")
    u.add_argument("chunks", nargs="+", type=Path)
    u.add_argument("--dest", type=Path, default=ROOT)
    r = sub.add_parser("report")
    r.add_argument("recipes", nargs="+", help="recipe names (converters/<name>.yaml stems)")
    r.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "table1")
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        pack(a.recipes, a.shared)
    elif a.cmd == "train":
        train_all(a.deadline, a.only, a.logs, a.limit, a.jobs)
    elif a.cmd == "bundle":
        bundle(a.out, a.scratch)
    elif a.cmd == "report":
        report(a.recipes, a.out)
    else:
        unpack(a.chunks, a.dest)


if __name__ == "__main__":
    main()
