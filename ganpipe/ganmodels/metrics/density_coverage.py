"""Density and coverage (Naeem et al. 2020), k-NN balls around the real samples only.

    density  = 1/(k M) sum_j #{ i : fake_j in B(real_i, r_i) }     (about 1 when the sets match,
                                                                     above 1 when fakes crowd
                                                                     dense real regions)
    coverage = 1/N #{ i : some fake_j in B(real_i, r_i) }           (in [0, 1])

with r_i the distance from real_i to its k-th nearest real neighbour (k=5 as the paper
recommends). Unlike precision/recall, real outliers do not inflate the manifold of fakes. A point
on a ball's boundary counts as inside, as in precision_recall.
"""
from __future__ import annotations

import numpy as np

from .feature_stats import as_matrix, check_same_width, distance_chunks, known_radii


def compute_density_coverage(real, fake, k: int = 5, real_radii=None) -> dict[str, float]:
    """``{"density": float >= 0, "coverage": float in [0, 1]}``; ``real_radii`` as in precision/recall."""
    real, fake = as_matrix(real, "real features", min_rows=2), as_matrix(fake, "fake features")
    check_same_width(real, fake, "real features", "fake features")
    radii = known_radii(real, k, real_radii)
    balls_containing_fake = np.zeros(len(fake))
    covered = np.zeros(len(real), dtype=bool)
    for start, block in distance_chunks(real, fake):  # block[i, j] = |real_i - fake_j|
        inside = block <= radii[start:start + len(block), None]
        balls_containing_fake += inside.sum(axis=0)
        covered[start:start + len(block)] = inside.any(axis=1)
    return {"density": float(balls_containing_fake.mean() / k), "coverage": float(covered.mean())}
