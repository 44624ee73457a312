"""Metrics against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from fer_edge.metrics import confusion_matrix, gate, score


def onehot(idx, k):
    return np.eye(k, dtype=np.float32)[idx]


def test_three_class_confusion_and_scores():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(y, pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    s = score(y, onehot(pred, 3), ["a", "b", "c"])
    assert s.accuracy == pytest.approx(4 / 6)
    assert s.recall == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    assert s.precision == pytest.approx({"a": 1.0, "b": 1 / 2, "c": 1 / 2})
    assert s.mean_recall == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert s.macro_f1 == pytest.approx(np.mean(f1))


def test_recall_with_an_empty_class_is_left_out_of_the_mean():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])   # class 2 never occurs in the truth but is predicted once
    s = score(y, onehot(pred, 3), ["a", "b", "c"])
    assert s.recall["c"] is None and s.precision["c"] is None
    assert s.mean_recall == pytest.approx((0.5 + 1.0) / 2)


def test_agreement_and_probability_difference():
    y = np.array([0, 1, 2, 0])
    ref = onehot([0, 1, 2, 1], 3)
    cand = onehot([0, 1, 1, 1], 3)
    s = score(y, cand, ["a", "b", "c"], ref_probs=ref)
    assert s.agreement == pytest.approx(3 / 4)
    assert s.mean_abs_prob_diff == pytest.approx(2 / 12)


def test_gate_names_the_class_that_fell():
    y = np.array([0] * 10 + [1] * 10)
    ref = score(y, onehot(y, 2), ["happy", "sad"])
    worse = y.copy()
    worse[10:13] = 0                      # three 'sad' faces now read as 'happy'
    cand = score(y, onehot(worse, 2), ["happy", "sad"])
    fails = gate(ref, cand, max_drop_pp=20, max_class_drop_pp=10)
    assert [f.what for f in fails] == ["sad"] and fails[0].drop_pp == pytest.approx(30)
    assert "recall of class 'sad' fell 30.00 pp" in str(fails[0])
    assert gate(ref, cand, max_drop_pp=20, max_class_drop_pp=40) == []
    assert [f.what for f in gate(ref, cand, max_drop_pp=10, max_class_drop_pp=None)] == ["accuracy"]
