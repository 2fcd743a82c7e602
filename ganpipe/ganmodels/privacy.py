"""DP-SGD for the discriminator (Abadi et al. 2016): per-example clipped, noised gradients.

Only D reads real examples, so a D whose every update is differentially private makes G, and
every sample drawn from G, private by post-processing (DPGAN, Xie et al. 2018). One private D
update on a Poisson-sampled batch of real examples x_1..x_m (expected size B = q N):

    g = ( sum_i clip_C(grad l(x_i)) + N(0, (sigma C)^2 I) ) / B  +  grad (public terms)

where clip_C scales a gradient down to L2 norm at most C, over all of D's variables at once.
The noise goes on the *sum* (its sensitivity to one example is C), and the division is by the
*expected* batch size, so the step reveals nothing through m. "Public terms" are those that read
no real example: D's loss on fakes generated from labels drawn from a public (or separately
privatised) class prior, and D's weight penalties.

Per-example gradients come from ``tf.vectorized_map`` over one-example forward and backward
passes (pfor turns them into batched ops), not from a Python loop over examples. (A
``GradientTape.jacobian`` of the batch's loss vector costs a backward pass of the whole batch per
example: 57x a plain gradient at batch 64 against 8x.)
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from ganpipe.ganmodels import updates
from ganpipe.ganmodels.conditional import ConditionalGAN
from ganpipe.ganmodels.gan import GAN
from ganpipe.ganmodels.network_walk import couples_samples


def per_example_gradients(example_loss, examples, variables):
    """The gradient of ``example_loss(*one_example)`` for each example of ``examples`` (a tuple of
    [m, ...] tensors, sliced together), one [m, *variable.shape] tensor per variable (zeros for a
    variable the loss does not reach). ``tf.vectorized_map`` turns the one-example forward and
    backward passes into batched ops; an empty batch (Poisson sampling can draw one) gives zeros."""
    def one(example):
        with tf.GradientTape() as tape:
            loss = example_loss(*example)
        return tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def none():
        return [tf.zeros([0, *v.shape], v.dtype) for v in variables]

    return tf.cond(tf.shape(examples[0])[0] > 0, lambda: tf.vectorized_map(one, tuple(examples)), none)


def clipped_sum(gradients, l2_norm_clip):
    """``sum_i clip(g_i)``: each example's gradient (over all variables together) scaled to L2 norm
    at most ``l2_norm_clip``, then summed over examples. Returns (sums, per-example norms)."""
    squares = [tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1) for g in gradients]
    norms = tf.sqrt(tf.add_n(squares))
    scale = tf.minimum(1.0, l2_norm_clip / tf.maximum(norms, 1e-12))
    return [tf.tensordot(scale, g, axes=1) for g in gradients], norms


def gaussian_noise(like, stddev, seed):
    """Independent N(0, stddev^2) noise shaped like each tensor of ``like``, from a stateless
    ``seed`` (a resumed run draws the noise an uninterrupted one would)."""
    return [stddev * tf.random.stateless_normal(tf.shape(t), seed=tf.random.experimental.stateless_fold_in(seed, i),
                                                dtype=t.dtype)
            for i, t in enumerate(like)]


def private_gradients(example_loss, examples, variables, *, l2_norm_clip, noise_multiplier, expected_batch_size,
                      seed):
    """``(sum_i clip(grad l_i) + N(0, (noise_multiplier * l2_norm_clip)^2)) / expected_batch_size``
    over the real ``examples`` (see ``per_example_gradients``)."""
    sums, _ = clipped_sum(per_example_gradients(example_loss, examples, variables), l2_norm_clip)
    noise = gaussian_noise(sums, noise_multiplier * l2_norm_clip, seed)
    return [(s + n) / float(expected_batch_size) for s, n in zip(sums, noise)]


def poisson_sample(num_records, sampling_probability, seed):
    """Indices of a Poisson sample: each of ``num_records`` taken independently with probability
    ``sampling_probability`` (the sampling the accountant's PoissonSampledDpEvent assumes)."""
    draws = tf.random.stateless_uniform([num_records], seed=seed)
    return tf.cast(tf.reshape(tf.where(draws < sampling_probability), [-1]), tf.int32)


def noised_histogram(labels, num_classes, noise_stddev, seed):
    """A class prior from a Gaussian-noised histogram of ``labels`` (one record changes one count
    by 1: L2 sensitivity 1), negative counts set to 0; uniform if every count is."""
    counts = tf.math.bincount(tf.cast(labels, tf.int32), minlength=num_classes, maxlength=num_classes, dtype=tf.float32)
    noised = tf.nn.relu(counts + noise_stddev * tf.random.stateless_normal([num_classes], seed=seed))
    total = tf.reduce_sum(noised)
    return tf.where(total > 0, noised / tf.maximum(total, 1e-12), tf.fill([num_classes], 1.0 / num_classes))


class PrivateDiscriminatorTraining:
    """Makes a GAN's (or ConditionalGAN's) D updates DP-SGD updates; G's update is unchanged.

    ``install(gan)`` replaces ``gan.train_step``. Its batches are tuples of ``d_steps`` Poisson
    samples (``poisson_batches``), one per D update, each ``real`` or ``(real, labels)`` of any
    size m. Each D update:

    - real part: per example, D's real loss term (its real target, label flip and smoothing
      included) plus the example's own R1 penalty, clipped and noised (``private_gradients``);
    - public part: D's loss on ``expected_batch_size`` fakes whose labels come from
      ``class_prior`` (never from the real batch), R2 on those fakes, D's weight penalties.

    The G step generates for labels drawn from ``class_prior`` too. ``gan.private_steps`` (D
    updates on real data so far, the accountant's input) and ``gan.class_prior`` are variables of
    the GAN, so its checkpoint carries them and a resumed run reports the same epsilon.
    """

    def __init__(self, gan, *, l2_norm_clip, noise_multiplier, expected_batch_size, class_prior=None):
        refuse_unaccounted_options(gan)
        self.gan = gan
        self.l2_norm_clip = float(l2_norm_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.expected_batch_size = int(expected_batch_size)
        self.real_penalty = dataclasses.replace(gan.zero_centred, r2=0.0)
        self.fake_penalty = dataclasses.replace(gan.zero_centred, r1=0.0)
        gan.private_steps = keras.Variable(0, dtype="int64", trainable=False, name="private_steps")
        classes = int(getattr(gan, "num_classes", 0))
        if classes:
            prior = [1.0 / classes] * classes if class_prior is None else [float(p) for p in class_prior]
            gan.class_prior = keras.Variable(prior, dtype="float32", trainable=False, name="class_prior")

    def install(self):
        self.gan.train_step = self.train_step
        return self

    def train_step(self, data):
        gan = self.gan
        for index, batch in enumerate(data):
            real, condition = gan.unpack(batch)
            stats = self.discriminator_step(real, condition, index)
        stats["g_loss"] = gan.generator_step(tf.zeros([self.expected_batch_size]), self.prior_labels("g_labels"))
        gan.update_ema()
        gan.step.assign_add(1)
        gan.private_steps.assign_add(len(data))
        return gan.record(stats)

    def prior_labels(self, stream, index=0):
        """``expected_batch_size`` labels drawn from the class prior (None for unconditional GANs)."""
        if not hasattr(self.gan, "class_prior"):
            return None
        logits = tf.math.log(tf.maximum(self.gan.class_prior, 1e-30))[None]
        draws = tf.random.stateless_categorical(logits, self.expected_batch_size, seed=self.gan.noise_seed(stream, index))
        return tf.cast(draws[0], tf.int32)

    def discriminator_step(self, real, condition, index):
        """One private D update: the clipped, noised real part plus the public part."""
        gan = self.gan
        seen, seen_condition = gan.discriminator_input(tf.cast(real, "float32"), condition, f"d_real/{index}")
        targets = gan.real_targets(tf.shape(seen)[0], index)
        d_update = tf.cast(gan.step, "int64") * gan.d_steps + index
        real_grads = self.real_gradients(seen, seen_condition, targets, d_update, index)
        public_grads, fake_logits, fake_term = self.public_gradients(d_update, index)
        variables = gan.discriminator.trainable_variables
        gan.d_optimizer.apply_gradients(zip([r + p for r, p in zip(real_grads, public_grads)], variables))
        # The logged metrics read the real batch without noise: TensorBoard is outside the guarantee.
        real_logits = tf.cast(gan.discriminate(seen, seen_condition, training=False), "float32")
        d_loss = tf.reduce_mean(gan.gan_loss.discriminator(real_logits, real_logits, targets)[0]) + fake_term
        return {"d_loss": d_loss, **gan.gan_loss.training_metrics(real_logits, fake_logits)}

    def real_gradients(self, samples, labels, targets, d_update, index):
        """The private part: per real example, D's real loss term plus its own R1 penalty."""
        gan, conditional = self.gan, labels is not None

        def example_loss(sample, label, target):
            sample, label = sample[None], label[None] if conditional else None
            logit = tf.cast(gan.discriminate(sample, label, training=True), "float32")
            real_term = gan.gan_loss.discriminator(logit, logit, target[None])[0]
            penalty = self.real_penalty(lambda x: gan.discriminate(x, label, training=True), sample, None, d_update)
            return tf.reduce_sum(real_term) + penalty

        labels = labels if conditional else tf.zeros_like(targets, tf.int32)  # vectorized_map wants tensors
        return private_gradients(example_loss, (samples, labels, targets), gan.discriminator.trainable_variables,
                                 l2_norm_clip=self.l2_norm_clip, noise_multiplier=self.noise_multiplier,
                                 expected_batch_size=self.expected_batch_size, seed=gan.noise_seed("dp_noise", index))

    def public_gradients(self, d_update, index):
        """The part that reads no real example: D's fake term on fakes for prior labels, R2 on
        them, D's weight penalties. Returns (gradients, fake logits, fake term's mean)."""
        gan, count = self.gan, self.expected_batch_size
        labels = self.prior_labels("d_labels", index)
        fake = gan.generate(gan.sample_latent(count, "d_latent", index), labels, training=True)
        with tf.GradientTape() as tape:
            shown, shown_labels = gan.discriminator_input(fake, labels, f"d_fake/{index}")
            fake_logits = tf.cast(gan.discriminate(shown, shown_labels, training=True), "float32")
            fake_term = tf.reduce_mean(gan.gan_loss.discriminator(fake_logits, fake_logits, 1.0)[1])
            penalty = self.fake_penalty(lambda x: gan.discriminate(x, labels, training=True), None, fake, d_update)
            public = fake_term + penalty + updates.regularization(gan.discriminator)
        grads = tape.gradient(public, gan.discriminator.trainable_variables,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads, fake_logits, fake_term


def refuse_unaccounted_options(gan) -> None:
    """A GAN whose D updates DP-SGD cannot account is an error naming the alternative."""
    if type(gan) not in (GAN, ConditionalGAN):
        raise ValueError(f"differentially private training covers the GAN and ConditionalGAN models "
                         f"(mlp, dcgan, maxout_mlp, cgan), not {type(gan).__name__}")
    problems = {
        "reuse_fakes": (gan.reuse_fakes, "the joint step takes D's gradient in one pass over reals and fakes; "
                        "set reuse_fakes: false"),
        "gradient_penalty": (gan.gradient_penalty > 0, "WGAN-GP's interpolates mix a real and a fake example; "
                             "use r1, the hinge loss, or spectral_norm with the wasserstein loss"),
        "packing": (gan.packing != 1, "a packed D decides on several real examples at once; use packing: 1"),
        "a cross-sample layer in D": (couples_samples(gan.discriminator),
                                      "BatchNorm or minibatch standard deviation lets one example change every "
                                      "other's gradient; use LayerNorm or GroupNorm in D, or no normalisation"),
        "mixed precision": (gan.uses_float16(), "loss scaling would rescale the clipping norm; use float32"),
    }
    for name, (present, alternative) in problems.items():
        if present:
            raise ValueError(f"differentially private training cannot account for {name}: {alternative}")


def poisson_batches(examples, labels, *, sampling_probability, d_steps, seed, start_step=0):
    """A dataset of per-step tuples of ``d_steps`` Poisson samples of the in-memory ``examples``
    [N, ...] (with their ``labels`` [N] as ``(x, y)`` pairs, unless None). Step t's samples
    depend only on (seed, t), so a resumed run starting at ``start_step`` reads what an
    uninterrupted run would have read."""
    examples = tf.convert_to_tensor(examples)
    count = int(examples.shape[0])
    key = tf.random.experimental.stateless_fold_in(tf.constant([int(seed), 0], tf.int64), _POISSON_STREAM)

    def step(t):
        samples = []
        for index in range(d_steps):
            rows = poisson_sample(count, sampling_probability, tf.random.experimental.stateless_fold_in(
                tf.random.experimental.stateless_fold_in(key, t), index))
            samples.append(tf.gather(examples, rows) if labels is None else
                           (tf.gather(examples, rows), tf.gather(labels, rows)))
        return tuple(samples)

    return tf.data.Dataset.counter(int(start_step)).map(step).prefetch(tf.data.AUTOTUNE)


_POISSON_STREAM = 0x504F4953  # "POIS": keeps the sampler's draws apart from the GAN's noise streams
