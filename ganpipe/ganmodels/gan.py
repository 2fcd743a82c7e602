"""The GAN as a Keras model whose ``train_step`` plays the alternating two-player game.

One ``train_step`` = ``d_steps`` discriminator updates, then one generator update:

    for each of the k D steps (its own slice of the real batch, fresh noise):
        D learns real (label 1, or 1 - smoothing, or 0 when flipped) vs G(z) (label 0)
    G step (fresh noise): G learns to make D say "real"; D is frozen (only G's variables change)

Losses are averaged over the *global* batch (per-replica mean / replicas), because the optimizers
sum gradients across replicas under ``tf.distribute``. Under a ``mixed_float16`` policy both
optimizers are wrapped in ``LossScaleOptimizer`` and each tape differentiates the scaled loss;
``scale_loss`` is a no-op on plain optimizers, so one code path serves every precision.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from ganpipe.ganmodels import losses as gan_losses

METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake", "d_accuracy", "value", "js")
LOG4 = math.log(4.0)
# Random draws of one step are numbered: latent noise 0..d_steps, label flips and penalty
# interpolation from these offsets (d_steps <= 100).
FLIP_DRAWS, PENALTY_DRAWS, DRAWS_PER_STEP = 200, 400, 1024


def default_optimizer(learning_rate=2e-4, beta_1=0.5, beta_2=0.999):
    """Adam with the DCGAN paper's settings."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)


def inner_optimizer(optimizer):
    """The optimizer that really steps (LossScaleOptimizer does not advance its own iterations)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


class GAN(keras.Model):
    """Generator + discriminator trained by alternating updates in a custom ``train_step``.

    Args:
      generator: maps ``z`` [N, latent_dim] to samples (tanh images or vectors), float32 output.
      discriminator: maps samples to one logit each, float32 output.
      latent_dim: size of ``z`` ~ N(0, I).
      loss: one of ``losses.LOSSES`` (default ``non_saturating``).
      d_steps: k discriminator updates per generator update. The incoming batch of size B is cut
        into k slices of B / k: D step i trains on slice i with fresh noise (each D step sees its
        own real minibatch, as in Goodfellow et al.'s Algorithm 1), and the G step uses B / k
        noise vectors. Feed batches of k x your minibatch size.
      label_flip: probability of flipping a real label to 0 in D's step.
      label_smoothing: one-sided smoothing, real target 1 - label_smoothing (fakes stay 0).
      gradient_penalty: weight of the WGAN-GP penalty (Gulrajani et al. 2017), 0 = off; the
        penalty is computed in float32 even under mixed precision.
      ema_decay: keep an exponential moving average of G's weights (``ema_generator()``).
      reuse_fakes: speed option. The G step reuses the last D step's fakes, D's forward pass on
        them and (where exact) D's backward pass, instead of fresh noise through the updated D: a
        simultaneous-gradient update, as TF-GAN does. Saves a G forward and a D forward and
        backward pass per step; off by default.
      seed: noise is drawn statelessly from (seed, step, draw, replica), so a restored
        checkpoint continues with exactly the noise an uninterrupted run would have drawn.
    """

    def __init__(self, generator, discriminator, latent_dim, *, loss="non_saturating", d_steps=1,
                 label_flip=0.0, label_smoothing=0.0, gradient_penalty=0.0, ema_decay=None,
                 reuse_fakes=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        _check_range("d_steps", d_steps, 1, 100)
        _check_range("label_flip", label_flip, 0.0, 1.0)
        _check_range("label_smoothing", label_smoothing, 0.0, 0.5)
        if ema_decay is not None:
            _check_range("ema_decay", ema_decay, 0.0, 1.0)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.gan_loss = gan_losses.get(loss)
        self.d_steps = int(d_steps)
        self.label_flip = float(label_flip)
        self.label_smoothing = float(label_smoothing)
        self.gradient_penalty = float(gradient_penalty)
        self.reuse_fakes = bool(reuse_fakes)
        self.single_backward = True  # see joint_step_single_backward; False forces two passes
        self.seed = int(seed)
        self.ema_decay = ema_decay
        # Generator updates so far: the global step for logs and noise, saved in checkpoints.
        self.step = keras.Variable(0, dtype="int64", trainable=False, name="step",
                                   aggregation="only_first_replica")
        # Copies of the values: keras.Variable(a_variable) would alias it.
        self.ema_weights = [
            keras.Variable(w.numpy(), trainable=False, name=f"ema_{i}", aggregation="only_first_replica")
            for i, w in enumerate(generator.weights)
        ] if ema_decay is not None else []
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        self.built = True  # both networks are built; stops fit() from tracing call() on real data

    # ----------------------------------------------------------------- compile

    def compile(self, d_optimizer=None, g_optimizer=None, *, jit_compile=False, steps_per_execution=1, **kwargs):
        """Sets both optimizers (default Adam(2e-4, 0.5, 0.999)); float16 wraps them in loss scaling."""
        super().compile(jit_compile=jit_compile, steps_per_execution=steps_per_execution, **kwargs)
        d_optimizer = d_optimizer or default_optimizer()
        g_optimizer = g_optimizer or default_optimizer()
        if self.uses_float16():
            d_optimizer = _loss_scaled(d_optimizer)
            g_optimizer = _loss_scaled(g_optimizer)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def uses_float16(self) -> bool:
        return any(net.dtype_policy.name == "mixed_float16" for net in (self.generator, self.discriminator))

    def build_optimizers(self):
        """Creates the optimizers' slots now, e.g. before restoring a checkpoint into them."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # ------------------------------------------------- hooks for model families

    def unpack(self, data):
        """Splits a batch into (real samples, condition). Plain GANs ignore labels."""
        if isinstance(data, (tuple, list)):
            return data[0], None
        return data, None

    def generate(self, z, condition=None, training=False):
        return self.generator(z, training=training)

    def discriminate(self, samples, condition=None, training=False):
        return self.discriminator(samples, training=training)

    def generator_extra_loss(self, real, fake, condition):
        """Per-example terms added to G's adversarial loss (e.g. SRGAN's content loss)."""
        return 0.0

    def call(self, z, training=False):
        return self.generate(z, training=training)

    # -------------------------------------------------------------- the game

    def train_step(self, data):
        real, condition = self.unpack(data)
        minibatch = ops.shape(real)[0] // self.d_steps if self.d_steps > 1 else None
        for k in range(self.d_steps):
            real_k, cond_k = _slice(real, k, minibatch), _slice(condition, k, minibatch)
            if self.reuse_fakes and k == self.d_steps - 1:
                stats = self.joint_step(real_k, cond_k, draw=k)
            else:
                stats = self.discriminator_step(real_k, cond_k, draw=k)
        if not self.reuse_fakes:
            z = self.sample_latent(ops.shape(real_k)[0], draw=self.d_steps)
            stats["g_loss"] = self.generator_step(_slice(real, 0, minibatch), z, _slice(condition, 0, minibatch))
        if self.ema_weights:
            self.update_ema()
        self.step.assign_add(1)
        return self.record(stats)

    def discriminator_step(self, real, condition, draw):
        """One D update: ``real`` (target 1) vs fresh fakes (target 0); only D's variables change."""
        fake = self.generate(self.sample_latent(ops.shape(real)[0], draw), condition, training=True)
        with tf.GradientTape() as tape:
            real_logits, fake_logits, d_loss = self.discriminator_loss(real, fake, condition, draw)
            d_total = self.discriminator_objective(d_loss, real, fake, condition, draw)
        _apply(self.d_optimizer, tape.gradient(d_total, self.discriminator.trainable_variables),
               self.discriminator.trainable_variables)
        return {"d_loss": d_loss, **_discriminator_stats(real_logits, fake_logits)}

    def generator_step(self, real, z, condition):
        """One G update through the (just updated, frozen) discriminator."""
        with tf.GradientTape() as tape:
            fake = self.generate(z, condition, training=True)
            fake_logits = self.discriminate(fake, condition, training=True)
            g_loss = self.generator_loss(real, fake, fake_logits, condition)
            g_total = self.generator_objective(g_loss)
        _apply(self.g_optimizer, tape.gradient(g_total, self.generator.trainable_variables),
               self.generator.trainable_variables)
        return g_loss

    def joint_step(self, real, condition, draw):
        """``reuse_fakes``: one G and one D forward pass feed both updates (simultaneous gradients)."""
        if self.single_backward and self.gradient_penalty <= 0.0 and not self.uses_float16():
            return self.joint_step_single_backward(real, condition, draw)
        z = self.sample_latent(ops.shape(real)[0], draw)
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            fake = self.generate(z, condition, training=True)
            real_logits, fake_logits, d_loss = self.discriminator_loss(real, fake, condition, draw)
            d_total = self.discriminator_objective(d_loss, real, fake, condition, draw)
            g_loss = self.generator_loss(real, fake, fake_logits, condition)
            g_total = self.generator_objective(g_loss)
        d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables
        d_grads, g_grads = d_tape.gradient(d_total, d_vars), g_tape.gradient(g_total, g_vars)
        _apply(self.d_optimizer, d_grads, d_vars)
        _apply(self.g_optimizer, g_grads, g_vars)
        return {"d_loss": d_loss, "g_loss": g_loss, **_discriminator_stats(real_logits, fake_logits)}

    def joint_step_single_backward(self, real, condition, draw):
        """``joint_step`` with one backward pass through D instead of two.

        For sample i with logit l_i, D's backward pass gives dL_D/dfake_i = a_i * dl_i/dfake_i with
        a_i = dL_D/dl_i; G needs b_i * dl_i/dfake_i with b_i = dL_G/dl_i: the same per-sample
        Jacobian, so G's upstream gradient is dL_D/dfake_i * b_i / a_i. Exact while a_i does not
        underflow (a logit below about -87 for the BCE losses): such a sample gives G no gradient.
        Not used with the gradient penalty (it depends on the fakes too) or float16.
        """
        z = self.sample_latent(ops.shape(real)[0], draw)
        with tf.GradientTape() as g_tape:
            fake = self.generate(z, condition, training=True)
            content = ops.mean(self.generator_extra_loss(real, fake, condition))
            extra_total = self.generator_objective(content)
        with tf.GradientTape() as d_tape:
            d_tape.watch(fake)
            real_logits, fake_logits, d_loss = self.discriminator_loss(real, fake, condition, draw)
            d_total = self.discriminator_objective(d_loss, real, fake, condition, draw)
        d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables
        *d_grads, fake_grad = d_tape.gradient(d_total, d_vars + [fake])
        ratio = self.logit_gradient_ratio(fake_logits)
        upstream = fake_grad * ops.reshape(ratio, (-1,) + (1,) * (len(fake.shape) - 1))
        g_grads = g_tape.gradient([fake, extra_total], g_vars, output_gradients=[upstream, ops.ones_like(extra_total)])
        _apply(self.d_optimizer, d_grads, d_vars)
        _apply(self.g_optimizer, g_grads, g_vars)
        g_loss = ops.mean(self.gan_loss.generator(fake_logits)) + content
        return {"d_loss": d_loss, "g_loss": g_loss, **_discriminator_stats(real_logits, fake_logits)}

    def discriminator_objective(self, d_loss, real, fake, condition, draw):
        """What D's tape differentiates: loss + gradient penalty + D's weight penalties, as this
        replica's loss-scaled share of the global batch."""
        total = d_loss + self.penalty_terms(real, fake, condition, draw) + _regularization(self.discriminator)
        return self.d_optimizer.scale_loss(_global_share(total))

    def generator_objective(self, g_loss):
        """What G's tape differentiates: ``g_loss`` + G's weight penalties, scaled like D's."""
        return self.g_optimizer.scale_loss(_global_share(g_loss + _regularization(self.generator)))

    def logit_gradient_ratio(self, fake_logits):
        """b_i / a_i: d(scaled G loss)/dl_i over d(scaled D loss)/dl_i per fake logit (0 where a_i is 0)."""
        logits = tf.stop_gradient(ops.cast(fake_logits, "float32"))
        n = ops.shape(logits)[0]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(logits)
            _, fake_term = self.gan_loss.discriminator(ops.zeros_like(logits), logits, ops.ones((n,)))
            d_part = self.d_optimizer.scale_loss(_global_share(ops.mean(fake_term)))
            g_part = self.g_optimizer.scale_loss(_global_share(ops.mean(self.gan_loss.generator(logits))))
        a, b = ops.reshape(tape.gradient(d_part, logits), (-1,)), ops.reshape(tape.gradient(g_part, logits), (-1,))
        del tape
        safe_a = ops.where(a == 0.0, 1.0, a)
        return ops.where(a == 0.0, 0.0, b / safe_a)

    def discriminator_loss(self, real, fake, condition, draw):
        real_logits, fake_logits = self.discriminate_pair(real, fake, condition)
        targets = self.real_targets(ops.shape(real)[0], draw)
        real_term, fake_term = self.gan_loss.discriminator(real_logits, fake_logits, targets)
        return real_logits, fake_logits, ops.mean(real_term) + ops.mean(fake_term)

    def generator_loss(self, real, fake, fake_logits, condition):
        per_example = self.gan_loss.generator(fake_logits) + self.generator_extra_loss(real, fake, condition)
        return ops.mean(per_example)

    def discriminate_pair(self, real, fake, condition):
        """D on real and fake in one batched call (one pass over D's weights, better utilisation)."""
        both = ops.concatenate([ops.cast(real, fake.dtype), fake], axis=0)
        both_cond = None if condition is None else ops.concatenate([condition, condition], axis=0)
        logits = ops.cast(self.discriminate(both, both_cond, training=True), "float32")
        n = ops.shape(real)[0]
        return logits[:n], logits[n:]

    def real_targets(self, n, draw):
        """1 - label_smoothing for real samples; 0 with probability label_flip."""
        targets = ops.full((n,), 1.0 - self.label_smoothing)
        if self.label_flip > 0.0:
            keep = tf.random.stateless_uniform((n,), seed=self.noise_seed(FLIP_DRAWS + draw)) >= self.label_flip
            targets = targets * ops.cast(keep, "float32")
        return targets

    def penalty_terms(self, real, fake, condition, draw):
        if self.gradient_penalty <= 0.0:
            return 0.0
        return self.gradient_penalty * self.gradient_penalty_value(real, fake, condition, draw)

    def gradient_penalty_value(self, real, fake, condition, draw=0):
        """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat uniformly between real and fake, in float32."""
        n = ops.shape(real)[0]
        eps = tf.random.stateless_uniform((n,) + (1,) * (len(real.shape) - 1), seed=self.noise_seed(PENALTY_DRAWS + draw))
        mixed = eps * ops.cast(real, "float32") + (1.0 - eps) * ops.cast(fake, "float32")
        with tf.GradientTape() as tape:
            tape.watch(mixed)
            critic = ops.sum(ops.cast(self.discriminate(mixed, condition, training=True), "float32"))
        grads = ops.reshape(ops.cast(tape.gradient(critic, mixed), "float32"), (n, -1))
        norms = ops.sqrt(ops.sum(ops.square(grads), axis=1) + 1e-12)
        return ops.mean(ops.square(norms - 1.0))

    # ------------------------------------------------------------ randomness

    def noise_seed(self, draw):
        """A stateless seed unique to (seed, step, draw, replica): reproducible and resumable."""
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        first = ops.cast(self.seed * 1009 + replica_id, "int64")
        second = ops.cast(self.step, "int64") * DRAWS_PER_STEP + draw
        return ops.stack([first, second])

    def sample_latent(self, n, draw):
        return tf.random.stateless_normal((n, self.latent_dim), seed=self.noise_seed(draw))

    # -------------------------------------------------------------- EMA, metrics

    def update_ema(self):
        decay = self.ema_decay
        for ema, weight in zip(self.ema_weights, self.generator.weights):
            target = weight.value if not weight.trainable else decay * ema.value + (1.0 - decay) * weight.value
            ema.assign(target)

    def ema_generator(self):
        """A copy of the generator carrying the EMA weights (BN statistics copied as they are)."""
        if not self.ema_weights:
            raise ValueError("this GAN was built without ema_decay")
        clone = keras.models.clone_model(self.generator)
        clone.set_weights([ops.convert_to_numpy(w.value) for w in self.ema_weights])
        return clone

    def record(self, stats):
        for name, tracker in self.trackers.items():
            tracker.update_state(stats[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def checkpoint(self) -> tf.train.Checkpoint:
        """Both networks, both optimizers' state, the EMA weights and the step counter."""
        return tf.train.Checkpoint(gan=self, d_optimizer=self.d_optimizer, g_optimizer=self.g_optimizer,
                                   ema_weights=list(self.ema_weights))


def _discriminator_stats(real_logits, fake_logits):
    """D(x), D(G(z)), accuracy at 0.5, V(D, G) and its Jensen-Shannon estimate (V + log 4) / 2."""
    real_logits = ops.reshape(real_logits, (-1,))
    fake_logits = ops.reshape(fake_logits, (-1,))
    value = -ops.mean(ops.softplus(-real_logits)) - ops.mean(ops.softplus(fake_logits))
    correct = ops.concatenate([ops.cast(real_logits > 0, "float32"), ops.cast(fake_logits < 0, "float32")], axis=0)
    return {
        "d_real": ops.mean(ops.sigmoid(real_logits)),
        "d_fake": ops.mean(ops.sigmoid(fake_logits)),
        "d_accuracy": ops.mean(correct),
        "value": value,
        "js": (value + LOG4) / 2.0,
    }


def _regularization(network):
    return ops.sum(ops.stack([ops.cast(loss, "float32") for loss in network.losses])) if network.losses else 0.0


def _global_share(loss):
    """This replica's share of a global-batch mean: the optimizers sum gradients over replicas."""
    return loss / tf.distribute.get_strategy().num_replicas_in_sync


def _apply(optimizer, grads, variables):
    """LossScaleOptimizer unscales here, and skips the step (halving the scale) if not finite."""
    optimizer.apply_gradients(zip(grads, variables))


def _slice(tensor, k, size):
    """Slice k of ``size`` rows; the whole tensor when size is None (keeps static shapes)."""
    if tensor is None or size is None:
        return tensor
    return tensor[k * size:(k + 1) * size]


def _loss_scaled(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def _check_range(name, value, low, high):
    if not low <= value <= high:
        raise ValueError(f"{name}={value!r} is outside [{low}, {high}]")
