"""Bad input on all three sides: the generated corpus (tests/badinput.py) through the data readers,
`fer-edge convert`, `fer-edge bench` and the device's image-folder source; bad data layouts.

Every case must be skipped and named with its reason, or handled (decoded and used); the commands
finish and their reports name the bad files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from badinput import Case, _face, bad_tree, encode, write_bad_images, write_symlink_loops
from fer_edge.cli import main
from fer_edge.errors import DataError

LABELS = ["happy", "sad", "surprise"]
N_GOOD = 12                                   # good synthetic faces per class


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    root, cases = bad_tree(tmp_path_factory.mktemp("bad") / "data", n_per_class=N_GOOD, labels=LABELS)
    return root, cases


def _key(root: Path, folder: str, case: Case) -> str:
    return str(root / folder / case.name)


def _expected(root: Path, cases: list[Case]) -> tuple[dict[str, Case], dict[str, Case]]:
    """(files that must be skipped, files that must be used), keyed as the readers key them."""
    skip, use = {}, {}
    for c in cases:
        folder = LABELS[1] if "symlink" in c.what else LABELS[0]
        (skip if c.skip else use)[_key(root, folder, c)] = c
    return skip, use


def test_corpus_cases_are_each_skipped_with_their_reason_or_used(corpus):
    """The data side: every bad file is named with the right reason; the odd-but-valid ones load;
    the symlinked folder loop is walked once (no hang, no duplicates)."""
    from fer_edge.data import load_arrays, open_dataset
    from fer_edge.preprocess import PreprocessSpec

    root, cases = corpus
    skip, use = _expected(root, cases)
    ds = open_dataset(root)
    assert ds.labels == LABELS
    keys = [s.key for s in ds.samples]
    assert len(keys) == len(set(keys)), "a file was listed twice (the loop was followed)"
    assert not any("loop_dir" in k for k in keys)
    x, y, skipped = load_arrays(ds.samples, PreprocessSpec(input_size=32, color="grey"), ds.labels)
    got = {s.key: s.reason for s in skipped}
    assert set(got) == set(skip), f"skipped {sorted(got)}, expected {sorted(skip)}"
    for key, case in skip.items():
        assert case.words in got[key].lower(), f"{case.what}: reason {got[key]!r} lacks {case.words!r}"
    assert len(x) == len(y) == N_GOOD * len(LABELS) + len(use)
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 1)


def test_huge_images_are_refused_from_the_header_without_decoding(tmp_path):
    """A 10000x10000 image costs no memory: the size is read from its header, before any decoding."""
    import tracemalloc

    from fer_edge.images import BadImageError, decode_image

    cases = {c.name: c for c in write_bad_images(tmp_path)}
    for name in ("huge.png", "huge_header.jpg"):
        tracemalloc.start()
        with pytest.raises(BadImageError, match="too large"):
            decode_image(tmp_path / name)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 5e6, f"{name}: {peak / 1e6:.0f} MB allocated for a file that is refused"
    assert (tmp_path / "huge.png").stat().st_size < 500_000 and cases["huge.png"].skip


# ------------------------------------------------------------------------------------------------
# convert and bench on the corpus (the real CLI)


@pytest.fixture(scope="module")
def converted(corpus, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("conv") / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "fer_edge.cli", "convert", "--data", str(root), "--out", str(out),
                        "--model", "face_vgg_tiny", "--epochs", "1", "--fine-tune-epochs", "0", "--input-size", "32", "--batch-size", "16",
                        "--fp32", "--int8", "--calib-images", "12", "--no-test"],
                       capture_output=True, text=True, env=env, timeout=300, errors="surrogateescape")
    return out, r


@pytest.mark.slow
def test_convert_finishes_on_the_corpus_and_names_every_bad_file(corpus, converted):
    root, cases = corpus
    out, r = converted
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    skip, use = _expected(root, cases)
    text = r.stdout
    for key, case in skip.items():
        shown = Path(key).name                  # a non-UTF-8 name comes out as its own bytes
        assert shown in text, f"{case.what} ({shown!r}) not named in convert's output"
    record = json.loads((out / "convert.json").read_text())
    named = {f["key"]: f["reason"] for f in record["data"]["skipped_files"]}
    assert set(named) == set(skip)
    assert all(skip[k].words in v.lower() for k, v in named.items())
    used = sum(sum(c) for c in record["data"]["counts"].values())
    assert used == N_GOOD * len(LABELS) + len(use)
    assert sorted(p.name for p in out.glob("model_*.tflite")) == ["model_fp32.tflite", "model_int8.tflite"]


@pytest.mark.slow
def test_bench_finishes_on_the_corpus_and_names_every_bad_file(corpus, converted, tmp_path):
    root, cases = corpus
    out, r = converted
    assert r.returncode == 0
    skip, use = _expected(root, cases)
    bench_out = tmp_path / "bench"
    code = main(["bench", str(out / "model_fp32.tflite"), str(out / "model_int8.tflite"), "--data", str(root),
                 "--out", str(bench_out), "--no-speed", "--no-plots"])
    assert code == 0
    data = json.loads((bench_out / "bench.json").read_text())["data"]
    named = {s["key"]: s["reason"] for s in data["skipped"]}
    assert set(named) == set(skip)
    assert data["n"] == N_GOOD * len(LABELS) + len(use)


# ------------------------------------------------------------------------------------------------
# the device: an image folder holding the corpus, through the real daemon


def test_daemon_on_an_image_folder_with_the_corpus(tmp_path, tiny_tflite):
    """Every bad file is skipped and named in the log (truncated, text, empty, 1x1, header bombs,
    self-looping symlink); 16-bit, CMYK, RGBA and a non-UTF-8 name are classified; the results are
    valid JSON lines naming each file. (cv2.imread on a non-UTF-8 name crashed the process with
    SIGSEGV before the source read bytes through the data side's decoder.)"""
    folder = tmp_path / "imgs"
    cases = write_bad_images(folder) + write_symlink_loops(folder)
    for i in range(2):
        (folder / f"good_{i}.png").write_bytes(encode(".png", _face(64, i, colour=True)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-m", "fer_edge.cli", "run", "--model", str(tiny_tflite["int8"]),
                        "--source", str(folder), "--output", f"jsonl:{out}", "--threads", "1"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stderr[-3000:]}"
    results = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    printable = {c.name: c.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                 for c in cases}
    used = sorted([printable[c.name] for c in cases if not c.skip] + ["good_0.png", "good_1.png"])
    assert sorted(res["file"] for res in results) == used
    assert "caf\\xe9_\\xff.png" in used                           # the raw bytes stay visible
    for c in cases:
        if c.skip:
            assert f"skipped {printable[c.name]}: " in r.stderr, f"{c.what} not named in the log"
    assert "too large" in r.stderr and "truncated JPEG" in r.stderr


def test_video_with_a_non_utf8_name_is_a_clear_error_not_a_crash(tmp_path, tiny_tflite):
    import cv2

    odd = os.path.join(os.fsencode(tmp_path), b"vid\xe9o.avi")
    w = cv2.VideoWriter(str(tmp_path / "plain.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    os.rename(tmp_path / "plain.avi", odd)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-m", "fer_edge.cli", "run", "--model", str(tiny_tflite["int8"]),
                        "--source", os.fsdecode(odd), "--output", "jsonl:-", "--threads", "1"],
                       capture_output=True, text=True, env=env, timeout=60, errors="replace")
    assert r.returncode == DataError.exit_code, f"rc {r.returncode}: {r.stderr[-2000:]}"
    assert "not valid UTF-8" in r.stderr and "rename" in r.stderr


# ------------------------------------------------------------------------------------------------
# data layouts


def test_empty_class_folder_is_ignored_and_one_class_is_a_clear_error(tmp_path):
    from fer_edge.data import open_dataset
    from fer_edge.data.synthetic import write_synthetic_tree

    root = write_synthetic_tree(tmp_path / "d", n_per_class=3, labels=["happy", "sad"])
    (root / "fear").mkdir()                                         # a class folder with no images
    (root / "fear" / "README.txt").write_text("to do")
    ds = open_dataset(root)
    assert ds.labels == ["happy", "sad"]                            # no phantom class with 0 images

    one = tmp_path / "one"
    (one / "happy").mkdir(parents=True)
    for f in (root / "happy").iterdir():
        (one / "happy" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(DataError, match="single class 'happy'.*at least two"):
        open_dataset(one)
    # the convert CLI says the same, as one line and exit code 3
    assert main(["convert", "--data", str(one), "--out", str(tmp_path / "o"), "--epochs", "1"]) == 3


def test_bench_on_a_label_the_model_does_not_know_names_the_class(tmp_path, tiny_tflite):
    """The tiny model knows angry/happy/sad; a 'surprise' folder in the data is named, with the fix."""
    from fer_edge.data.synthetic import write_synthetic_tree

    root = write_synthetic_tree(tmp_path / "d", n_per_class=3, size=32, labels=["happy", "surprise"])
    code = main(["bench", str(tiny_tflite["int8"]), "--data", str(root), "--out", str(tmp_path / "b"),
                 "--no-speed", "--no-plots"])
    assert code != 0
    row = json.loads((tmp_path / "b" / "bench.json").read_text())["variants"][0]
    assert "'surprise' (3 images) is not among the labels" in row["error"]


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_malformed_rows_are_reported_skips_and_wrong_columns_a_clear_error(tmp_path):
    from fer_edge.data import open_dataset

    pix = " ".join(["128"] * 2304)
    rows = [f"3,{pix},Training", f"4,{pix},Training", f"3,{pix},PublicTest",
            "3,1 2 3,Training",                                   # too few pixels
            f"x,{pix},Training",                                   # emotion not a number
            f"9,{pix},Training",                                   # emotion code out of range
            f"3,{pix.replace('128', 'abc', 1)},Training",          # a pixel that is not a number
            "3",                                                  # too few fields
            f"3,{pix},Holdout"]                                    # unknown usage
    ds = open_dataset(_csv(tmp_path / "f.csv", "emotion,pixels,Usage", rows))
    reasons = {s.key: s.reason for s in ds.skipped}
    assert len(ds.samples) == 3 and len(reasons) == 6
    assert reasons["f.csv:row 4"] == "3 pixel values, expected 2304 (48x48)"
    assert "not an integer" in reasons["f.csv:row 5"]
    assert "outside 0..6" in reasons["f.csv:row 6"]
    assert "'abc' is not an integer" in reasons["f.csv:row 7"]
    assert "1 fields, expected 3" in reasons["f.csv:row 8"]
    assert "Holdout" in reasons["f.csv:row 9"]

    with pytest.raises(DataError) as err:
        open_dataset(_csv(tmp_path / "g.csv", "label,image,Usage", rows[:2]))
    msg = str(err.value)
    assert "missing column(s) emotion, pixels" in msg and "found columns ['label', 'image', 'usage']" in msg
    with pytest.raises(DataError, match="empty file"):
        open_dataset(_csv(tmp_path / "h.csv", "", []).with_suffix(".csv"))
