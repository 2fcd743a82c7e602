"""Metrics for vector (tabular) data, on the raw feature columns.

- Two-sample Kolmogorov-Smirnov statistic per feature: sup_x |F_real(x) - F_fake(x)| of the
  empirical CDFs, in [0, 1] (0 = same marginal distribution); summarised by its mean and max.
- Correlation distance: Frobenius norm of corr(real) - corr(fake), the dependence between
  features the marginals miss. A constant column has no defined correlation; it is taken as
  uncorrelated with every other column (correlation 0, diagonal 1).
"""
from __future__ import annotations

import numpy as np

from .feature_stats import as_matrix, check_same_width


def compute_tabular(real, fake) -> dict[str, float]:
    """``{"ks_mean", "ks_max", "correlation_distance"}`` between [N, D] and [M, D] tables."""
    real, fake = _pair(real, fake)
    ks = ks_statistics(real, fake)
    return {"ks_mean": float(ks.mean()), "ks_max": float(ks.max()),
            "correlation_distance": correlation_distance(real, fake)}


def ks_statistics(real, fake) -> np.ndarray:
    """Two-sample KS statistic of each feature column, float64 [D]."""
    real, fake = _pair(real, fake)
    statistics = np.empty(real.shape[1])
    for column in range(real.shape[1]):
        a, b = np.sort(real[:, column]), np.sort(fake[:, column])
        # The CDFs are step functions jumping at sample values: the sup is reached at one of them.
        points = np.concatenate([a, b])
        cdf_a = np.searchsorted(a, points, side="right") / len(a)
        cdf_b = np.searchsorted(b, points, side="right") / len(b)
        statistics[column] = np.abs(cdf_a - cdf_b).max()
    return statistics


def correlation_distance(real, fake) -> float:
    """Frobenius norm of the difference of the two feature correlation matrices."""
    real, fake = _pair(real, fake, min_rows=2)
    return float(np.linalg.norm(_correlation(real) - _correlation(fake)))


def _correlation(x: np.ndarray) -> np.ndarray:
    cov = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    std = np.sqrt(np.diag(cov))
    scale = np.where(std > 0, std, np.inf)  # constant column -> zero correlations
    corr = cov / scale[:, None] / scale[None, :]
    np.fill_diagonal(corr, 1.0)
    return corr


def _pair(real, fake, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    real, fake = as_matrix(real, "real vectors", min_rows), as_matrix(fake, "fake vectors", min_rows)
    check_same_width(real, fake, "real vectors", "fake vectors")
    return real, fake
