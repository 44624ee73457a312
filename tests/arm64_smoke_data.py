"""Inputs and the verdict of the arm64 smoke test (device/arm64_smoke.sh); host side only.

    python tests/arm64_smoke_data.py make OUTDIR              # OUTDIR/frames/*.png and OUTDIR/face.avi
    python tests/arm64_smoke_data.py compare HOST BOARD frames  # equal boxes and labels, line by line
    python tests/arm64_smoke_data.py compare HOST BOARD video   # the same labels, line by line

The face is scikit-image's public-domain astronaut (tests/test_runtime_support.py). PNG frames decode
to the same bytes everywhere, so there the board must reproduce the host exactly; the video is MJPG,
whose decoder differs by a level or two on aarch64, so there only the labels must agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

N_FRAMES = 4     # PNG frames: enough for a track to start, change and end; each costs ~1 s emulated
N_VIDEO = 12     # video frames


def make(out: Path) -> None:
    import cv2

    from test_runtime_support import face_track, make_face_video

    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for i, (frame, _) in enumerate(face_track(N_FRAMES)):
        cv2.imwrite(str(frames / f"frame_{i:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    make_face_video(out / "face.avi", n=N_VIDEO)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _faces(line: dict, with_boxes: bool) -> list:
    keys = ("track_id", "box", "expression", "raw_expression") if with_boxes else \
        ("track_id", "expression", "raw_expression")
    return [tuple(tuple(f.get(k)) if k == "box" else f.get(k) for k in keys) for f in line.get("faces", [])]


def _events(line: dict) -> list:
    return [(e.get("track_id"), e.get("kind"), e.get("previous"), e.get("current")) for e in line.get("events", [])]


def compare(host: list[dict], board: list[dict], mode: str) -> list[str]:
    """What differs between the host's and the board's JSON lines (empty = they agree).

    frames: per line the same file, frame index, faces (track id, box, smoothed and raw label) and
    events. video: per line the same frame index and the same faces' labels and events.
    """
    if mode not in ("frames", "video"):
        raise ValueError(f"mode {mode!r}: use frames or video")
    problems = []
    if len(host) != len(board):
        problems.append(f"{len(host)} lines on the host, {len(board)} on the board")
    if not any(line.get("faces") for line in host):
        problems.append("the host found no face at all: the comparison would prove nothing")
    for i, (h, b) in enumerate(zip(host, board)):
        where = f"line {i + 1} ({h.get('file') or 'frame ' + str(h.get('frame_index'))})"
        for key in ("frame_index", "file"):
            if h.get(key) != b.get(key):
                problems.append(f"{where}: {key} {h.get(key)!r} on the host, {b.get(key)!r} on the board")
        hf, bf = _faces(h, mode == "frames"), _faces(b, mode == "frames")
        if hf != bf:
            problems.append(f"{where}: faces {hf} on the host, {bf} on the board")
        if _events(h) != _events(b):
            problems.append(f"{where}: events {_events(h)} on the host, {_events(b)} on the board")
    return problems


def max_probability_gap(host: list[dict], board: list[dict]) -> float:
    gap = 0.0
    for h, b in zip(host, board):
        for fh, fb in zip(h.get("faces", []), b.get("faces", [])):
            ph, pb = fh.get("probabilities") or {}, fb.get("probabilities") or {}
            for k in ph:
                if k in pb:
                    gap = max(gap, abs(float(ph[k]) - float(pb[k])))
    return gap


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "make":
        make(Path(argv[1]))
        return 0
    if len(argv) == 4 and argv[0] == "compare":
        host, board = read_lines(Path(argv[1])), read_lines(Path(argv[2]))
        problems = compare(host, board, argv[3])
        faces = sum(len(line.get("faces", [])) for line in host)
        if problems:
            print(f"arm64 smoke: {argv[3]}: host and board DISAGREE:\n  " + "\n  ".join(problems[:20]))
            return 1
        print(f"arm64 smoke: {argv[3]}: {len(host)} lines, {faces} faces: board == host "
              f"({'boxes and labels' if argv[3] == 'frames' else 'labels'}); "
              f"largest probability gap {max_probability_gap(host, board):.4f}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
