"""Kernel distance (KID, Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel

    k(x, y) = (x . y / d + 1)^3        (d = number of features)

estimated on ``num_subsets`` random subsets of ``m = min(subset_size, N_real, N_fake)`` items
per side (drawn without replacement), reported as the mean and standard deviation (ddof=0) over
subsets. Per subset, the U-statistic

    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
              - 2 sum_{i,j} k(x_i, y_j) / m^2

is unbiased, so unlike FID it does not depend on the sample size in expectation and can be
slightly negative when the two sets come from the same distribution.
"""
from __future__ import annotations

import numpy as np

from .feature_stats import as_matrix, check_same_width


def compute_kernel_distance(real, fake, num_subsets: int = 100, subset_size: int = 1000,
                            seed: int = 0) -> dict[str, float]:
    """``{"kernel_distance": mean MMD^2_u, "kernel_distance_std": std over subsets}``."""
    real, fake = as_matrix(real, "real features", min_rows=2), as_matrix(fake, "fake features", min_rows=2)
    check_same_width(real, fake, "real features", "fake features")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"kernel distance: need num_subsets >= 1 and subset_size >= 2, "
                         f"got {num_subsets} and {subset_size}")
    m = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    estimates = [
        _mmd2_unbiased(real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)])
        for _ in range(num_subsets)
    ]
    return {"kernel_distance": float(np.mean(estimates)), "kernel_distance_std": float(np.std(estimates))}


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = len(x)
    k_xx, k_yy, k_xy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return within - 2.0 * k_xy.sum() / (m * m)


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3
