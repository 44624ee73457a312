"""The data audit and `fer-edge audit` on generated data; FER2013 / CK+ known answers behind realdata."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_edge.cli import main
from fer_edge.data.audit import near_pairs, run_audit
from fer_edge.data.readers import open_dataset
from fer_edge.data.synthetic import synthetic_set, write_synthetic_tree
from fer_edge.data.types import LabelledSet


def _shifted(blur_train: bool) -> LabelledSet:
    ds = synthetic_set(n_per_class=30, size=48, seed=2)
    if not blur_train:
        return ds
    samples = [replace(s, pixels=cv2.GaussianBlur(s.pixels, (0, 0), 3.0)) if s.split == "train" else s
               for s in ds.samples]
    return LabelledSet(samples, ds.labels, ds.source, ds.kind)


def test_audit_flags_blurred_train_against_sharp_test():
    report = run_audit(_shifted(blur_train=True))
    sharp = [w for w in report.warnings if w.startswith("SHARPNESS SHIFT")]
    assert sharp and "'train' images are" in sharp[0]
    assert report.splits["train"].sharpness.median * 4 < report.splits["test"].sharpness.median


def test_audit_of_a_clean_set_has_no_shift_warnings():
    report = run_audit(_shifted(blur_train=False))
    assert not [w for w in report.warnings if "SHIFT" in w], report.warnings
    assert report.exact.groups == 0 and report.constant_images == []
    s = report.splits["train"]
    assert s.images == 7 * 21 and s.sizes == {"48x48": 147} and s.channels == {"grey": 147}
    assert s.imbalance == 1.0 and 0 < s.sharpness.p10 <= s.sharpness.median <= s.sharpness.p90


def test_audit_finds_duplicates_constant_and_unreadable(tmp_path):
    root = write_synthetic_tree(tmp_path / "d", n_per_class=6, size=48, labels=["happy", "sad", "angry"],
                                splits=True)
    src = sorted((root / "train" / "happy").iterdir())[0]
    # the same bytes under another label in another split: a leak with a conflicting label
    (root / "test" / "sad").mkdir(parents=True, exist_ok=True)
    shutil.copy(src, root / "test" / "sad" / "copy.png")
    # a near-identical copy: same face, a few pixel values nudged, different bytes
    img = cv2.imread(str(sorted((root / "train" / "sad").iterdir())[0]), cv2.IMREAD_GRAYSCALE)
    nudged = img.copy()
    nudged[::7, ::7] = np.clip(nudged[::7, ::7].astype(int) + 3, 0, 255)
    cv2.imwrite(str(root / "val" / "sad" / "nudged.png"), nudged)
    cv2.imwrite(str(root / "train" / "angry" / "black.png"), np.zeros((48, 48), np.uint8))
    (root / "train" / "angry" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")

    report = run_audit(open_dataset(root))
    ex = report.exact
    assert ex.groups == 1 and ex.images == 2 and ex.redundant == 1
    assert len(ex.conflicting) == 1 and len(ex.crossing) == 1
    assert sorted(ex.conflicting[0].labels) == ["happy", "sad"]
    assert sorted(ex.crossing[0].splits) == ["test", "train"]
    near = report.near
    assert near.groups == 1 and any(k.endswith("nudged.png") for k in near.crossing[0].keys)
    assert [k for k, _ in report.constant_images] == [str(root / "train" / "angry" / "black.png")]
    assert report.splits["train"].all_black == 1
    assert [u.key for u in report.unreadable] == [str(root / "train" / "angry" / "broken.jpg")]
    text = "\n".join(report.warnings)
    for needle in ("CONFLICTING LABELS", "CROSS SPLITS", "near-identical", "constant image", "unreadable"):
        assert needle in text
    json.dumps(report.to_dict(), allow_nan=False)


def test_near_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64)
    flips = [np.uint64(1) << np.uint64(b) for b in rng.integers(0, 64, 200)]
    near = np.array([base[i] ^ flips[i] ^ (flips[i + 1] if i % 3 == 0 else np.uint64(0)) for i in range(150)],
                    np.uint64)
    h = np.concatenate([base, near])
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    for d in (0, 1, 2, 3):
        expect = sorted(zip(*[a.tolist() for a in np.nonzero(np.triu(dist <= d, 1))]))
        assert near_pairs(h, d) == expect
    assert len(near_pairs(h, 2)) >= 150


def test_cli_audit_exit_codes(tmp_path, capsys):
    root = write_synthetic_tree(tmp_path / "d", n_per_class=5, size=32, labels=["happy", "sad"])
    out = tmp_path / "audit.json"
    assert main(["audit", str(root), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["splits"]["all"]["class_counts"] == {"happy": 5, "sad": 5}
    assert "Class counts" in capsys.readouterr().out
    assert main(["audit", str(tmp_path / "missing")]) == 3
    assert main(["audit", str(root), "--kind", "ckplsu"]) == 2


# ---------------------------------------------------------------------------------------------- real data


def _sha1_groups(root: Path) -> list[list[Path]]:
    by = defaultdict(list)
    for p in sorted(root.rglob("*.jpg")):
        by[hashlib.sha1(p.read_bytes()).digest()].append(p)
    return [g for g in by.values() if len(g) > 1]


@pytest.mark.realdata
def test_fer2013_audit_known_answers(shared):
    root = shared / "data" / "fer2013"
    report = run_audit(open_dataset(root))
    train, test = report.splits["train"], report.splits["public_test"]
    assert (train.images, test.images) == (28_709, 3_589)
    assert train.all_black == 11
    assert 1_900 < train.sharpness.median < 2_300 and 1_950 < test.sharpness.median < 2_350
    assert not [w for w in report.warnings if "SHIFT" in w]
    # Duplicate figures checked against a plain hash of every file. On this copy they are
    # 1,273 groups / 47 with conflicting labels / 270 crossing train and public_test.
    truth = _sha1_groups(root)
    assert report.exact.groups == len(truth) == 1_273
    conflicting = sum(len({p.parent.name for p in g}) > 1 for g in truth)
    crossing = sum(len({p.parent.parent.name for p in g}) > 1 for g in truth)
    assert len(report.exact.conflicting) == conflicting == 47
    assert len(report.exact.crossing) == crossing == 270


@pytest.mark.realdata
def test_ckplus_subjects_and_subject_split(shared):
    from fer_edge.data.splits import make_splits

    ds = open_dataset(shared / "data" / "ckplus48")
    assert ds.kind == "ckplus" and len(ds.samples) == 981
    assert len({s.subject for s in ds.samples}) == 118
    assert ds.labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "contempt"]
    sp = make_splits(ds, val_fraction=0.2, seed=0)
    assert not {s.subject for s in sp["train"]} & {s.subject for s in sp["val"]}


def test_audit_progress_and_sharpness_at_model_size():
    ds = synthetic_set(n_per_class=40, size=48, seed=4)          # 280 samples: several chunks
    seen: list[int] = []
    native = run_audit(ds, progress=seen.append, workers=2)
    assert sum(seen) == 280 and len(seen) > 1
    small = run_audit(ds, spec_size=24, workers=1)
    # halving the size packs the same edges into fewer pixels: the Laplacian variance rises
    assert small.splits["train"].sharpness.median > 1.2 * native.splits["train"].sharpness.median
    assert small.splits["train"].class_counts == native.splits["train"].class_counts
