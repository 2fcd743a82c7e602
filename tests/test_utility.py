"""Classification Accuracy Score scoring (ganpipe.ganmodels.metrics.utility)."""
import numpy as np
import pytest

from ganpipe.ganmodels import metrics


def one_hot(predictions, num_classes=3):
    return np.eye(num_classes)[predictions]


def test_accuracy_worst_class_and_per_class():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, 1, 2, 2, 2, 0, 0])
    result = metrics.compute(["utility"], labels, one_hot(predicted))
    assert result["cas"] == pytest.approx(0.7)
    assert result["cas_worst_class"] == pytest.approx(0.5)
    assert metrics.per_class_accuracy(labels, one_hot(predicted)) == {0: 0.5, 1: 1.0, 2: 0.6}
    assert metrics.compute_classification_accuracy(one_hot(labels), one_hot(predicted)) == result  # one-hot labels


def test_std_matches_the_spread_over_fresh_test_sets():
    rng = np.random.default_rng(0)
    accuracies, stds = [], []
    for _ in range(300):
        labels = rng.integers(0, 3, size=200)
        right = rng.random(200) < 0.8
        predicted = np.where(right, labels, (labels + 1) % 3)
        result = metrics.compute_classification_accuracy(labels, one_hot(predicted))
        accuracies.append(result["cas"])
        stds.append(result["cas_std"])
    assert np.mean(stds) / np.std(accuracies, ddof=1) == pytest.approx(1.0, abs=0.15)


def test_labels_are_checked():
    with pytest.raises(ValueError, match="must be in"):
        metrics.compute_classification_accuracy(np.array([0, 3]), one_hot(np.array([0, 1])))
    with pytest.raises(ValueError, match="integer labels"):
        metrics.compute_classification_accuracy(np.array([0.0, 1.0]), one_hot(np.array([0, 1])))
