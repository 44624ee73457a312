"""Real-data check (FER2013 in ../shared): transfer learning from ImageNet beats the same net from scratch.

Marked realdata (deselected by default; run with `pytest -m realdata tests/test_convert_realdata.py -s`).
A short budget on purpose: a random 3,500-image slice of train, 64 px, 4 epochs per model.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.realdata

N_TRAIN, N_VAL, SIZE = 3500, 700, 64


def _subset(samples, n, seed=0):
    """A random slice (class shares follow the set's own), in file order."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(samples))[:n]
    return [samples[i] for i in sorted(idx)]


@pytest.fixture(scope="module")
def fer_arrays(shared):
    from fer_edge.data.load import load_arrays
    from fer_edge.data.readers import open_dataset
    from fer_edge.data.splits import make_splits
    from fer_edge.preprocess import PreprocessSpec

    ds = open_dataset(shared / "data" / "fer2013")
    splits = make_splits(ds, val_fraction=0.1, seed=0)
    spec = PreprocessSpec(input_size=SIZE, color="grey")
    out = {"labels": ds.labels, "spec": spec}
    for name, samples in (("train", _subset(splits["train"], N_TRAIN)),
                          ("val", _subset(splits["val"], N_VAL)), ("test", splits["public_test"])):
        out[name] = load_arrays(samples, spec, ds.labels)[:2]
    return out


def test_imagenet_weights_beat_scratch_on_publictest(fer_arrays, shared, tmp_path, monkeypatch):
    from fer_edge.convert import backbones as bb
    from fer_edge.convert.train import TrainConfig, predict_probs, train
    from fer_edge.metrics import score

    # The weights reach fer-edge the way a user's would: the Keras cache under $KERAS_HOME.
    src = shared / "weights" / "keras" / "mobilenet_2_5_224_tf_no_top.h5"
    (tmp_path / "kh" / "models").mkdir(parents=True)
    shutil.copy(src, tmp_path / "kh" / "models" / src.name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    found, _ = bb.resolve_weights(bb.get_backbone("mobilenet"), "imagenet", 0.25)
    assert found == tmp_path / "kh" / "models" / src.name

    labels, spec = fer_arrays["labels"], fer_arrays["spec"]
    data = {"x_train": fer_arrays["train"][0], "y_train": fer_arrays["train"][1],
            "x_val": fer_arrays["val"][0], "y_val": fer_arrays["val"][1]}
    xt, yt = fer_arrays["test"]
    cfg = TrainConfig(epochs=0, fine_tune_epochs=4, fine_tune_lr_factor=1.0, lrs=[1e-3], batch_size=64, seed=0)
    results = {}
    for weights in ("imagenet", "none"):
        def build(w=weights):
            return bb.build_classifier("mobilenet", spec, len(labels), weights=w, alpha=0.25)

        res = train(build, data, labels, cfg, tmp_path / weights)
        results[weights] = score(yt, predict_probs(res.model, xt), labels)
        print(f"\n{weights}: PublicTest accuracy {results[weights].accuracy:.2%}, "
              f"mean recall {results[weights].mean_recall:.2%}, {res.runs[0].seconds:.0f} s")
    im, sc = results["imagenet"], results["none"]
    # measured once (2 loaded cores, 2026-11): imagenet 30.7% / 29.7% mean recall, scratch 14.2% / 15.6%
    assert im.accuracy > sc.accuracy + 0.05
    assert im.mean_recall > sc.mean_recall + 0.05
    assert im.mean_recall > 0.22  # chance is 1/7 = 14%
