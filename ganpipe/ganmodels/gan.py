"""The GAN as a Keras model whose ``train_step`` plays the alternating two-player game.

One ``train_step`` = ``d_steps`` discriminator updates, then one generator update:

    for each of the k D steps (its own slice of the real batch, fresh noise):
        D learns real (target 1, or 1 - smoothing, or 0 when flipped) vs G(z) (target 0)
    G step (fresh noise): G learns to make D say "real"; D is frozen (nothing of D changes)

With ``reuse_fakes`` the last D step and the G step become one simultaneous update on the same
fakes (``simultaneous.joint_step``). How D's gradient is computed and applied are hooks
(``discriminator_gradients``, ``apply_discriminator_gradients``); families override the others
(``unpack``, ``generate``, ``discriminate``, ``discriminator_input``, ``generator_loss``). The
EMA generator is in ``ema``, the optimizers and loss shares in ``updates``, what a network is made
of in ``network_walk``.

Losses are averaged over the *global* batch (per-replica mean / replicas), because the optimizers
sum gradients across replicas under ``tf.distribute``. Under a ``mixed_float16`` policy both
optimizers are wrapped in ``LossScaleOptimizer`` and each tape differentiates the scaled loss;
``scale_loss`` is a no-op on plain optimizers, so one code path serves every precision.

Randomness comes from named streams (``noise_seed``): each draw's seed folds the run's seed, the
replica, the step, the stream's name and an index together, so a restored checkpoint continues
with exactly the noise an uninterrupted run would have drawn, and adding a stream changes no other.
"""
from __future__ import annotations

import zlib

import keras
import tensorflow as tf
from keras import ops

from ganpipe.ganmodels import diffaugment as diff_augmentation
from ganpipe.ganmodels import losses as gan_losses
from ganpipe.ganmodels import penalties, updates
from ganpipe.ganmodels.ema import GeneratorAverage
from ganpipe.ganmodels.fast_loop import AUTO, ChunkedTraining
from ganpipe.ganmodels.network_walk import frozen_state, has_spectral_norm
from ganpipe.ganmodels.packing import packing_of
from ganpipe.ganmodels.simultaneous import SimultaneousUpdate


# The metrics of the default loss (``GAN.metric_names`` has each model's own).
METRIC_NAMES = gan_losses.get("non_saturating").metric_names


class GAN(ChunkedTraining, SimultaneousUpdate, GeneratorAverage, keras.Model):
    """Generator + discriminator trained by alternating updates in a custom ``train_step``.

    Args:
      generator: maps ``z`` [N, latent_dim] to samples (tanh images or vectors), float32 output.
      discriminator: maps samples to one logit each, float32 output.
      latent_dim: size of ``z`` ~ N(0, I).
      loss: one of ``losses.LOSSES`` (default ``non_saturating``).
      d_steps: k discriminator updates per generator update (default 5 for ``wasserstein``, as
        in WGAN-GP, else 1). The incoming batch of size B is cut into k slices of B // k rows
        (the last B mod k rows are not used): D step i trains on slice i with fresh noise (its
        own real minibatch, as in Goodfellow et al.'s Algorithm 1), and the G step uses B // k
        noise vectors. Feed batches of k x your minibatch size. A batch of fewer than k rows
        (e.g. the last one of ``fit(x.batch(64))``) gives k one-row slices taking its rows in turn.
      label_flip: probability of flipping a real target to 0 in D's step (losses with targets).
      label_smoothing: one-sided smoothing, real target 1 - label_smoothing (losses with targets).
      gradient_penalty: weight of the WGAN-GP penalty (Gulrajani et al. 2017), computed in
        float32 even under mixed precision. Default (None): 10 for ``wasserstein``, else 0.
        ``wasserstein`` with 0 needs spectral normalisation in D (another Lipschitz constraint).
      ema_decay: keep an exponential moving average of G's weights (``ema_generator()``), with
        warm-up: the decay at step t is min(ema_decay, (1 + t) / (10 + t)).
      reuse_fakes: speed option, a simultaneous-gradient update (as TF-GAN's): the last D step's
        fakes and D's forward pass on them also give G's update, instead of fresh noise through
        the updated D. Saves a G forward and a D forward pass per step, and D's second backward
        pass where that is exact (see ``joint_step``). It changes the schedule (both networks
        differentiated at the same weights); with BatchNorm in D it also changes G's objective:
        G's fakes are then normalised with statistics over D's real and fake batch together,
        not over fakes alone as in the alternating G step.
      r1, r2: weights gamma of the zero-centred gradient penalties gamma/2 E||grad D||^2 on real
        samples (R1) and on fakes (R2) (Mescheder et al. 2018), in float32; see ``penalties``.
      r1_interval: lazy regularisation (Karras et al. 2020): R1/R2 every this many D updates,
        weighted by it.
      diffaugment: DiffAugment policy (Zhao et al. 2020) for image GANs, e.g.
        ``"color,translation,cutout"``: every sample D sees in the game, real or fake, is
        augmented differentiably (own parameters per sample, stream ``diffaugment/<stream>``).
      seed: the run's seed for every noise stream.

    Packing (PacGAN) and minibatch standard deviation are parts of the discriminator network
    (``packing.packed_discriminator``, ``packing.MinibatchStdDev``; ``build_gan(packing=m)``).
    """

    def __init__(self, generator, discriminator, latent_dim, *, loss="non_saturating", d_steps=None,
                 label_flip=0.0, label_smoothing=0.0, gradient_penalty=None, ema_decay=None,
                 reuse_fakes=False, r1=0.0, r2=0.0, r1_interval=1, diffaugment=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.gan_loss = gan_losses.get(loss)
        if d_steps is None:
            d_steps = 5 if self.gan_loss.needs_lipschitz else 1
        if gradient_penalty is None:
            gradient_penalty = 10.0 if self.gan_loss.needs_lipschitz else 0.0
        _check_range("d_steps", d_steps, 1, 100)
        _check_range("label_flip", label_flip, 0.0, 1.0)
        _check_range("label_smoothing", label_smoothing, 0.0, 0.5)
        _check_range("gradient_penalty", gradient_penalty, 0.0, float("inf"))
        if ema_decay is not None:
            _check_range("ema_decay", ema_decay, 0.0, 1.0)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.d_steps = int(d_steps)
        self.label_flip = float(label_flip)
        self.label_smoothing = float(label_smoothing)
        self.gradient_penalty = float(gradient_penalty)
        self.reuse_fakes = bool(reuse_fakes)
        self.seed = int(seed)
        self.ema_decay = ema_decay
        self.zero_centred = penalties.ZeroCentredPenalty(r1, r2, r1_interval)
        self.diffaugment = diff_augmentation.parse_policy(diffaugment) if diffaugment else ()
        if self.diffaugment and len(generator.output_shape) != 4:
            raise ValueError(f"diffaugment={diffaugment!r} transforms images; this generator makes samples of "
                             f"shape {tuple(generator.output_shape[1:])}")
        self.packing = packing_of(discriminator)
        self.check_options_fit_the_loss()
        self.metric_names = self.gan_loss.metric_names
        # Generator updates so far: the global step for logs and noise, saved in checkpoints.
        self.step = keras.Variable(0, dtype="int64", trainable=False, name="step",
                                   aggregation="only_first_replica")
        self.ema_weights = self.make_ema_weights()
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.metric_names}
        self.built = True  # both networks are built; stops fit() from tracing call() on real data

    def check_options_fit_the_loss(self):
        """An option the loss would ignore is an error naming both."""
        loss = self.gan_loss.name
        if not self.gan_loss.uses_targets:
            for name in ("label_flip", "label_smoothing"):
                if getattr(self, name):
                    raise ValueError(f"{name}={getattr(self, name)} has no effect with loss={loss!r} (it has no "
                                     "real targets); use it with non_saturating, minimax or least_squares")
        if self.gan_loss.needs_lipschitz and not self.gradient_penalty and not has_spectral_norm(self.discriminator):
            raise ValueError(f"loss={loss!r} needs a Lipschitz critic: set gradient_penalty > 0 (default 10) "
                             "or use spectral normalisation in the discriminator, not gradient_penalty=0")

    # ----------------------------------------------------------------- compile

    def compile(self, d_optimizer=None, g_optimizer=None, *, jit_compile=AUTO, steps_per_execution=AUTO, **kwargs):
        """Sets both optimizers (default Adam(2e-4, 0.5, 0.999)); float16 wraps them in loss scaling.
        ``"auto"`` steps per execution and XLA: see ``fast_loop``."""
        super().compile(jit_compile=jit_compile, steps_per_execution=steps_per_execution, **kwargs)
        d_optimizer = d_optimizer or updates.default_optimizer()
        g_optimizer = g_optimizer or updates.default_optimizer()
        if self.uses_float16():
            d_optimizer = updates.loss_scaled(d_optimizer)
            g_optimizer = updates.loss_scaled(g_optimizer)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def networks_for_auto_jit(self):
        return [self.generator, self.discriminator]

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

    def discriminator_input(self, samples, condition, stream):
        """What D sees of a batch in the game (all D calls of D's and G's steps, not the penalty):
        the place for transforms such as augmentation or packing; ``stream`` names the draw."""
        if self.diffaugment:
            samples = diff_augmentation.diff_augment(samples, self.noise_seed(f"diffaugment/{stream}"), self.diffaugment)
        return samples, condition

    def generator_loss(self, real, fake, fake_logits, condition):
        """G's loss, mean over examples: the adversarial loss (+ a family's extra terms)."""
        return ops.mean(self.gan_loss.generator(fake_logits))

    def discriminator_penalty(self, real, fake, condition, index):
        """Terms added to D's loss: the WGAN-GP gradient penalty and R1/R2."""
        total = 0.0
        if self.gradient_penalty:
            total = self.gradient_penalty * self.gradient_penalty_value(real, fake, condition, index)
        if self.zero_centred.active:
            scale = self.d_optimizer.dynamic_scale if self.uses_float16() else 1.0
            total += self.zero_centred(lambda x: self.discriminate(x, condition, training=True), real, fake,
                                       d_update=ops.cast(self.step, "int64") * self.d_steps + index,
                                       packing=self.packing, loss_scale=scale)
        return total

    def penalty_reads_fakes(self) -> bool:
        """Whether ``discriminator_penalty`` depends on the fakes (then D's gradient at the fakes
        is not only its loss's, and ``joint_step`` needs its second backward pass)."""
        return self.gradient_penalty > 0.0 or self.zero_centred.r2 > 0.0

    def call(self, z, training=False):
        return self.generate(z, training=training)

    # -------------------------------------------------------------- the game

    def train_step(self, data):
        """D on real and fake (``d_steps`` times, each on its slice of the batch), then G through
        the updated, frozen D; with ``reuse_fakes`` the last D step also gives G's update. The
        logged D metrics are their means over the D steps."""
        real, condition = self.unpack(data)
        slices = self.discriminator_slices(real, condition)
        d_stats = []
        for k, (real_k, condition_k) in enumerate(slices):
            step = self.joint_step if self.reuse_fakes and k == self.d_steps - 1 else self.discriminator_step
            d_stats.append(step(real_k, condition_k, k))
        stats = _mean_over_steps(d_stats)
        if not self.reuse_fakes:
            stats["g_loss"] = self.generator_step(*slices[0])
        self.update_ema()
        self.step.assign_add(1)
        return self.record(stats)

    def discriminator_step(self, real, condition, index):
        """One D update: ``real`` (target 1) vs fresh fakes (target 0); only D's variables change."""
        fake = self.generate(self.sample_latent(ops.shape(real)[0], "d_latent", index), condition, training=True)
        grads, (real_logits, fake_logits, d_loss) = self.discriminator_gradients(real, fake, condition, index)
        self.apply_discriminator_gradients(grads)
        return {"d_loss": d_loss, **self.gan_loss.training_metrics(real_logits, fake_logits)}

    def discriminator_gradients(self, real, fake, condition, index):
        """How D's gradient is computed (override to change it, e.g. clip per example and add
        noise): the gradient of ``discriminator_objective`` on this real batch and these fakes,
        one tensor per ``discriminator.trainable_variables``, returned with (real logits, fake
        logits, D's loss) for the metrics. ``joint_step`` (``reuse_fakes``) takes D's gradient
        from its own shared tape instead, so an override must refuse ``reuse_fakes``."""
        with tf.GradientTape() as tape:
            real_logits, fake_logits, d_loss = self.discriminator_loss(real, fake, condition, index)
            d_total = self.discriminator_objective(d_loss, real, fake, condition, index)
        return tape.gradient(d_total, self.discriminator.trainable_variables), (real_logits, fake_logits, d_loss)

    def apply_discriminator_gradients(self, grads):
        """One optimizer step of D (loss-scaled gradients are unscaled here)."""
        updates.apply(self.d_optimizer, grads, self.discriminator.trainable_variables)

    def generator_step(self, real, condition):
        """One G update through the just-updated D, which stays exactly as it is (``frozen_state``)."""
        z = self.sample_latent(ops.shape(real)[0], "g_latent")
        with frozen_state(self.discriminator), tf.GradientTape() as tape:
            fake = self.generate(z, condition, training=True)
            fake_logits = self.discriminate(*self.discriminator_input(fake, condition, "g_fake"), training=True)
            g_loss = self.generator_loss(real, fake, fake_logits, condition)
            g_total = self.generator_objective(g_loss)
        updates.apply(self.g_optimizer, tape.gradient(g_total, self.generator.trainable_variables),
                      self.generator.trainable_variables)
        return g_loss

    def discriminator_slices(self, real, condition):
        """The k (real, condition) slices of the batch, B // k rows each. A batch of fewer than k
        rows (a last partial batch) gives one-row slices that take its rows in turn."""
        if self.d_steps == 1:
            return [(real, condition)]
        rows = ops.shape(real)[0]
        if isinstance(rows, int) and rows >= self.d_steps:  # static shapes: plain slices
            size = rows // self.d_steps
            return [(_rows(real, k * size, size), _rows(condition, k * size, size)) for k in range(self.d_steps)]
        size = ops.maximum(rows // self.d_steps, 1)
        picks = [(k * size + ops.arange(size)) % rows for k in range(self.d_steps)]
        return [(_take(real, pick), _take(condition, pick)) for pick in picks]

    def discriminator_objective(self, d_loss, real, fake, condition, index):
        """What D's tape differentiates: loss + penalties + D's weight penalties, as this replica's
        loss-scaled share of the global batch."""
        penalty = self.discriminator_penalty(real, fake, condition, index)
        total = d_loss + penalty + updates.regularization(self.discriminator)
        return self.d_optimizer.scale_loss(updates.global_share(total))

    def generator_objective(self, g_loss):
        """What G's tape differentiates: ``g_loss`` + G's weight penalties, scaled like D's."""
        return self.g_optimizer.scale_loss(updates.global_share(g_loss + updates.regularization(self.generator)))

    def discriminator_loss(self, real, fake, condition, index):
        real_logits, fake_logits = self.discriminate_pair(real, fake, condition, index)
        targets = self.real_targets(ops.shape(real_logits)[0], index)
        real_term, fake_term = self.gan_loss.discriminator(real_logits, fake_logits, targets)
        return real_logits, fake_logits, ops.mean(real_term) + ops.mean(fake_term)

    def discriminate_pair(self, real, fake, condition, index):
        """D on real and fake in one batched call (one pass over D's weights, better utilisation)."""
        real, real_condition = self.discriminator_input(ops.cast(real, fake.dtype), condition, f"d_real/{index}")
        fake, fake_condition = self.discriminator_input(fake, condition, f"d_fake/{index}")
        both = ops.concatenate([real, fake], axis=0)
        both_condition = None if condition is None else ops.concatenate([real_condition, fake_condition], axis=0)
        logits = ops.cast(self.discriminate(both, both_condition, training=True), "float32")
        n = ops.shape(real)[0]
        self.check_whole_packs(n)
        return logits[:n], logits[n:]

    def check_whole_packs(self, rows):
        """With packing m the reals of a D step must form whole packs: else a pack holds real and
        fake samples, D judges the mixture and G's update through it is wrong."""
        if self.packing == 1:
            return
        fix = (f"packing={self.packing}: a D step got {{}} real samples, not a multiple of {self.packing}, so a pack "
               f"would mix real and fake; make the batch per D step (train.batch_size) a multiple of {self.packing} "
               "and give whole batches (drop_remainder=True)")
        if isinstance(rows, int):
            if rows % self.packing:
                raise ValueError(fix.format(rows))
        else:
            tf.debugging.assert_equal(rows % self.packing, 0, message=fix.format("a batch of"))

    def real_targets(self, n, index):
        """1 - label_smoothing for real samples; 0 with probability label_flip."""
        targets = ops.full((n,), 1.0 - self.label_smoothing)
        if self.label_flip > 0.0:
            draws = tf.random.stateless_uniform((n,), seed=self.noise_seed("label_flip", index))
            targets = targets * ops.cast(draws >= self.label_flip, "float32")
        return targets

    def gradient_penalty_value(self, real, fake, condition, index=0):
        """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat uniformly between real and fake, in float32."""
        n = ops.shape(real)[0]
        shape = (n,) + (1,) * (len(real.shape) - 1)
        eps = tf.random.stateless_uniform(shape, seed=self.noise_seed("gradient_penalty", index))
        mixed = eps * ops.cast(real, "float32") + (1.0 - eps) * ops.cast(fake, "float32")
        with tf.GradientTape() as tape:
            tape.watch(mixed)
            critic = ops.sum(ops.cast(self.discriminate(mixed, condition, training=True), "float32"))
        grads = ops.reshape(ops.cast(tape.gradient(critic, mixed), "float32"), (n, -1))
        norms = ops.sqrt(ops.sum(ops.square(grads), axis=1) + 1e-12)
        return ops.mean(ops.square(norms - 1.0))

    # ------------------------------------------------------------ randomness

    def noise_seed(self, stream: str, index=0):
        """A stateless seed for draw ``index`` of the named ``stream`` at this step and replica."""
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        key = ops.cast(ops.stack([self.seed, replica_id]), "int64")
        for data in (ops.cast(self.step, "int64"), _stream_id(stream), index):
            key = tf.random.experimental.stateless_fold_in(key, ops.cast(data, "int64"))
        return key

    def sample_latent(self, n, stream, index=0):
        return tf.random.stateless_normal((n, self.latent_dim), seed=self.noise_seed(stream, index))

    # ------------------------------------------------------------ metrics, state

    def generator_inputs(self, n, seed=0):
        """Inputs for ``n`` generated samples (here z ~ N(0, I)); families override."""
        return keras.random.normal((n, self.latent_dim), seed=seed)

    def record(self, stats):
        for name, tracker in self.trackers.items():
            tracker.update_state(stats[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def checkpoint(self) -> tf.train.Checkpoint:
        """Both networks, both optimizers' state, the EMA weights, the step counter and the
        metric trackers' running totals (a resumed run's running means continue exactly)."""
        return tf.train.Checkpoint(gan=self, d_optimizer=self.d_optimizer, g_optimizer=self.g_optimizer,
                                   ema_weights=list(self.ema_weights), trackers=self.tracker_variables())

    def tracker_variables(self) -> list:
        return [variable for tracker in self.trackers.values() for variable in tracker.variables]


def _stream_id(name: str) -> int:
    """A fixed integer per stream name (CRC-32), so streams need no central numbering."""
    return zlib.crc32(name.encode())


def _mean_over_steps(per_step: list[dict]) -> dict:
    """Each metric's mean over the D steps that report it (one step: its values as they are)."""
    if len(per_step) == 1:
        return dict(per_step[0])
    return {name: ops.mean(ops.stack([ops.cast(stats[name], "float32") for stats in per_step if name in stats]))
            for name in per_step[-1]}


def _rows(tensor, start, size):
    return None if tensor is None else tensor[start:start + size]


def _take(tensor, rows):
    return None if tensor is None else ops.take(tensor, rows, axis=0)


def _check_range(name, value, low, high):
    if not low <= value <= high:
        raise ValueError(f"{name}={value!r} is outside [{low}, {high}]")
