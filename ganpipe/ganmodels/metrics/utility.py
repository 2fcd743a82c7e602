"""Classification Accuracy Score (CAS, Ravuri & Vinyals, NeurIPS 2019): does generated data train
a useful model? A classifier of the Classifier step's architecture and recipe is trained on
generated labelled samples (balanced classes) and tested on the real eval split; its accuracy
is reported beside that of the same recipe trained on the real train split. Training happens in
the Evaluate component (it needs Keras); this module scores the predictions.

``cas``: accuracy on the real eval examples, with its binomial standard error sqrt(a(1-a)/n)
(the noise of the test set; the training seed's noise is not in it). ``cas_worst_class``: the
lowest per-class accuracy (a class the generator cannot draw scores ~0 while ``cas`` only drops by
1/C). ``per_class_accuracy`` gives the whole row for the report.
"""
from __future__ import annotations

import numpy as np

from .classifier_score import as_probabilities


def compute_classification_accuracy(labels, probabilities) -> dict[str, float]:
    """``{"cas", "cas_std", "cas_worst_class"}`` of ``probabilities`` [N, C] (a classifier trained
    on fakes, applied to real eval examples) against their true integer ``labels`` [N] (or one-hot
    rows [N, C])."""
    labels, correct = _correct(labels, probabilities)
    accuracy = float(correct.mean())
    present = np.unique(labels)
    return {"cas": accuracy, "cas_std": float(np.sqrt(accuracy * (1 - accuracy) / len(correct))),
            "cas_worst_class": float(min(correct[labels == label].mean() for label in present))}


def per_class_accuracy(labels, probabilities) -> dict[int, float]:
    """Accuracy on the examples of each class present in ``labels``: {class: accuracy}."""
    labels, correct = _correct(labels, probabilities)
    return {int(label): float(correct[labels == label].mean()) for label in np.unique(labels)}


def _correct(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    probabilities = as_probabilities(probabilities, "classifier probabilities")
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot rows or probabilities: the class by argmax, as mode_coverage reads them
        labels = labels.argmax(axis=1)
    if labels.shape != (len(probabilities),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected {len(probabilities)} integer labels, got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"labels: must be in [0, {probabilities.shape[1]}), got {labels.min()}..{labels.max()}")
    return labels, np.argmax(probabilities, axis=1) == labels
