"""How noisy a metric estimate is: disjoint folds of generated samples, half-samples of a fixed set.

Fakes are cheap, so a model is measured on K disjoint folds of n fakes each against the same
real reference: the reported value is the mean over folds and its standard error
std(ddof=1) / sqrt(K) is the sampling noise of that mean, given the reference. Two models
measured on the same folds (same latent seeds, same reals) are compared fold by fold, which
cancels the noise they share.

A fixed real set (the eval split, for the real-vs-real baseline) cannot be drawn again; its
noise is estimated by the delete-half jackknife (Shao & Wu 1989): the spread of the estimate over
random halves of the set equals, to first order, the sampling spread of the estimate on the
whole set (half-sampling without replacement from n items has variance sigma^2 / n, as an
n-sample mean has).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def fold_summary(per_fold: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """``{key: (mean over folds, standard error of the mean)}`` for every key of the first fold.

    A key that is not finite in some fold has a non-finite mean (NaN or inf), never a silently
    smaller set of folds.
    """
    if len(per_fold) < 2:
        raise ValueError(f"a standard error needs at least 2 folds, got {len(per_fold)}")
    summary = {}
    for key in per_fold[0]:
        values = np.array([fold[key] for fold in per_fold], dtype=np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf in the spread: NaN, as documented
            summary[key] = (float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))))
    return summary


def paired_difference(first: Sequence[Mapping[str, float]], second: Sequence[Mapping[str, float]],
                      key: str) -> tuple[float, float]:
    """Mean and standard error of ``first[k][key] - second[k][key]`` over folds measured alike."""
    if len(first) != len(second):
        raise ValueError(f"paired folds must be as many on both sides, got {len(first)} and {len(second)}")
    return fold_summary([{key: a[key] - b[key]} for a, b in zip(first, second)])[key]


def half_sample_std(estimates: Sequence[float]) -> float:
    """The sampling std of an estimate on a whole set from its ``estimates`` on random halves."""
    values = np.asarray(estimates, dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"a half-sample std needs at least 2 halves, got {len(values)}")
    return float(values.std())
