"""Data copying: are fakes closer to the training examples than unseen real examples are?

Each fake and each held-out real example (the eval split: real data the model never saw, so the
no-copying reference) gets its feature-space distance to the nearest train example
(``neighbours.nearest_neighbours``). Two statistics compare the two sets of distances:

``copying_share``: the share of fakes closer to a train example than all but ``quantile`` (5%) of
held-out examples are, i.e. below the held-out distances' ``quantile``. About ``quantile`` for a
generator that does not copy; a generator that returns training examples with small noise scores
near 1. It does not grow with the sample count, so ``evaluate.max_copying`` gates on it.

``copying_ct``: C_T of Meehan, Chaudhuri & Dasgupta (AISTATS 2020). The train set is cut into
``num_cells`` k-means cells; in each cell the Mann-Whitney statistic of fake vs held-out distances,
    Z_U = (U - m n / 2) / sqrt(m n (m + n + 1) / 12),   U = #{(fake, held-out) pairs: fake farther}
(ties count 1/2), is averaged over the cells weighted by their share of held-out examples. Cells
with fewer than ``min_fakes_per_cell`` fakes or no held-out example are left out (the paper's
threshold tau). C_T << 0: fakes sit closer to the training data than new data does (copying);
C_T >> 0: farther (underfitting); about 0 otherwise. A z-score: it grows with the sample sizes.

Both carry a bootstrap standard deviation (fakes and held-out examples resampled with replacement,
train fixed).
"""
from __future__ import annotations

import numpy as np

from .feature_stats import as_matrix
from .neighbours import nearest_neighbours

KMEANS_ITERATIONS = 20


def compute_copying(real, fake, held_out, quantile: float = 0.05, num_cells: int = 10, min_fakes_per_cell: int = 20,
                    num_bootstrap: int = 200, seed: int = 0) -> dict[str, float]:
    """``{"copying_share", "copying_share_std", "copying_ct", "copying_ct_std"}`` of the ``fake``
    features against the ``real`` (train) features, with ``held_out`` (eval) as the reference."""
    real = as_matrix(real, "train features", min_rows=2)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"copying: quantile must be in (0, 1), got {quantile}")
    if num_cells < 1 or num_bootstrap < 2:
        raise ValueError(f"copying: need num_cells >= 1 and num_bootstrap >= 2, got {num_cells} and {num_bootstrap}")
    rng = np.random.default_rng(seed)
    centres = kmeans(real, min(num_cells, len(real)), rng)
    fake_distance, fake_cell = _distances_and_cells(real, centres, fake, "fake features")
    held_distance, held_cell = _distances_and_cells(real, centres, held_out, "held-out features")
    statistics = lambda f, h: (copying_share(fake_distance[f], held_distance[h], quantile),  # noqa: E731
                               copying_ct(fake_distance[f], fake_cell[f], held_distance[h], held_cell[h],
                                          len(centres), min_fakes_per_cell))
    share, ct = statistics(slice(None), slice(None))
    resampled = np.array([statistics(rng.integers(len(fake_distance), size=len(fake_distance)),
                                     rng.integers(len(held_distance), size=len(held_distance)))
                          for _ in range(num_bootstrap)])
    share_std, ct_std = np.nanstd(resampled, axis=0, ddof=1)
    return {"copying_share": share, "copying_share_std": float(share_std),
            "copying_ct": ct, "copying_ct_std": float(ct_std)}


def copying_share(fake_distances: np.ndarray, held_out_distances: np.ndarray, quantile: float) -> float:
    """Share of fakes strictly closer to the train set than the held-out distances' ``quantile``."""
    return float(np.mean(fake_distances < np.quantile(held_out_distances, quantile)))


def copying_ct(fake_distances, fake_cells, held_out_distances, held_out_cells, num_cells: int,
               min_fakes_per_cell: int) -> float:
    """C_T: the held-out-weighted mean over kept cells of Z_U (see the module doc); NaN when no
    cell holds enough fakes and a held-out example."""
    z_scores, weights = [], []
    for cell in range(num_cells):
        fakes, held = fake_distances[fake_cells == cell], held_out_distances[held_out_cells == cell]
        if len(fakes) >= min_fakes_per_cell and len(held) > 0:
            z_scores.append(mann_whitney_z(fakes, held))
            weights.append(len(held))
    return float(np.average(z_scores, weights=weights)) if weights else float("nan")


def mann_whitney_z(fakes: np.ndarray, held_out: np.ndarray) -> float:
    """Z_U with U counting (fake, held-out) pairs where the fake is farther (ties 1/2): < 0 when
    fakes are closer to the train set."""
    ordered = np.sort(held_out)
    below = np.searchsorted(ordered, fakes, side="left")
    tied = np.searchsorted(ordered, fakes, side="right") - below
    m, n = len(fakes), len(held_out)
    u = below.sum() + 0.5 * tied.sum()
    return float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


def closest_pairs(real, fake, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``count`` fakes closest to a train example, closest first: (fake rows, their nearest
    train rows, distances), for the report's grid of (fake, train) pairs."""
    distances, nearest = nearest_neighbours(fake, real, "fake features", "train features")
    fakes = np.argsort(distances, kind="stable")[:count]
    return fakes, nearest[fakes], distances[fakes]


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's algorithm from k distinct random points: the cell centres [k, D]. An emptied
    cell keeps its centre."""
    centres = points[rng.choice(len(points), k, replace=False)]
    for _ in range(KMEANS_ITERATIONS):
        _, cells = nearest_neighbours(points, centres, "train features", "cell centres")
        for cell in range(k):
            members = points[cells == cell]
            if len(members):
                centres[cell] = members.mean(axis=0)
    return centres


def _distances_and_cells(real, centres, points, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Each point's distance to its nearest train example, and its cell (nearest centre)."""
    distances, _ = nearest_neighbours(points, real, name, "train features")
    _, cells = nearest_neighbours(points, centres, name, "cell centres")
    return distances, cells
