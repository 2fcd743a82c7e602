"""What every metric shares: input checks, streaming mean/covariance, chunked k-NN distances.

Everything is float64 numpy: metrics are compared across runs and against closed forms, so they
must not depend on float32 rounding or on the device.
"""
from __future__ import annotations

import numpy as np

# Largest distance block held in memory at once (64 MiB of float64).
_CHUNK_BYTES = 64 * 2**20


def as_matrix(x, name: str, min_rows: int = 1) -> np.ndarray:
    """``x`` as a finite float64 [num_items, num_features] array, or a ValueError naming ``name``."""
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected numbers, got {type(x).__name__} ({err})") from None
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [num_items, num_features], got shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name}: has no features (shape {array.shape})")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} rows, got {array.shape[0]}")
    check_finite(array, name)
    return array


def check_finite(array: np.ndarray, name: str) -> None:
    """Raises a ValueError if ``array`` holds NaN or inf (a diverged generator, usually)."""
    bad = ~np.isfinite(array)
    if bad.any():
        first = np.unravel_index(np.argmax(bad), array.shape)
        raise ValueError(f"{name}: {int(bad.sum())} non-finite values (NaN/inf), "
                         f"first at index {tuple(map(int, first))}")


def check_same_width(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has {a.shape[1]} features per item but {name_b} has {b.shape[1]}")


class FeatureStats:
    """Running mean and covariance of feature vectors, fed batch by batch, in float64.

    Batches are merged with Chan et al.'s pairwise update of centred sums, which avoids the
    cancellation of the naive sum-of-squares formula when features have a large mean.
    """

    def __init__(self, name: str = "features"):
        self.name = name
        self.num_items = 0
        self._mean: np.ndarray | None = None
        self._scatter: np.ndarray | None = None  # sum of outer products of centred vectors

    @classmethod
    def from_features(cls, features, name: str = "features") -> "FeatureStats":
        return cls(name).append(as_matrix(features, name))

    def append(self, batch) -> "FeatureStats":
        x = as_matrix(batch, f"{self.name} batch", min_rows=0)
        if self._mean is None:
            self._mean = np.zeros(x.shape[1])
            self._scatter = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self._mean.shape[0]:
            raise ValueError(f"{self.name} batch has {x.shape[1]} features per item, "
                             f"earlier batches had {self._mean.shape[0]}")
        if len(x) == 0:
            return self
        batch_mean = x.mean(axis=0)
        centred = x - batch_mean
        total = self.num_items + len(x)
        delta = batch_mean - self._mean
        self._scatter += centred.T @ centred + np.outer(delta, delta) * (self.num_items * len(x) / total)
        self._mean += delta * (len(x) / total)
        self.num_items = total
        return self

    @property
    def mean(self) -> np.ndarray:
        self._require(1)
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased sample covariance (divides by N - 1, like ``np.cov``)."""
        self._require(2)
        return self._scatter / (self.num_items - 1)

    def _require(self, count: int) -> None:
        if self.num_items < count:
            raise ValueError(f"{self.name}: needs at least {count} items, got {self.num_items}")


def distance_chunks(a: np.ndarray, b: np.ndarray):
    """Yields ``(start, block)`` with ``block[i, j] = |a[start + i] - b[j]|`` (Euclidean).

    A few rows of ``a`` at a time, so N x M distances never sit in memory at once.
    """
    rows = max(1, _CHUNK_BYTES // (8 * max(1, len(b))))
    b_squared = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(a), rows):
        block = a[start:start + rows]
        squared = np.einsum("ij,ij->i", block, block)[:, None] + b_squared[None, :] - 2.0 * (block @ b.T)
        np.maximum(squared, 0.0, out=squared)  # rounding can push a zero distance slightly negative
        yield start, np.sqrt(squared, out=squared)


def kth_neighbour_distances(x: np.ndarray, k: int, name: str) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row (the k-NN ball radius).

    The point itself sits at distance 0 in column 0 of the sorted row, so the k-th neighbour
    is at sorted position k.
    """
    if not 1 <= k < len(x):
        raise ValueError(f"{name}: k={k} needs 1 <= k < number of items ({len(x)})")
    radii = np.empty(len(x))
    for start, block in distance_chunks(x, x):
        rows = np.arange(len(block))
        block[rows, start + rows] = 0.0  # exact self-distance, free of rounding
        radii[start:start + len(block)] = np.partition(block, k, axis=1)[:, k]
    return radii


def known_radii(real: np.ndarray, k: int, radii=None) -> np.ndarray:
    """``radii`` (the real set's k-NN radii computed once for many fake sets), checked to fit
    ``real``, or computed now."""
    if radii is None:
        return kth_neighbour_distances(real, k, "real features")
    radii = np.asarray(radii, dtype=np.float64)
    if radii.shape != (len(real),):
        raise ValueError(f"real_radii: expected one radius per real item ({len(real)}), got shape {radii.shape}")
    return radii
