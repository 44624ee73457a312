"""Expression labels: one canonical spelling per class, aliases from every data set we read."""

from __future__ import annotations
from typing import Iterable

# Canonical order: FER2013's 7 classes in the order most papers tabulate them, then
# CK+'s contempt (the paper's 8-class set). A data set's own label list is this order
# restricted to the classes it has, followed by any user-defined classes sorted by name.
CANONICAL = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")

ALIASES = {
    "anger": "angry",
    "angry": "angry",
    "an": "angry",
    "ang": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "di": "disgust",
    "dis": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "fe": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "ha": "happy",
    "hap": "happy",
    "sad": "sad",
    "sadness": "sad",
    "sa": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "su": "surprise",
    "sur": "surprise",
    "neutral": "neutral",
    "ne": "neutral",
    "neu": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
    "co": "contempt",
}

# fer2013.csv's integer codes (0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral).
FER2013_CODES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def canonical_label(name: str) -> str:
    """Map an alias ('Anger', 'sadness', 'HA') to its canonical name; unknown names pass through
    lower-cased, so a user's own classes ('yawn') still work."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def ordered_labels(present: Iterable[str]) -> list[str]:
    """The label order recorded in a model: canonical order first, then extra classes by name."""
    present = {canonical_label(p) for p in present}
    known = [c for c in CANONICAL if c in present]
    extra = sorted(present - set(CANONICAL))
    return known + extra
