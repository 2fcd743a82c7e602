"""What several benchmark scripts measure alike (imported by the scripts in this folder)."""
from __future__ import annotations

import time

import tensorflow as tf


def matmul_gflops(n: int = 2048, repeats: int = 20, trials: int = 1) -> float:
    """This machine's float32 matmul rate in GFLOP/s: the best of ``trials`` timings of
    ``repeats`` n x n matmuls (other processes only ever slow a timing down)."""
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    multiply = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    multiply().numpy()
    best = 0.0
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(repeats):
            multiply().numpy()
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best
