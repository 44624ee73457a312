"""Training elsewhere, exporting here: checkpoints that travel (benchmarks/gpu_grid.py) and the resume rules
of fer_edge.convert.train that let `fer-edge recipe` pick them up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_benchmark, region_images

LABELS = ["angry", "happy", "sad"]
SIZE = 32


def _grid():
    return load_benchmark("gpu_grid")


def _build():
    from fer_edge.convert import backbones as bb
    from fer_edge.preprocess import PreprocessSpec

    return bb.build_classifier("face_vgg_tiny", PreprocessSpec(input_size=SIZE, color="grey"), 3, "none")


def _data(n=96, seed=0):
    x, y = region_images(n, SIZE, seed)
    xv, yv = region_images(48, SIZE, seed + 1)
    return {"x_train": x, "y_train": y, "x_val": xv, "y_val": yv}


@pytest.fixture(scope="module")
def two_rates(tmp_path_factory):
    """A finished two-rate training run (the layout a GPU box brings back)."""
    from fer_edge.convert.train import TrainConfig, train

    work = tmp_path_factory.mktemp("work")
    cfg = TrainConfig(epochs=0, fine_tune_epochs=1, lrs=[2e-3, 1e-4], batch_size=32, seed=0)
    res = train(_build, _data(), LABELS, cfg, work)
    return work, cfg, res


def test_resume_uses_finished_rates_without_their_weights(two_rates, tmp_path):
    import shutil

    from fer_edge.convert.train import _lr_tag, train

    work, cfg, res = two_rates
    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    other = next(lr for lr in cfg.lrs if lr != res.best_lr)
    (copy / _lr_tag(other) / "best.weights.h5").unlink()  # only the chosen rate's weights came back
    seen = []
    again = train(_build, _data(), LABELS, cfg, copy, on_epoch=seen.append)
    assert seen == []  # nothing retrained
    assert again.best_lr == res.best_lr
    x = _data()["x_val"][:8].astype(np.float32)
    np.testing.assert_allclose(again.model.predict_on_batch(x), res.model.predict_on_batch(x), atol=1e-6)


def test_missing_weights_of_the_chosen_rate_is_an_error_naming_the_file(two_rates, tmp_path):
    import shutil

    from fer_edge.convert.train import _lr_tag, train
    from fer_edge.errors import ModelError

    work, cfg, res = two_rates
    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    missing = copy / _lr_tag(res.best_lr) / "best.weights.h5"
    missing.unlink()
    with pytest.raises(ModelError, match="best.weights.h5") as exc:
        train(_build, _data(), LABELS, cfg, copy)
    assert "--no-resume" in str(exc.value)


def test_float16_transport_round_trips_weights(two_rates, tmp_path):
    import h5py

    from fer_edge.convert.train import _lr_tag

    grid = _grid()
    work, _, res = two_rates
    src = work / _lr_tag(res.best_lr) / "best.weights.h5"
    half, back = tmp_path / "w.f16.h5", tmp_path / "w.weights.h5"
    grid._h5_cast(src, half, np.float16)
    grid._h5_cast(half, back, np.float32)

    def data_bytes(path):
        sizes = []
        with h5py.File(path) as f:
            f.visititems(lambda n, o: sizes.append(o.nbytes) if isinstance(o, h5py.Dataset) else None)
        return sum(sizes)

    assert data_bytes(half) == pytest.approx(data_bytes(src) / 2, rel=0.01)
    assert data_bytes(back) == data_bytes(src)
    model, _ = _build()
    model.load_weights(back)
    x = _data()["x_val"][:16].astype(np.float32)
    ref = res.model.predict_on_batch(x)
    out = model.predict_on_batch(x)
    # float16 keeps ~3 significant digits per weight; through a whole network that moves probabilities
    # by up to ~2% (measured 0.3-2% on such tiny models), rarely an argmax
    assert np.abs(out - ref).max() < 0.05
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9
    assert np.abs(out - ref).max() > 0  # it did round


def test_float16_transport_keeps_what_float16_cannot_hold(tmp_path):
    import h5py

    grid = _grid()
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("layers/bn/vars/0", data=np.array([1.0, 2e5], np.float32))   # overflows float16
        f.create_dataset("layers/dense/vars/0", data=np.array([0.5, -0.25], np.float32))
        f["layers"].attrs["keep"] = "me"
    grid._h5_cast(tmp_path / "a.h5", tmp_path / "b.h5", np.float16)
    with h5py.File(tmp_path / "b.h5") as f:
        assert f["layers/bn/vars/0"].dtype == np.float32 and f["layers/bn/vars/0"][1] == 2e5
        assert f["layers/dense/vars/0"].dtype == np.float16
        assert f["layers"].attrs["keep"] == "me"


def test_bundle_splits_into_parts_and_unpack_restores_them(two_rates, tmp_path, monkeypatch):
    """Parts fit the per-command limits; unpacking them in any order restores float32 weights and states."""
    import shutil

    import h5py

    from fer_edge.convert.train import _lr_tag

    grid = _grid()
    work, cfg, res = two_rates
    root = tmp_path / "repo"
    recipes = []
    for name in ("alpha", "beta"):
        out = Path("runs") / "recipes" / name / "convert"
        shutil.copytree(work, root / out / "checkpoints")
        (root / out / "checkpoints" / "fingerprint.txt").write_text(f"fp-{name}")
        recipes.append({"recipe": name, "config": {"out": str(out), "lrs": cfg.lrs}, "fingerprint": f"fp-{name}"})
    pack = root / ".gpu"
    pack.mkdir()
    (pack / grid.MANIFEST).write_text(json.dumps({"entries": recipes}))
    # Limits scaled to what one recipe's weights weigh as they travel (float16; for a tiny model the HDF5
    # structure is much of the file): one recipe's weights per part, each part split into several chunks.
    grid._h5_cast(work / _lr_tag(res.best_lr) / "best.weights.h5", tmp_path / "w.f16.h5", np.float16)
    half = (tmp_path / "w.f16.h5").stat().st_size
    chunk = max(1024, half // 3)
    monkeypatch.setattr(grid, "ROOT", root)
    monkeypatch.setattr(grid, "PACK_DIR", pack)
    monkeypatch.setattr(grid, "PART_BYTES", int(half * 1.5))      # one recipe's weights per part
    monkeypatch.setattr(grid, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(grid, "MAX_CHUNKS", 100)
    monkeypatch.setattr(grid, "FLOAT16_ABOVE", 0)                  # these tiny weights would travel as float32
    out = tmp_path / "out"
    grid.bundle(out, tmp_path / "scratch" / "bundle")
    chunks = sorted(out.glob("part*/*"))
    parts = {c.parent for c in chunks}
    assert len(parts) == 2  # the two recipes' weights do not fit one part
    assert all(c.stat().st_size <= chunk for c in chunks) and len(chunks) >= 2 * len(parts)  # parts are split
    assert all(sum(c.stat().st_size for c in p.iterdir()) <= grid.PART_BYTES + 10_240 for p in parts)  # + tar headers
    dest = tmp_path / "dest"
    grid.unpack(list(reversed(chunks)), dest)
    summary = json.loads((dest / "runs" / "gpu-grid" / "summary.json").read_text())
    assert [s["chosen"] for s in summary] == [_lr_tag(res.best_lr)] * 2
    for name in ("alpha", "beta"):
        ck = dest / "runs" / "recipes" / name / "convert" / "checkpoints"
        assert (ck / "fingerprint.txt").read_text() == f"fp-{name}"
        for lr in cfg.lrs:
            assert json.loads((ck / _lr_tag(lr) / "state.json").read_text())["done"]
        restored = ck / _lr_tag(res.best_lr) / "best.weights.h5"
        assert not list(ck.rglob("*.f16.h5"))
        with h5py.File(restored) as f:
            dtypes = set()
            f.visititems(lambda n, o, seen=dtypes: seen.add(o.dtype) if isinstance(o, h5py.Dataset) else None)
        assert np.dtype(np.float16) not in dtypes
        assert not (ck / _lr_tag(next(lr for lr in cfg.lrs if lr != res.best_lr)) / "best.weights.h5").exists()


def test_predict_pads_the_last_batch_without_changing_results(two_rates):
    from fer_edge.convert.train import predict_probs

    _, _, res = two_rates
    x = _data(n=50, seed=3)["x_train"]
    padded = predict_probs(res.model, x, batch_size=16)        # 16+16+16+2: the 2 are padded to 16
    one_by_one = np.concatenate([res.model.predict_on_batch(x[i:i + 1].astype(np.float32)) for i in range(len(x))])
    assert padded.shape == (50, 3)
    np.testing.assert_allclose(padded, one_by_one, atol=1e-5)


def test_trained_elsewhere_then_exported_here_end_to_end(tmp_path, monkeypatch):
    """pack -> train (a separate process, as on the GPU box) -> bundle -> unpack into a fresh checkout ->
    `fer-edge recipe` finds every rate done, trains nothing and exports the chosen rate's weights."""
    import shutil

    import cv2

    from fer_edge.recipes import run_recipe

    data = tmp_path / "faces"
    for split, (n, seed) in {"train": (240, 0), "public_test": (45, 1)}.items():
        x, y = region_images(n, 48, seed)
        for i, (img, c) in enumerate(zip(x, y)):
            d = data / split / LABELS[c]
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{i}.png"), img[..., 0])
    recipe = tmp_path / "tiny_grid.yaml"
    recipe.write_text(f"""row: tiny grid row
data: {data}
split: public_test
model: face_vgg_tiny
variants: [int8]
bench_runs: 5
bench_max_seconds: 0.2
train_eval_limit: 50
convert:
  preset: paper   # the ImageNet backbones' recipe: no logit adjustment after training, the float model is the chosen epoch
  input_size: 32
  lrs: [2.0e-3, 1.0e-4]
  epochs: 0
  fine_tune_epochs: 4
  batch_size: 32
""")
    box, here = tmp_path / "box", tmp_path / "here"
    box.mkdir()
    here.mkdir()
    monkeypatch.setenv("FER_EDGE_GPU_GRID_ROOT", str(box))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")   # the GPU box uses jax; the code path is the same
    grid = _grid()
    assert grid.ROOT == box
    grid.pack([str(recipe)], None)
    grid.train_all(600, None, tmp_path / "logs")
    logs = {p.name: p.read_text() for p in (tmp_path / "logs").glob("*.log")}
    assert len(logs) == 2 and all(" done: " in t for t in logs.values()), logs
    grid.bundle(tmp_path / "parts", tmp_path / "scratch" / "bundle")
    grid.unpack(sorted((tmp_path / "parts").glob("part*/*")), here)
    monkeypatch.chdir(here)
    row = run_recipe(recipe, results=here / "results")
    assert row["train_machines"] and row["chosen_lr"] in (2e-3, 1e-4)
    conv = json.loads((here / "runs" / "recipes" / "tiny_grid" / "convert" / "convert.json").read_text())
    assert conv["timings"]["train"] < 30  # resumed: nothing trained here
    assert row["train_wall_s"] >= sum(r["seconds"] for r in conv["runs"]) - 0.1
    # the exported float model IS the chosen rate's best epoch: same validation score as on the box
    chosen = next(r for r in conv["runs"] if r["lr"] == row["chosen_lr"])
    assert conv["metrics"]["float"]["val"]["accuracy"] == pytest.approx(chosen["best_accuracy"], abs=1e-9)
    assert row["int8"]["n"] == 45
    shutil.rmtree(box)
