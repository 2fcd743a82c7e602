"""GAN.fit throughput vs a plain keras-io-style train_step, same networks, same process.

DCGAN on random 32x32x1 images. Each configuration is timed in rounds interleaved with the
others (so load on the machine hits all alike) and its best round is reported (as timeit does:
other processes only ever slow a round down), with MFU against this machine's fp32 matmul rate
measured in the same run.

    python benchmarks/train_step.py [--steps 8] [--rounds 3] [--batch-sizes 128,64] [--no-xla]
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

SHAPE, LATENT, WIDTH = (32, 32, 1), 128, 64


class KerasIoStyleGAN(keras.Model):
    """The baseline: two GradientTapes, BCE on logits, no options (as in the keras-io examples)."""

    def __init__(self, generator, discriminator):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.seed_generator = keras.random.SeedGenerator(0)
        self.d_loss_tracker, self.g_loss_tracker = keras.metrics.Mean(name="d_loss"), keras.metrics.Mean(name="g_loss")
        self.built = True

    def compile(self):
        super().compile()
        self.d_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
        self.g_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def train_step(self, real):
        n = tf.shape(real)[0]
        fake = self.generator(keras.random.normal((n, LATENT), seed=self.seed_generator), training=True)
        both = tf.concat([real, fake], axis=0)
        labels = tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.bce(labels, self.discriminator(both, training=True))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        z = keras.random.normal((n, LATENT), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            fake_logits = self.discriminator(self.generator(z, training=True), training=True)
            g_loss = self.bce(tf.ones((n, 1)), fake_logits)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}


def forward_flops(model) -> float:
    """Multiply-adds x 2 of the conv, transposed-conv and dense layers, per sample."""
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, c_in = layer.input.shape
            total += 2 * h * w * np.prod(layer.kernel_size) * c_in * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            total += 2 * h * w * np.prod(layer.kernel_size) * layer.input.shape[-1] * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return float(total)


def step_flops_per_image(generator, discriminator, reuse_fakes: bool) -> float:
    """Backward = 2x forward where weight gradients are needed, 1x where only input gradients are.
    Alternating: D step = G fwd + D fwd/bwd on real and fake (1 + 2 + 4); G step = G fwd/bwd +
    D fwd + D input-gradient pass (3 + 2). reuse_fakes: one G fwd/bwd, one D fwd/bwd (3 + 6)."""
    g, d = forward_flops(generator), forward_flops(discriminator)
    return (3 * g + 6 * d) if reuse_fakes else (4 * g + 8 * d)


def make_model(kind: str, jit: bool):
    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=WIDTH)
    if kind == "baseline":
        model = KerasIoStyleGAN(generator, discriminator)
        model.compile()
    else:
        model = ganmodels.GAN(generator, discriminator, LATENT, reuse_fakes=(kind == "reuse_fakes"))
        model.compile(jit_compile=jit)
    return model


def images_per_second(model, data, batch, steps) -> float:
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return batch * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-sizes", default="128,64")
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True configurations (slow on CPU)")
    args = parser.parse_args()
    peak = matmul_gflops()
    configs = [("baseline", False), ("ours", False), ("ours", True), ("reuse_fakes", False), ("reuse_fakes", True)]
    configs = [(kind, jit) for kind, jit in configs if not (jit and args.no_xla)]
    print(f"fp32 matmul 2048^2: {peak:.0f} GFLOP/s; DCGAN {SHAPE}, latent {LATENT}, width {WIDTH}")
    print(f"{'batch':>5} {'config':<12} {'jit':<5} {'img/s':>7} {'vs base':>8} {'MFU':>6}")
    for batch in map(int, args.batch_sizes.split(",")):
        data = tf.data.Dataset.from_tensor_slices(
            np.random.default_rng(0).uniform(-1, 1, (batch * 4, *SHAPE)).astype("float32")
        ).batch(batch, drop_remainder=True).cache().repeat()
        models = {config: make_model(*config) for config in configs}
        rates = {config: [] for config in configs}
        for _ in range(args.rounds):
            for config, model in models.items():
                rates[config].append(images_per_second(model, data, batch, args.steps))
        base = max(rates[("baseline", False)])
        for (kind, jit), measured in rates.items():
            rate = max(measured)
            gen, disc = models[(kind, jit)].generator, models[(kind, jit)].discriminator
            mfu = rate * step_flops_per_image(gen, disc, kind == "reuse_fakes") / (peak * 1e9)
            print(f"{batch:>5} {kind:<12} {str(jit):<5} {rate:>7.1f} {rate / base:>7.2f}x {mfu:>6.1%}")
    exact = models[("reuse_fakes", False)].single_backward_is_exact()
    print(f"reuse_fakes here {'reads G' if exact else 'does NOT read G'}'s gradient off D's backward pass "
          "(exact only for non-saturating/minimax, no BatchNorm/minibatch layer in D, no penalty on fakes, float32)")


if __name__ == "__main__":
    main()
