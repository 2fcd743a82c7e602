"""Framework overhead on a tiny GAN: ganpipe's ``GAN.fit`` vs a plain tf.function/XLA loop.

The PacGAN MLP pair of the 2-D mixture benchmarks (``maxout_mlp``: G 2 -> 4 x 400 ReLU+BN -> 2,
D 3 x 200 maxout with 5 pieces, packing 4, batch 100 packs = 400 samples). Both sides do the same
alternating update each iteration (D on real and fresh fake packs with Adam, then G with fresh
noise through the updated D, non-saturating loss) on networks of identical architecture:

  plain    a graph loop takes ``--chunk`` batches from the iterator, then one
           ``tf.function(jit_compile=True)`` runs their iterations in a ``tf.range`` loop; no Keras
           fit, no metrics, no callbacks
  ganpipe  ``GAN.fit`` with ganpipe's defaults (``compile()`` as is), and with explicit settings

Both read the same ``tf.data`` pipeline (shuffled, repeated, batched), so the difference is the
framework: Keras' fit and ganpipe's train step (metrics, noise streams, options).

Each configuration (and the matmul rate) is timed in interleaved rounds and its best round is kept (load from other
processes only ever slows a round down). Also printed: FLOP per iteration (dense layers; a backward
pass costs 2x forward where weight gradients are needed, 1x where only input gradients are) and
the achieved fraction of this machine's fp32 matmul rate, measured in the same run.

    python benchmarks/small_model_speed.py [--iterations 2000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ganpipe import ganmodels  # noqa: E402
from measure import matmul_gflops  # noqa: E402  (benchmarks/measure.py)
from ganpipe.ganmodels.metrics import mixture_modes  # noqa: E402

LATENT, PACKING, PACKS = 2, 4, 100
BATCH = PACKS * PACKING


def networks(seed=0):
    keras.utils.set_random_seed(seed)
    gan = ganmodels.build_gan("maxout_mlp", (2,), latent_dim=LATENT, packing=PACKING)
    return gan.generator, gan.discriminator


def adam():
    return keras.optimizers.Adam(1e-4, beta_1=0.8)


class PlainLoop:
    """The baseline: the same alternating updates written directly, XLA-compiled, ``chunk`` per call."""

    def __init__(self, data: tf.data.Dataset, chunk: int, jit: bool = True):
        self.generator, self.discriminator = networks()
        self.d_opt, self.g_opt = adam(), adam()
        self.d_opt.build(self.discriminator.trainable_variables)
        self.g_opt.build(self.generator.trainable_variables)
        self.iterator = iter(data)
        self.chunk = chunk
        self.fetch = tf.function(self.batches)
        self.train = tf.function(self.iterations, jit_compile=jit)
        self.seed = tf.Variable(0, dtype=tf.int64)

    def run(self):
        return self.train(self.fetch())

    def batches(self):
        stacked = tf.TensorArray(tf.float32, size=self.chunk, element_shape=(BATCH, 2))
        for i in tf.range(self.chunk):
            stacked = stacked.write(i, self.iterator.get_next())
        return stacked.stack()

    def one_iteration(self, real, i):
        seed = tf.stack([self.seed, tf.cast(i, tf.int64)])
        z = tf.random.stateless_normal((BATCH, LATENT), seed=seed + [0, 1])
        fake = self.generator(z, training=True)
        d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.discriminator(tf.concat([real, fake], 0), training=True)
            d_loss = tf.reduce_mean(tf.nn.softplus(-logits[:BATCH])) + tf.reduce_mean(tf.nn.softplus(logits[BATCH:]))
        self.d_opt.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        z = tf.random.stateless_normal((BATCH, LATENT), seed=seed + [0, 2])
        with tf.GradientTape() as tape:
            g_loss = tf.reduce_mean(tf.nn.softplus(-self.discriminator(self.generator(z, training=True),
                                                                       training=True)))
        self.g_opt.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
        return d_loss + g_loss

    def iterations(self, batches):
        total = tf.constant(0.0)
        for i in tf.range(self.chunk):
            total += self.one_iteration(batches[i], i)
        self.seed.assign_add(1)
        return total

    def time(self, iterations: int) -> float:
        self.run().numpy()  # trace and warm up
        start = time.perf_counter()
        for _ in range(iterations // self.chunk):
            self.run().numpy()
        return (time.perf_counter() - start) / iterations


class GanpipeFit:
    """``GAN.fit`` on a shuffled, repeated tf.data pipeline, with ``compile(**compile_args)``."""

    def __init__(self, data: tf.data.Dataset, **compile_args):
        generator, discriminator = networks()
        self.gan = ganmodels.GAN(generator, discriminator, LATENT)
        self.gan.compile(d_optimizer=adam(), g_optimizer=adam(), **compile_args)
        self.data = data

    def time(self, iterations: int) -> float:
        self.gan.fit(self.data, steps_per_epoch=200, epochs=1, verbose=0)  # trace and warm up
        start = time.perf_counter()
        self.gan.fit(self.data, steps_per_epoch=iterations, epochs=1, verbose=0)
        return (time.perf_counter() - start) / iterations


def dense_forward_flops(model) -> float:
    """2 x multiply-adds of every Dense kernel (maxout's included) for one input row."""
    return float(sum(2 * np.prod(w.shape) for w in model.weights if w.path.endswith("kernel")))


def iteration_flops(generator, discriminator) -> float:
    """D step: G fwd on BATCH + D fwd/bwd on 2 x PACKS packs (1 + 3 x 2); G step: G fwd/bwd (3) +
    D fwd and input-gradient pass on PACKS packs (2): 4 G(BATCH) + 8 D(PACKS)."""
    return 4 * BATCH * dense_forward_flops(generator) + 8 * PACKS * dense_forward_flops(discriminator)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=100, help="plain loop: iterations per tf.function call")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    points = mixture_modes.ring8().sample(100_000, np.random.default_rng(0))
    data = (tf.data.Dataset.from_tensor_slices(points).shuffle(10_000, seed=0).repeat()
            .batch(BATCH, drop_remainder=True).prefetch(2))
    configs = {
        "plain loop, XLA": lambda: PlainLoop(data, args.chunk, jit=True),
        "plain loop, no XLA": lambda: PlainLoop(data, args.chunk, jit=False),
        "GAN.fit defaults": lambda: GanpipeFit(data),
        "GAN.fit spe=1, no XLA": lambda: GanpipeFit(data, steps_per_execution=1, jit_compile=False),
        "GAN.fit spe=100, no XLA": lambda: GanpipeFit(data, steps_per_execution=100, jit_compile=False),
    }
    runners = {name: make() for name, make in configs.items()}
    seconds = {name: [] for name in configs}
    peaks, layer_rates = [], []
    for _ in range(args.rounds):
        for name, runner in runners.items():
            seconds[name].append(runner.time(args.iterations))
        peaks.append(matmul_gflops(2048, 20))
        layer_rates.append(matmul_gflops(400, 400))
    peak, layer_rate = max(peaks), max(layer_rates)
    flops = iteration_flops(*networks())
    base = min(seconds["plain loop, XLA"])
    print(f"PacGAN4 MLP pair, batch {PACKS} packs x {PACKING}; {flops / 1e9:.2f} GFLOP/iteration; "
          f"fp32 matmul {peak:.0f} GFLOP/s at 2048^2, {layer_rate:.0f} at 400^2; best of {args.rounds} rounds "
          f"of {args.iterations} iterations")
    rate = max(peak, layer_rate)  # the better of the two measured matmul rates
    print(f"{'configuration':<24} {'ms/it':>7} {'vs plain':>9} {'GFLOP/s':>8} {'of matmul rate':>15}")
    for name, values in seconds.items():
        best = min(values)
        achieved = flops / best / 1e9
        print(f"{name:<24} {best * 1e3:>7.2f} {best / base:>8.2f}x {achieved:>8.1f} {achieved / rate:>14.1%}")


if __name__ == "__main__":
    main()
