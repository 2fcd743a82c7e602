"""Fréchet distance between Gaussians fitted to two feature sets (FID on Inception features,
FCD on the domain classifier's features).

    FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})

Matrix square root: an eigen-decomposition route, not ``scipy.linalg.sqrtm``. Only the trace of
(S_a S_b)^{1/2} is needed, and S_a S_b is similar to the symmetric positive semi-definite
M = S_a^{1/2} S_b S_a^{1/2}, so Tr((S_a S_b)^{1/2}) = sum(sqrt(eigvalsh(M))). Two symmetric
eigen-decompositions in float64 give a real result directly, also for singular covariances
(fewer items than features), with no eps offset and no complex parts to discard.
"""
from __future__ import annotations

import numpy as np

from .feature_stats import FeatureStats, check_finite


def frechet_distance(mean_a, cov_a, mean_b, cov_b, root_a: np.ndarray | None = None) -> float:
    """Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b), as a float >= 0;
    ``root_a``: ``cov_sqrt(cov_a)`` when already computed (one reference, many fake sets)."""
    mean_a, mean_b = _vector(mean_a, "mean_a"), _vector(mean_b, "mean_b")
    cov_a, cov_b = _covariance(cov_a, "cov_a", len(mean_a)), _covariance(cov_b, "cov_b", len(mean_b))
    if len(mean_a) != len(mean_b):
        raise ValueError(f"mean_a has {len(mean_a)} features but mean_b has {len(mean_b)}")
    root_a = cov_sqrt(cov_a) if root_a is None else root_a
    middle = root_a @ cov_b @ root_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))  # a squared distance; only rounding can make it negative


def compute_frechet(real, fake, real_stats: FeatureStats | None = None,
                    real_root: np.ndarray | None = None) -> dict[str, float]:
    """``{"frechet_distance": FD}`` between feature sets: [N, D] arrays or ``FeatureStats``;
    ``real_stats`` (and ``real_root``, ``cov_sqrt`` of its covariance) stand in for ``real`` when
    already computed (one reference, many fake sets)."""
    real, fake = real_stats or _stats(real, "real features"), _stats(fake, "fake features")
    return {"frechet_distance": frechet_distance(real.mean, real.cov, fake.mean, fake.cov, real_root)}


def _stats(x, name: str) -> FeatureStats:
    return x if isinstance(x, FeatureStats) else FeatureStats.from_features(x, name)


def cov_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix; rounding negatives set to 0."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _vector(x, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D mean vector, got shape {array.shape}")
    check_finite(array, name)
    return array


def _covariance(x, name: str, size: int) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.shape != (size, size):
        raise ValueError(f"{name}: expected shape ({size}, {size}), got {array.shape}")
    check_finite(array, name)
    if np.abs(array - array.T).max() > 1e-6 * np.abs(array).max():
        raise ValueError(f"{name}: a covariance matrix must be symmetric")
    return (array + array.T) / 2
