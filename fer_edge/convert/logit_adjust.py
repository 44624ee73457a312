"""Post-hoc logit adjustment: trade a little accuracy on the frequent classes for recall on the rare ones.

A model trained without class weights learns the training prior: on FER2013 it under-calls disgust and fear.
Subtracting tau x log(prior) from the logits (Menon et al., "Long-tail learning via logit adjustment",
2021) moves the decision boundaries towards the rare classes; tau = 1 is the balanced-error optimum under
the model's own calibration, tau = 0 changes nothing. tau is chosen on validation by the mean of accuracy
and mean per-class recall (the paper's two metrics, so neither is given up for the other), and folded
into the output layer's bias: the exported file is unchanged in shape and cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TAUS = tuple(round(0.05 * i, 2) for i in range(0, 31))   # 0 .. 1.5


@dataclass(frozen=True)
class Adjustment:
    tau: float
    val_accuracy: float
    val_mean_recall: float
    base_accuracy: float
    base_mean_recall: float

    def as_dict(self) -> dict:
        return {"tau": self.tau, "val_accuracy": round(self.val_accuracy, 5),
                "val_mean_recall": round(self.val_mean_recall, 5), "base_val_accuracy": round(self.base_accuracy, 5),
                "base_val_mean_recall": round(self.base_mean_recall, 5)}


def adjusted(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    logits = np.log(np.clip(probs, 1e-12, 1.0)) - tau * np.log(np.clip(prior, 1e-12, 1.0))
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def choose_tau(probs: np.ndarray, y: np.ndarray, prior: np.ndarray, labels: list[str],
               taus: tuple[float, ...] = TAUS) -> Adjustment:
    """The tau with the best (accuracy + mean recall) / 2 on validation; ties go to the smaller tau."""
    from fer_edge.metrics import score

    base = score(y, probs, labels)
    best = Adjustment(0.0, base.accuracy, base.mean_recall, base.accuracy, base.mean_recall)
    best_key = (base.accuracy + base.mean_recall) / 2
    for tau in taus[1:]:
        s = score(y, adjusted(probs, prior, tau), labels)
        key = (s.accuracy + s.mean_recall) / 2
        if key > best_key + 1e-9:
            best_key = key
            best = Adjustment(tau, s.accuracy, s.mean_recall, base.accuracy, base.mean_recall)
    return best


def fold_into_head(model, prior: np.ndarray, tau: float, layer: str = "head_logits") -> None:
    """bias -= tau x log(prior) on the softmax Dense layer: the model then outputs the adjusted probabilities."""
    if tau == 0:
        return
    dense = model.get_layer(layer)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, (bias - tau * np.log(np.clip(prior, 1e-12, 1.0))).astype(bias.dtype)])
