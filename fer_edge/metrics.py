"""Classification metrics (numpy only, so a board without TensorFlow can compute them).

The paper's "recall rate" is the mean per-class recall; classes absent from the ground
truth are left out of that mean (their recall is undefined, reported as None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are the true class, columns the predicted class."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


@dataclass
class Scores:
    labels: list[str]
    n: int
    accuracy: float
    mean_recall: float                     # mean over classes present in the ground truth
    macro_f1: float
    recall: dict[str, float | None]
    precision: dict[str, float | None]
    confusion: list[list[int]]
    agreement: float | None = None         # top-1 agreement with a reference model
    mean_abs_prob_diff: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _safe_div(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def score(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    ref_probs: np.ndarray | None = None,
) -> Scores:
    """Score predicted probabilities (N,K) against integer labels (N,); optionally against a reference."""
    probs = np.asarray(probs, np.float32)
    y_pred = probs.argmax(1) if len(probs) else np.zeros(0, int)
    k = len(labels)
    cm = confusion_matrix(y_true, y_pred, k)
    support, predicted, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    recall = {lab: _safe_div(tp[i], support[i]) for i, lab in enumerate(labels)}
    precision = {lab: (_safe_div(tp[i], predicted[i]) if support[i] else None) for i, lab in enumerate(labels)}
    present = [i for i in range(k) if support[i]]
    f1s = []
    for i in present:
        p, r = precision[labels[i]] or 0.0, recall[labels[i]] or 0.0
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    n = int(cm.sum())
    s = Scores(
        labels=list(labels),
        n=n,
        accuracy=float(tp.sum()) / n if n else 0.0,
        mean_recall=float(np.mean([recall[labels[i]] for i in present])) if present else 0.0,
        macro_f1=float(np.mean(f1s)) if f1s else 0.0,
        recall=recall,
        precision=precision,
        confusion=cm.tolist(),
    )
    if ref_probs is not None:
        ref_probs = np.asarray(ref_probs, np.float32)
        s.agreement = float((ref_probs.argmax(1) == y_pred).mean()) if n else None
        s.mean_abs_prob_diff = float(np.abs(ref_probs - probs).mean()) if n else None
    return s


@dataclass
class GateFailure:
    what: str          # "accuracy" or the class name
    reference: float
    value: float
    drop_pp: float
    limit_pp: float

    def __str__(self) -> str:
        name = "accuracy" if self.what == "accuracy" else f"recall of class '{self.what}'"
        return (f"{name} fell {self.drop_pp:.2f} pp ({self.reference:.2%} -> {self.value:.2%}), "
                f"more than the allowed {self.limit_pp:g} pp")


def gate(reference: Scores, candidate: Scores, max_drop_pp: float | None,
         max_class_drop_pp: float | None) -> list[GateFailure]:
    """What a quantized model lost beyond the allowed drops (empty list = passes)."""
    fails: list[GateFailure] = []
    if max_drop_pp is not None:
        drop = (reference.accuracy - candidate.accuracy) * 100
        if drop > max_drop_pp:
            fails.append(GateFailure("accuracy", reference.accuracy, candidate.accuracy, drop, max_drop_pp))
    if max_class_drop_pp is not None:
        for lab, ref_r in reference.recall.items():
            cand_r = candidate.recall.get(lab)
            if ref_r is None or cand_r is None:
                continue
            drop = (ref_r - cand_r) * 100
            if drop > max_class_drop_pp:
                fails.append(GateFailure(lab, ref_r, cand_r, drop, max_class_drop_pp))
    return fails
