"""Inception / classifier score (Salimans et al. 2016) from class probabilities p(y|x):

    score = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = mean over the split of p(y|x)

computed on ``num_splits`` splits of the samples in a shuffled order (fixed ``seed``), reported
as mean and standard deviation (ddof=0) over splits. Shuffled, because consecutive splits of
class-ordered samples (e.g. a conditional GAN's class-by-class grid) would each hold one class and
score 1. It ranges from 1 (every sample gets the same prediction, e.g.
a collapsed generator) to the number of classes (confident predictions spread evenly).
A one-sample metric: it reads only the generated samples' probabilities.
"""
from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from .feature_stats import as_matrix


def compute_classifier_score(fake, num_splits: int = 10, seed: int = 0) -> dict[str, float]:
    """``{"classifier_score": mean over splits, "classifier_score_std": std over splits}``."""
    probs = as_probabilities(fake, "fake probabilities")
    if not 1 <= num_splits <= len(probs):
        raise ValueError(f"classifier score: num_splits={num_splits} must be between 1 and the number of "
                         f"samples ({len(probs)})")
    shuffled = probs[np.random.default_rng(seed).permutation(len(probs))]
    scores = [np.exp(_mean_kl_to_marginal(split)) for split in np.array_split(shuffled, num_splits)]
    return {"classifier_score": float(np.mean(scores)), "classifier_score_std": float(np.std(scores))}


def as_probabilities(x, name: str) -> np.ndarray:
    """Rows of class probabilities as float64, checked (>= 0, summing to 1) and renormalised.

    The sum tolerance admits float32 softmax outputs; renormalising removes their rounding.
    """
    probs = as_matrix(x, name)
    if probs.min() < 0:
        raise ValueError(f"{name}: probabilities must be >= 0, found {probs.min()}")
    sums = probs.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > 1e-3:
        raise ValueError(f"{name}: rows must sum to 1 (softmax outputs, not logits); row {worst} sums to {sums[worst]}")
    return probs / sums[:, None]


def _mean_kl_to_marginal(probs: np.ndarray) -> float:
    marginal = probs.mean(axis=0, keepdims=True)
    # xlogy(0, .) = 0 gives 0 log 0 = 0; where p > 0 the marginal is > 0 too.
    return float((xlogy(probs, probs) - xlogy(probs, marginal)).sum(axis=1).mean())
