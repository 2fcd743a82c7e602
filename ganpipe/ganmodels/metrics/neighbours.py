"""Nearest neighbours across two sets, the one definition the copying statistics and the
membership audit share: for each query row, the Euclidean distance to its nearest reference row
and that row's index. Chunked (``feature_stats.distance_chunks``), so 10,000 x 2,000 distances
never sit in memory at once.
"""
from __future__ import annotations

import numpy as np

from .feature_stats import as_matrix, check_same_width, distance_chunks


def nearest_neighbours(queries, references, queries_name: str = "queries",
                       references_name: str = "references") -> tuple[np.ndarray, np.ndarray]:
    """``(distances [N], indices [N])``: ``distances[i] = min_j |queries[i] - references[j]|``,
    attained at ``references[indices[i]]`` (the first such j on a tie)."""
    queries, references = as_matrix(queries, queries_name), as_matrix(references, references_name)
    check_same_width(queries, references, queries_name, references_name)
    distances, indices = np.empty(len(queries)), np.empty(len(queries), dtype=np.int64)
    for start, block in distance_chunks(queries, references):
        rows = slice(start, start + len(block))
        indices[rows] = np.argmin(block, axis=1)
        distances[rows] = block[np.arange(len(block)), indices[rows]]
    return distances, indices
