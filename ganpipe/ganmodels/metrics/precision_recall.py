"""Improved precision and recall (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its points, each ball's radius the distance to
the point's k-th nearest neighbour in its own set (k=3 as in the paper). Precision is the fraction
of fake samples inside the real manifold (sample quality); recall the fraction of real samples
inside the fake manifold (diversity: a collapsed generator covers few real points). A point on a
ball's boundary counts as inside (the paper's <=), so identical sets give exactly 1 and 1.
"""
from __future__ import annotations

import numpy as np

from .feature_stats import as_matrix, check_same_width, distance_chunks, known_radii, kth_neighbour_distances


def compute_precision_recall(real, fake, k: int = 3, real_radii=None) -> dict[str, float]:
    """``{"precision": float in [0, 1], "recall": float in [0, 1]}``. ``real_radii``: the real
    set's k-NN radii when already known (one reference measured against many fake sets)."""
    real, fake = as_matrix(real, "real features", min_rows=2), as_matrix(fake, "fake features", min_rows=2)
    check_same_width(real, fake, "real features", "fake features")
    real_radii = known_radii(real, k, real_radii)
    fake_radii = kth_neighbour_distances(fake, k, "fake features")
    fake_in_real = np.zeros(len(fake), dtype=bool)
    real_in_fake = np.zeros(len(real), dtype=bool)
    for start, block in distance_chunks(real, fake):  # block[i, j] = |real_i - fake_j|
        fake_in_real |= (block <= real_radii[start:start + len(block), None]).any(axis=0)
        real_in_fake[start:start + len(block)] = (block <= fake_radii[None, :]).any(axis=1)
    return {"precision": float(fake_in_real.mean()), "recall": float(real_in_fake.mean())}
