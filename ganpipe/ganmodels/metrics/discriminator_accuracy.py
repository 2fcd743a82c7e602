"""Held-out discriminator accuracy: D's outputs on real eval samples (never trained on) and on
fresh fakes. D calls a sample real when its output is >= the loss's decision threshold: logit 0
(sigmoid 0.5) for BCE and hinge, 0.5 for least squares (``losses.GANLoss.threshold``).

The headline ``d_accuracy`` is the balanced accuracy, the mean of the accuracy on reals and on
fakes, so it is 0.5 at equilibrium (D cannot tell them apart) whatever the two sample counts;
near 1 means D separates them easily (poor fakes, or D memorised the training set).
"""
from __future__ import annotations

import numpy as np

from .feature_stats import check_finite


def compute_discriminator_accuracy(real, fake, from_logits: bool = True, threshold: float | None = None
                                    ) -> dict[str, float]:
    """``{"d_accuracy", "d_accuracy_real", "d_accuracy_fake"}`` from D outputs [N] or [N, 1].

    With ``from_logits=False`` the outputs are probabilities and the threshold is 0.5; an explicit
    ``threshold`` (the GAN loss's) wins over both.
    """
    if threshold is None:
        threshold = 0.0 if from_logits else 0.5
    real_correct = _scores(real, "D outputs on real samples") >= threshold
    fake_correct = _scores(fake, "D outputs on fake samples") < threshold
    accuracy_real, accuracy_fake = real_correct.mean(), fake_correct.mean()
    return {
        "d_accuracy": float((accuracy_real + accuracy_fake) / 2),
        "d_accuracy_real": float(accuracy_real),
        "d_accuracy_fake": float(accuracy_fake),
    }


def _scores(x, name: str) -> np.ndarray:
    scores = np.asarray(x, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"{name}: expected a non-empty [N] or [N, 1] array, got shape {scores.shape}")
    check_finite(scores, name)
    return scores
