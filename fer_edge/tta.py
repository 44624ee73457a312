"""Test-time augmentation: a model's probabilities averaged over views of the same crop.

`flip` averages the crop and its mirror image. Faces are nearly symmetric and every fer-edge model
trains with random horizontal flips, so the mirror is an equally valid view, and averaging the two
cancels part of the model's left/right noise. It doubles the classifier's cost per face (one bench
run here: 0.34 -> 0.68 ms for the default int8 model, next to a few ms of face detection). Measured on
FER2013 PublicTest with benchmarks/models/fer2013_best_int8.tflite: +1.0 pp accuracy, +0.6 pp mean recall
(benchmarks/README.md).

Works on one crop (S,S,C) or a batch (N,S,S,C): the width axis is the second to last in both.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fer_edge.registry import Registry

TTA_MODES: Registry[Callable[[np.ndarray], tuple[np.ndarray, ...]]] = Registry("test-time augmentation")


@TTA_MODES.register("none")
def _none(x: np.ndarray) -> tuple[np.ndarray, ...]:
    return (x,)


@TTA_MODES.register("flip")
def _flip(x: np.ndarray) -> tuple[np.ndarray, ...]:
    return x, np.ascontiguousarray(x[..., ::-1, :])


def check_tta(mode: str) -> str:
    """The canonical name of a mode; an unknown one fails with the valid names and the closest."""
    TTA_MODES.get(mode)
    return mode.lower()


def tta_name(name: str, mode: str) -> str:
    """How a row scored with a mode is named everywhere: 'int8' for none, 'int8+flip' for flip."""
    return name if mode == "none" else f"{name}+{mode}"


def with_tta(predict: Callable[[np.ndarray], np.ndarray], mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """`predict` averaged over the mode's views ('none' returns `predict` itself: no cost)."""
    views = TTA_MODES.get(mode)
    if views is _none:
        return predict

    def averaged(x: np.ndarray) -> np.ndarray:
        outs = [np.asarray(predict(v), np.float32) for v in views(np.asarray(x))]
        total = outs[0]
        for o in outs[1:]:   # the order sum() added them in: the same float32 result
            total = total + o
        return (total / len(outs)).astype(np.float32)

    return averaged
