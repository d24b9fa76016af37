import numpy as np
import pytest

from peftsent.metrics import classification_metrics, expected_calibration_error, softmax


def test_metrics_match_hand_computed_values():
    labels = np.array([0, 0, 1, 1, 1])
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 2.0]])
    m = classification_metrics(labels, logits)
    # predictions 0, 1, 1, 0, 1: tn=1 fp=1 fn=1 tp=2
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["count"] == 5
    assert 0 <= m["roc_auc"] <= 1


def test_roc_auc_is_none_with_one_class():
    assert classification_metrics([1, 1], [[0.0, 1.0], [1.0, 0.0]])["roc_auc"] is None


def test_ece_of_perfectly_calibrated_bins_is_zero():
    probs = np.array([[0.25, 0.75]] * 4)
    labels = np.array([1, 1, 1, 0])  # 75 % right at 75 % confidence
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.0)


def test_ece_of_overconfident_model():
    probs = np.array([[0.0, 1.0]] * 4)
    labels = np.array([1, 1, 0, 0])  # 50 % right at 100 % confidence
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5)


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[1000.0, 0.0], [-3.0, 2.0]]))
    assert np.allclose(p.sum(axis=1), 1.0) and p[0, 0] == pytest.approx(1.0)
