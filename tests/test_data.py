"""Data side: decoding, readers, loading, splits, synthetic set. Tiny generated images only."""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_edge.images import BadImageError, decode_image
from fer_edge.data.load import class_counts, load_arrays
from fer_edge.data.readers import open_dataset
from fer_edge.data.splits import make_splits, report_split, subject_kfold
from fer_edge.data.synthetic import synthetic_set, write_synthetic_tree
from fer_edge.data.types import LabelledSet, Sample
from fer_edge.errors import DataError, UnknownNameError
from fer_edge.preprocess import PreprocessSpec, to_model_input


def face(seed: int, size: int = 24, colour: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if colour else (size, size)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def write(path: Path, img: np.ndarray, ext: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(ext or path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def tree(root: Path, spec: dict[str, int], ext: str = ".png", seed: int = 0) -> Path:
    """root/<class>/<class>_<i><ext> for {relative class folder: count}."""
    for k, (folder, n) in enumerate(spec.items()):
        for i in range(n):
            write(root / folder / f"{Path(folder).name}_{i}{ext}", face(seed * 1000 + k * 100 + i))
    return root


# ---------------------------------------------------------------------------------------------- decode


def test_decode_grey_rgb_rgba_16bit(tmp_path):
    grey = face(1)
    assert np.array_equal(decode_image(write(tmp_path / "g.png", grey)), grey)

    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 2] = 255                                   # pure red in OpenCV's BGR order
    rgb = decode_image(write(tmp_path / "red.png", bgr))
    assert rgb.shape == (16, 16, 3) and rgb[0, 0].tolist() == [255, 0, 0]

    bgra = np.dstack([bgr, np.full((16, 16), 128, np.uint8)])
    rgba = decode_image(write(tmp_path / "a.png", bgra))
    assert rgba.shape == (16, 16, 3) and rgba[0, 0].tolist() == [255, 0, 0]

    deep = np.full((16, 16), 100 * 256 + 7, np.uint16)
    out = decode_image(write(tmp_path / "d.png", deep))
    assert out.dtype == np.uint8 and int(out[0, 0]) == 100


def test_decode_cmyk_jpeg_and_bytes(tmp_path):
    from PIL import Image

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (220, 30, 30)
    rgb[:, 16:] = (30, 30, 220)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    out = decode_image(buf.getvalue())
    assert out.shape == (32, 32, 3)
    assert np.abs(out[8, 4].astype(int) - (220, 30, 30)).max() < 40
    assert np.abs(out[8, 28].astype(int) - (30, 30, 220)).max() < 40


def test_decode_non_utf8_and_unicode_names(tmp_path):
    img = face(2)
    odd = tmp_path / os.fsdecode(b"caf\xe9_\xff.png")      # not valid UTF-8 on disk
    write(odd, img)
    assert np.array_equal(decode_image(odd), img)
    uni = write(tmp_path / "表情 ü.png", img)
    assert np.array_equal(decode_image(uni), img)


@pytest.fixture
def corrupt(tmp_path) -> dict[str, Path]:
    ok, jpg = cv2.imencode(".jpg", face(3, 32))
    ok, png = cv2.imencode(".png", face(4, 32))
    files = {
        "empty": b"",
        "truncated JPEG": jpg.tobytes()[: len(jpg) // 2],
        "truncated PNG": png.tobytes()[: len(png) - 20],
        "text": b"this is not an image, just text\n",
        "too small": cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes(),
    }
    # a PNG header claiming 20000 x 20000: refused from the header, before any decoding
    big = bytearray(png.tobytes())
    big[16:24] = (20000).to_bytes(4, "big") * 2
    files["too large"] = bytes(big)
    names = {"empty": "e.jpg", "truncated JPEG": "t.jpg", "truncated PNG": "t.png", "text": "x.jpg",
             "too small": "s.png", "too large": "b.png"}
    out = {}
    for what, data in files.items():
        p = tmp_path / "bad" / names[what]
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        out[what] = p
    return out


@pytest.mark.parametrize("what,words", [
    ("empty", "empty"), ("truncated JPEG", "truncated jpeg"), ("truncated PNG", "truncated png"),
    ("text", "text"), ("too small", "too small"), ("too large", "too large"),
])
def test_decode_bad_images_raise_typed_errors(corrupt, what, words):
    with pytest.raises(BadImageError) as err:
        decode_image(corrupt[what])
    assert isinstance(err.value, DataError)
    assert words in err.value.reason.lower()
    assert str(corrupt[what]) in str(err.value)


# ---------------------------------------------------------------------------------------------- readers


def test_folder_reader_without_splits(tmp_path):
    root = write_synthetic_tree(tmp_path / "d", n_per_class=4, size=32)
    ds = open_dataset(root)
    assert ds.kind == "folder" and len(ds.samples) == 28
    assert ds.labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert ds.split_names == [] and all(s.subject is None and s.path.is_file() for s in ds.samples)
    assert class_counts(ds.samples, ds.labels) == {lab: 4 for lab in ds.labels}


def test_folder_reader_with_split_folders_fer2013_layout(tmp_path):
    root = tree(tmp_path / "fer", {"train/happy": 3, "train/sad": 2, "PublicTest/happy": 1, "PublicTest/sad": 2,
                                   "validation/happy": 1, "validation/sad": 1}, ext=".jpg")
    ds = open_dataset(root)
    assert ds.split_names == ["public_test", "train", "val"]
    assert len(ds.split("train")) == 5 and len(ds.split("public_test")) == 3 and len(ds.split("val")) == 2
    assert {s.label for s in ds.split("public_test")} == {"happy", "sad"}


def test_mixed_split_and_class_folders_is_an_error(tmp_path):
    root = tree(tmp_path / "m", {"train/happy": 1, "train/sad": 1, "angry": 1})
    with pytest.raises(DataError, match="mixes split folders"):
        open_dataset(root)


def test_label_aliases_merge_and_eight_classes(tmp_path):
    root = tree(tmp_path / "a", {"anger": 2, "Angry": 3, "Happiness": 2, "sadness": 1, "contempt": 2,
                                 "Surprised": 1, "fearful": 1, "disgusted": 1, "neutral": 1})
    ds = open_dataset(root)
    assert ds.labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]
    assert class_counts(ds.samples, ds.labels)["angry"] == 5


def test_forced_label_order_and_unknown_class(tmp_path):
    root = tree(tmp_path / "f", {"happy": 2, "sad": 2, "angry": 1})
    ds = open_dataset(root, labels=["Sadness", "happy", "anger", "surprise"])
    assert ds.labels == ["sad", "happy", "angry", "surprise"]
    with pytest.raises(DataError, match="angry"):
        open_dataset(root, labels=["happy", "sad"])


def test_hidden_and_non_image_files_ignored_and_symlink_loop_terminates(tmp_path):
    root = tree(tmp_path / "h", {"happy": 2, "sad": 2})
    (root / "happy" / ".DS_Store").write_bytes(b"junk")
    (root / "happy" / "notes.txt").write_text("hello")
    write(root / ".hidden" / "x.png", face(9))
    write(root / "sad" / ".thumb.png", face(9))
    os.symlink(root / "sad", root / "sad" / "loop")      # sad/loop -> sad: a cycle
    ds = open_dataset(root)
    assert sorted(Path(s.key).name for s in ds.samples) == ["happy_0.png", "happy_1.png", "sad_0.png", "sad_1.png"]


def test_no_images_and_single_class_errors(tmp_path):
    empty = tmp_path / "empty"
    (empty / "happy").mkdir(parents=True)
    (empty / "happy" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as err:
        open_dataset(empty)
    msg = str(err.value)
    assert "no images" in msg and "1 other file" in msg and "DATA/happy/img_0001.jpg" in msg

    single = tree(tmp_path / "single", {"happy": 3})
    with pytest.raises(DataError) as err:
        open_dataset(single)
    assert "single class 'happy' (3 images)" in str(err.value) and "DATA/sad/" in str(err.value)
    # with the label set given (a model's labels, for scoring) one class present is fine
    assert open_dataset(single, labels=["happy", "sad"]).labels == ["happy", "sad"]

    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(UnknownNameError, match="Did you mean 'folder'"):
        open_dataset(single, kind="foldr")


def write_fer_csv(path: Path, rows: list[tuple], header: str = "emotion,pixels,Usage") -> Path:
    lines = [header] + [",".join(str(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fer2013_csv_reader(tmp_path):
    imgs = [face(10 + i, 48) for i in range(4)]
    px = [" ".join(map(str, im.ravel())) for im in imgs]
    rows = [
        (0, px[0], "Training"),
        (3, px[1], "PublicTest"),
        (6, px[2], "PrivateTest"),
        (4, " ".join(px[3].split()[:-1]), "Training"),          # row 4: 2303 pixels
        (5, px[3].replace(" ", " 12a ", 1), "Training"),        # row 5: a bad int
        (9, px[3], "Training"),                                 # row 6: no emotion 9
        (2, px[3], "Training"),
    ]
    ds = open_dataset(write_fer_csv(tmp_path / "fer2013.csv", rows))
    assert ds.kind == "fer2013_csv"
    assert [s.key for s in ds.samples] == ["fer2013.csv:row 1", "fer2013.csv:row 2", "fer2013.csv:row 3",
                                           "fer2013.csv:row 7"]
    assert [s.split for s in ds.samples] == ["train", "public_test", "private_test", "train"]
    assert [s.label for s in ds.samples] == ["angry", "happy", "neutral", "fear"]
    assert np.array_equal(ds.samples[1].pixels, imgs[1]) and ds.samples[1].pixels.dtype == np.uint8
    assert [s.key for s in ds.skipped] == ["fer2013.csv:row 4", "fer2013.csv:row 5", "fer2013.csv:row 6"]
    assert "2303 pixel values" in ds.skipped[0].reason and "emotion code 9" in ds.skipped[2].reason
    assert ds.labels == ["angry", "fear", "happy", "neutral"]


def test_fer2013_csv_wrong_columns(tmp_path):
    bad = write_fer_csv(tmp_path / "x.csv", [("a", "b")], header="label,image")
    with pytest.raises(DataError) as err:
        open_dataset(bad)
    msg = str(err.value)
    assert "emotion" in msg and "pixels" in msg and "['label', 'image']" in msg


def test_ckplus_reader_subjects_from_names(tmp_path):
    spec = {"anger": ["S005_001_00000009", "S005_001_00000010", "S010_002_00000014"],
            "happy": ["S010_006_00000013", "S011_004_00000020", "S011_004_00000021"]}
    for cls, names in spec.items():
        for i, n in enumerate(names):
            write(tmp_path / "ck" / cls / f"{n}.png", face(i))
    ds = open_dataset(tmp_path / "ck")
    assert ds.kind == "ckplus" and ds.labels == ["angry", "happy"]
    assert Counter(s.subject for s in ds.samples) == {"S005": 2, "S010": 2, "S011": 2}


def test_jaffe_reader_flat_folder(tmp_path):
    names = ["KA.AN1.39.tiff", "KA.HA2.30.tiff", "KL.SU1.164.tiff", "KL.NE3.157.tiff", "YM.DI1.58.tiff",
             "YM.FE2.66.tiff", "NA.SA1.209.tiff", "README.tiff"]
    for i, n in enumerate(names):
        write(tmp_path / "jaffe" / n, face(i, 32), ext=".tiff")
    ds = open_dataset(tmp_path / "jaffe")
    assert ds.kind == "jaffe"
    got = {Path(s.key).name: (s.subject, s.label) for s in ds.samples}
    assert got["KA.AN1.39.tiff"] == ("KA", "angry") and got["YM.DI1.58.tiff"] == ("YM", "disgust")
    assert got["NA.SA1.209.tiff"] == ("NA", "sad") and len(got) == 7
    assert [Path(s.key).name for s in ds.skipped] == ["README.tiff"]


def test_synthetic_when_no_path():
    ds = open_dataset(None)
    assert ds.kind == "synthetic" and len(ds.labels) == 7
    assert set(ds.split_names) == {"train", "val", "test"}


# ---------------------------------------------------------------------------------------------- load


def test_load_arrays_skips_and_names_corrupt_files(tmp_path, corrupt):
    root = tree(tmp_path / "d", {"happy": 3, "sad": 3}, ext=".jpg")
    for what, p in corrupt.items():
        target = root / ("happy" if len(what) % 2 else "sad") / p.name.replace(".", f"_{len(what)}.")
        target.write_bytes(p.read_bytes())
    ds = open_dataset(root)
    assert len(ds.samples) == 12
    spec = PreprocessSpec(input_size=20, color="rgb")
    seen = []
    x, y, skipped = load_arrays(ds.samples, spec, ds.labels, progress=seen.append, workers=3)
    assert x.shape == (6, 20, 20, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert sum(seen) == 12
    assert len(skipped) == 6 and all(Path(s.key).parent.parent == root for s in skipped)
    reasons = " | ".join(s.reason for s in skipped)
    for word in ("empty", "truncated JPEG", "truncated PNG", "text", "too small", "too large"):
        assert word in reasons
    good = [s for s in ds.samples if s.key not in {k.key for k in skipped}]
    assert y.tolist() == [ds.labels.index(s.label) for s in good]
    assert np.array_equal(x[0], to_model_input(decode_image(good[0].path), spec))


def test_load_arrays_threads_match_serial_and_inline_pixels():
    ds = synthetic_set(n_per_class=40, size=48, seed=1)          # 280 samples: more than one chunk
    spec = PreprocessSpec(input_size=32, color="grey")
    x1, y1, s1 = load_arrays(ds.samples, spec, ds.labels, workers=1)
    x4, y4, s4 = load_arrays(ds.samples, spec, ds.labels, workers=4)
    assert np.array_equal(x1, x4) and np.array_equal(y1, y4) and s1 == s4 == []
    assert x1.shape == (280, 32, 32, 1)
    with pytest.raises(DataError, match="happy"):
        load_arrays(ds.samples, spec, ["angry", "sad"])


# ---------------------------------------------------------------------------------------------- splits


def _subject_set(n_subjects: int, seed: int) -> LabelledSet:
    rng = np.random.default_rng(seed)
    labels = ["angry", "happy", "sad", "surprise"]
    samples = []
    for s in range(n_subjects):
        for lab in rng.choice(labels, size=rng.integers(1, 4), replace=False):
            for f in range(rng.integers(1, 5)):
                samples.append(Sample(key=f"S{s:03d}_{lab}_{f}", label=str(lab), subject=f"S{s:03d}"))
    return LabelledSet(samples, labels, "gen", "ckplus")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_subjects=st.integers(4, 40))
def test_subject_never_crosses_splits(seed, n_subjects):
    ds = _subject_set(n_subjects, seed)
    sp = make_splits(ds, val_fraction=0.2, seed=seed, test_fraction=0.2)
    subjects = {k: {s.subject for s in v} for k, v in sp.items()}
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    assert sorted(s.key for v in sp.values() for s in v) == sorted(s.key for s in ds.samples)
    assert sp["val"] and sp["train"]


def test_stratified_carve_keeps_class_ratios_and_is_deterministic():
    labels = ["angry", "happy", "sad"]
    samples = [Sample(key=f"{lab}{i}", label=lab) for lab, n in zip(labels, (100, 300, 50)) for i in range(n)]
    ds = LabelledSet(samples, labels, "gen", "folder")
    sp = make_splits(ds, val_fraction=0.1, seed=3)
    assert class_counts(sp["val"], labels) == {"angry": 10, "happy": 30, "sad": 5}
    assert class_counts(sp["train"], labels) == {"angry": 90, "happy": 270, "sad": 45}
    again = make_splits(ds, val_fraction=0.1, seed=3)
    other = make_splits(ds, val_fraction=0.1, seed=4)
    assert [s.key for s in again["val"]] == [s.key for s in sp["val"]]
    assert [s.key for s in other["val"]] != [s.key for s in sp["val"]]


def test_own_splits_are_kept_and_val_carved_from_train():
    samples = ([Sample(key=f"t{i}", label=("happy", "sad")[i % 2], split="train") for i in range(40)]
               + [Sample(key=f"p{i}", label=("happy", "sad")[i % 2], split="public_test") for i in range(10)])
    ds = LabelledSet(samples, ["happy", "sad"], "gen", "folder")
    sp = make_splits(ds, val_fraction=0.25)
    assert list(sp) == ["train", "val", "public_test"]
    assert len(sp["train"]) == 30 and len(sp["val"]) == 10 and len(sp["public_test"]) == 10
    assert all(s.split == "train" for s in sp["val"])
    assert report_split(sp) == "public_test"
    synth = make_splits(synthetic_set(n_per_class=20))
    assert report_split(synth) == "test" and all(s.split == "val" for s in synth["val"])


def test_subject_kfold_covers_every_sample_once():
    ds = _subject_set(30, seed=5)
    folds = subject_kfold(ds.samples, k=5, seed=1)
    assert len(folds) == 5
    tested = Counter(s.key for _, test in folds for s in test)
    assert tested == Counter(s.key for s in ds.samples)
    for train, test in folds:
        assert not {s.subject for s in train} & {s.subject for s in test}
        assert len(train) + len(test) == len(ds.samples)
    sizes = [len(t) for _, t in folds]
    assert max(sizes) - min(sizes) <= 0.3 * np.mean(sizes)
    with pytest.raises(DataError, match="at least 50 subjects"):
        subject_kfold(ds.samples, k=50)


def test_kfold_without_subjects_warns_and_stratifies():
    samples = [Sample(key=f"{lab}{i}", label=lab) for lab, n in (("happy", 50), ("sad", 20)) for i in range(n)]
    with pytest.warns(UserWarning, match="no subject ids"):
        folds = subject_kfold(samples, k=10)
    for _, test in folds:
        assert class_counts(test, ["happy", "sad"]) == {"happy": 5, "sad": 2}


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthetic_set_fast_deterministic_and_learnable_but_not_trivial():
    t0 = time.perf_counter()
    ds = synthetic_set(n_per_class=143, size=48, seed=0)          # 1001 images
    assert time.perf_counter() - t0 < 2.0
    again = synthetic_set(n_per_class=143, size=48, seed=0)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(ds.samples[:50], again.samples[:50]))
    counts = Counter((s.label, s.split) for s in ds.samples)
    assert counts[("happy", "train")] == 100 and counts[("happy", "val")] == 21 and counts[("happy", "test")] == 22
    # nearest class mean on normalised pixels: clearly above chance (1/7), far from solved
    x = np.stack([s.pixels for s in ds.samples]).reshape(len(ds.samples), -1).astype(np.float32)
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    y = np.array([ds.labels.index(s.label) for s in ds.samples])
    tr = np.array([s.split == "train" for s in ds.samples])
    cent = np.stack([x[tr & (y == c)].mean(0) for c in range(7)])
    pred = np.argmin(((x[~tr][:, None] - cent[None]) ** 2).sum(-1), 1)
    acc = float((pred == y[~tr]).mean())
    assert 0.2 < acc < 0.8


def test_synthetic_tree_with_splits_and_contempt(tmp_path):
    labels = ["happy", "sad", "contempt"]
    root = write_synthetic_tree(tmp_path / "s", n_per_class=10, size=32, labels=labels, splits=True)
    ds = open_dataset(root)
    assert ds.labels == ["happy", "sad", "contempt"] and set(ds.split_names) == {"train", "val", "test"}
    assert len(ds.samples) == 30
    with pytest.raises(DataError, match="yawn"):
        synthetic_set(labels=["happy", "yawn"])


def test_truncated_jpeg_detected_despite_an_earlier_end_marker_in_exif():
    ok, jpg = cv2.imencode(".jpg", face(5, 64))
    data = jpg.tobytes()
    # an APP1 segment whose payload holds FFD9, as an EXIF thumbnail does, placed before the scan
    payload = b"Exif\x00\x00" + b"\xff\xd8thumb\xff\xd9"
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    whole = data[:2] + app1 + data[2:]
    assert decode_image(whole).shape == (64, 64)
    with pytest.raises(BadImageError, match="truncated JPEG"):
        decode_image(whole[: len(whole) * 2 // 3])
