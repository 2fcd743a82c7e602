"""Kernel distance (KID, Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel

    k(x, y) = (x . y / d + 1)^3        (d = number of features)

estimated on ``num_subsets`` random subsets of ``min(subset_size, N)`` items per side (drawn
without replacement; the two sides may differ in size), reported as the mean and standard
deviation (ddof=0) over subsets. Per subset of m reals x and n fakes y, the U-statistic

    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1))
              - 2 sum_{i,j} k(x_i, y_j) / (m n)

is unbiased, so unlike FID it does not depend on the sample sizes in expectation and can be
slightly negative when the two sets come from the same distribution.
"""
from __future__ import annotations

import numpy as np

from .feature_stats import as_matrix, check_same_width


def compute_kernel_distance(real, fake, num_subsets: int = 100, subset_size: int = 1000,
                            seed: int = 0, real_within: float | None = None) -> dict[str, float]:
    """``{"kernel_distance": mean MMD^2_u, "kernel_distance_std": std over subsets}``.
    ``real_within``: ``within(real)`` computed once, used when each subset holds every real item."""
    real, fake = as_matrix(real, "real features", min_rows=2), as_matrix(fake, "fake features", min_rows=2)
    check_same_width(real, fake, "real features", "fake features")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"kernel distance: need num_subsets >= 1 and subset_size >= 2, "
                         f"got {num_subsets} and {subset_size}")
    m, n = min(subset_size, len(real)), min(subset_size, len(fake))
    rng = np.random.default_rng(seed)
    known = real_within if m == len(real) else None  # a permutation of all reals: the same mean
    estimates = [
        _mmd2_unbiased(real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), n, replace=False)],
                       known)
        for _ in range(num_subsets)
    ]
    return {"kernel_distance": float(np.mean(estimates)), "kernel_distance_std": float(np.std(estimates))}


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, within_x: float | None = None) -> float:
    return (within(x) if within_x is None else within_x) + within(y) - 2.0 * _cubic_kernel(x, y).mean()


def within(x) -> float:
    """Mean kernel value over pairs of distinct items of ``x``."""
    x = as_matrix(x, "features", min_rows=2)
    k_xx = _cubic_kernel(x, x)
    return (k_xx.sum() - np.trace(k_xx)) / (len(x) * (len(x) - 1))


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3
