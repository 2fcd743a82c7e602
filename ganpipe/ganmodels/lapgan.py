"""LAPGAN (Denton et al. 2015): a Laplacian pyramid of GANs generating images coarse to fine.

Pyramid of an image I at L levels: I_{L-1} = I, I_{k-1} = down(I_k) (2x2 average), and the
band-pass residual h_k = I_k - up(I_{k-1}) (bilinear x2), so I_k = up(I_{k-1}) + h_k exactly.

- Level 0 (coarsest): an MLP GAN on I_0 from noise z_0 (fully connected, as in the paper).
- Level k > 0: G_k([z_k, l_k]) generates a residual h_k conditioned on l_k = up(I_{k-1}) (z_k
  enters as an extra noise plane); D_k([h, l_k]) judges a residual given that coarse image.

Training (like the paper) conditions every level on the *real* pyramid, so the levels are
independent games; ``LAPGAN.train_step`` plays all of them jointly, one ``GAN.train_step`` per
level (each with its own optimizers, noise stream, d_steps, loss), in one step of one Keras model.
Its metrics (``trackers``: d_loss, g_loss, ...) are the levels' values averaged step by step;
each level's own running means are in the logs as ``level_<k>_<name>``.

Sampling runs coarse to fine: I_0 = G_0(z_0), I_k = clip(up(I_{k-1}) + G_k([z_k, up(I_{k-1})])).
That chain is ONE Keras model, ``latent`` [N, latent_dim] -> image in [-1, 1], where the latent
vector is the per-level noise vectors concatenated (coarsest first), so trainer and exporter treat
it like any generator. Its companion discriminator maps a full-resolution image to the mean of the
level critics' logits on that image's own pyramid (for held-out D metrics; not used in training).
The per-level networks are named layers of these two models (``level_<k>_generator`` /
``level_<k>_discriminator``), which is how ``LAPGAN`` finds them.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from ganpipe.ganmodels.gan import GAN
from ganpipe.ganmodels.networks import dcgan_discriminator_body, register_family, regularizer


@keras.saving.register_keras_serializable(package="ganpipe")
class LatentSlice(layers.Layer):
    """Columns ``[start, start + size)`` of the latent vector: one level's noise."""

    def __init__(self, start, size, **kwargs):
        super().__init__(**kwargs)
        self.start, self.size = int(start), int(size)

    def call(self, z):
        return z[:, self.start:self.start + self.size]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "size": self.size}


@keras.saving.register_keras_serializable(package="ganpipe")
class ClipUnit(layers.Layer):
    """Clips to [-1, 1]: a coarse image plus a residual can leave the image range."""

    def call(self, x):
        return ops.clip(x, -1.0, 1.0)


def downsample(images):
    return ops.average_pool(images, pool_size=2, strides=2, padding="valid")


def upsample(images):
    height, width = images.shape[1], images.shape[2]
    return ops.image.resize(images, (2 * height, 2 * width), interpolation="bilinear")


@keras.saving.register_keras_serializable(package="ganpipe")
class Downsample(layers.Layer):
    def call(self, x):
        return downsample(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] // 2, input_shape[2] // 2, input_shape[3])


@keras.saving.register_keras_serializable(package="ganpipe")
class Upsample(layers.Layer):
    def call(self, x):
        return upsample(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * 2, input_shape[2] * 2, input_shape[3])


def laplacian_pyramid(images, levels):
    """``[I_0, (h_1, l_1), ..., (h_{L-1}, l_{L-1})]``: coarsest image, then (residual, condition)."""
    gaussians = [images]
    for _ in range(levels - 1):
        gaussians.insert(0, downsample(gaussians[0]))
    steps = [gaussians[0]]
    for k in range(1, levels):
        condition = upsample(gaussians[k - 1])
        steps.append((gaussians[k] - condition, condition))
    return steps


def level_sizes(size, levels):
    """Image sides coarse to fine, e.g. (32, 3) -> [8, 16, 32]."""
    if levels < 2:
        raise ValueError(f"LAPGAN needs levels >= 2, got {levels}")
    if size % 2 ** (levels - 1) or size // 2 ** (levels - 1) < 4:
        raise ValueError(f"LAPGAN: image side {size} cannot be halved {levels - 1} times down to >= 4 pixels; "
                         "use fewer levels or a size like 16, 32, 64")
    return [size // 2 ** (levels - 1 - k) for k in range(levels)]


def latent_split(latent_dim, levels):
    """Noise units per level, coarsest first: an even split, the remainder to the coarsest."""
    if latent_dim < 2 * levels:
        raise ValueError(f"LAPGAN: latent_dim={latent_dim} is too small for {levels} levels (need >= {2 * levels})")
    share = latent_dim // levels
    return [latent_dim - share * (levels - 1)] + [share] * (levels - 1)


# Prefix of the raw (this step's) values a level's train_step adds to its running means.
STEP_VALUE = "step_value/"


class CoarseLevelGAN(GAN):
    """Level 0's game (a plain GAN) whose logs also carry this step's raw values, so LAPGAN can
    average the levels step by step into its own trackers."""

    def record(self, stats):
        return {**super().record(stats), **{STEP_VALUE + name: stats[name] for name in self.metric_names}}


class ResidualLevelGAN(CoarseLevelGAN):
    """One finer level's game: batches are ``(residual, coarse)``, both networks see ``coarse``."""

    def unpack(self, data):
        residual, coarse = data
        return residual, coarse

    def generate(self, z, condition=None, training=False):
        return self.generator([z, condition], training=training)

    def discriminate(self, samples, condition=None, training=False):
        return self.discriminator([samples, condition], training=training)


class LAPGAN(GAN):
    """All pyramid levels as one Keras model; ``generator`` / ``discriminator`` are the chains.

    Args are the core GAN's; each level's game gets them all except ``ema_decay``, which applies
    to the whole chained generator. Level k draws its noise from seed ``seed + 7919 * k``.
    ``d_optimizer`` / ``g_optimizer`` passed to ``compile`` are templates: every level gets its
    own copy; ``self.d_optimizer`` / ``self.g_optimizer`` then name the finest level's (for logs).
    """

    def __init__(self, generator, discriminator, latent_dim, *, loss="non_saturating", d_steps=None,
                 label_flip=0.0, label_smoothing=0.0, gradient_penalty=None, ema_decay=None,
                 reuse_fakes=False, seed=0, **kwargs):
        super().__init__(generator, discriminator, latent_dim, loss=loss, d_steps=d_steps, label_flip=label_flip,
                         label_smoothing=label_smoothing, gradient_penalty=gradient_penalty,
                         ema_decay=ema_decay, reuse_fakes=reuse_fakes, seed=seed, **kwargs)
        self.levels = _count_levels(generator)
        level_options = dict(loss=loss, d_steps=d_steps, label_flip=label_flip, label_smoothing=label_smoothing,
                             gradient_penalty=gradient_penalty, reuse_fakes=reuse_fakes)
        self.level_gans = []
        for k in range(self.levels):
            level_g = generator.get_layer(f"level_{k}_generator")
            level_d = discriminator.get_layer(f"level_{k}_discriminator")
            level_class = CoarseLevelGAN if k == 0 else ResidualLevelGAN
            noise = level_g.inputs[0].shape[-1]
            self.level_gans.append(level_class(level_g, level_d, noise, seed=seed + 7919 * k,
                                               name=f"level_{k}", **level_options))

    def compile(self, d_optimizer=None, g_optimizer=None, *, jit_compile=False, steps_per_execution=1, **kwargs):
        keras.Model.compile(self, jit_compile=jit_compile, steps_per_execution=steps_per_execution, **kwargs)
        for level in self.level_gans:
            level.compile(_copy_optimizer(d_optimizer), _copy_optimizer(g_optimizer))
        self.d_optimizer, self.g_optimizer = self.level_gans[-1].d_optimizer, self.level_gans[-1].g_optimizer

    def build_optimizers(self):
        for level in self.level_gans:
            level.build_optimizers()

    @property
    def metrics(self):
        return [*self.trackers.values(), *(tracker for level in self.level_gans for tracker in level.metrics)]

    def train_step(self, data):
        """Every level's step; ``trackers`` (the logs' ``d_loss``, ...) average the levels' values."""
        images, _ = GAN.unpack(self, data)  # labels, if any, are not used
        level_logs = [level.train_step(batch)
                      for level, batch in zip(self.level_gans, laplacian_pyramid(images, self.levels))]
        if self.ema_weights:
            self.update_ema()
        self.step.assign_add(1)
        logs = self.record({name: ops.mean(ops.stack([ops.cast(log[STEP_VALUE + name], "float32")
                                                      for log in level_logs]))
                            for name in self.metric_names})
        for k, log in enumerate(level_logs):
            logs.update({f"level_{k}_{name}": log[name] for name in self.metric_names})
        return logs

    def level_images(self, z, generator=None):
        """The coarse-to-fine chain for latent ``z``: images I_0 (smallest) ... I_{L-1} (full size)."""
        chain = generator or self.generator
        z = ops.convert_to_tensor(z, dtype="float32")
        start, images = 0, []
        for k in range(self.levels):
            level_g = chain.get_layer(f"level_{k}_generator")
            size = level_g.inputs[0].shape[-1]
            noise = z[:, start:start + size]
            start += size
            if k == 0:
                images.append(level_g(noise, training=False))
            else:
                coarse = upsample(images[-1])
                images.append(ops.clip(coarse + level_g([noise, coarse], training=False), -1.0, 1.0))
        return images

    def sample(self, n, seed=0):
        """``n`` full-resolution samples, drawn coarse to fine."""
        return self.generator(keras.random.normal((n, self.latent_dim), seed=seed), training=False)

    def checkpoint(self):
        """Every level's checkpoint (networks, optimizers, step counter, trackers), plus the chain's EMA
        weights and trackers."""
        levels = [level.checkpoint() for level in self.level_gans]
        return tf.train.Checkpoint(step=self.step, levels=levels, ema_weights=list(self.ema_weights),
                                   trackers=self.tracker_variables())


def _count_levels(generator):
    names = {layer.name for layer in generator.layers}
    levels = 0
    while f"level_{levels}_generator" in names:
        levels += 1
    if levels < 2:
        raise ValueError(f"{generator.name!r} is not a LAPGAN chain: no layers named level_0_generator, level_1_generator")
    return levels


def _copy_optimizer(optimizer):
    """A fresh optimizer with ``optimizer``'s settings (None: the core's default)."""
    if optimizer is None:
        return None
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))


# ------------------------------------------------------------------------- networks


def _coarse_pair(shape, noise, hidden, reg):
    """Level 0: fully connected G and D on the smallest image."""
    z = keras.Input((noise,), name="latent")
    h = z
    for units in hidden:
        h = layers.ReLU()(layers.BatchNormalization()(layers.Dense(units, kernel_regularizer=reg)(h)))
    h = layers.Activation("tanh", dtype="float32")(layers.Dense(shape[0] * shape[1] * shape[2], kernel_regularizer=reg)(h))
    generator = keras.Model(z, layers.Reshape(shape, dtype="float32")(h), name="level_0_generator")
    x = keras.Input(shape, name="image")
    h = layers.Flatten()(x)
    for units in reversed(hidden):
        h = layers.LeakyReLU(0.2)(layers.Dense(units, kernel_regularizer=reg)(h))
    logit = layers.Dense(1, kernel_regularizer=reg, dtype="float32")(h)
    return generator, keras.Model(x, logit, name="level_0_discriminator")


def _residual_pair(k, shape, noise, width, dropout, reg, spectral_norm):
    """Level k: conv G from (noise plane, upsampled coarse image) to a residual; conv D on both."""
    size, channels = shape[0], shape[2]
    z, coarse = keras.Input((noise,), name="latent"), keras.Input(shape, name="coarse")
    plane = layers.Reshape((size, size, 1))(layers.Dense(size * size, kernel_regularizer=reg)(z))
    h = layers.Concatenate()([coarse, plane])
    for _ in range(2):
        h = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_regularizer=reg)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
    h = layers.Conv2D(channels, 3, padding="same", kernel_regularizer=reg)(h)
    residual = layers.Activation("tanh", dtype="float32", name="residual")(h)
    generator = keras.Model([z, coarse], residual, name=f"level_{k}_generator")

    sample, condition = keras.Input(shape, name="residual"), keras.Input(shape, name="coarse")
    features = dcgan_discriminator_body(layers.Concatenate()([sample, condition]), width, dropout, reg, spectral_norm)
    logit = layers.Dense(1, kernel_regularizer=reg, dtype="float32")(features)
    return generator, keras.Model([sample, condition], logit, name=f"level_{k}_discriminator")


def _chains(data_shape, latent_dim, pairs, noises):
    """The sampling chain ``latent -> image`` and the pyramid critic ``image -> mean logit``."""
    z = keras.Input((latent_dim,), name="latent")
    starts = [sum(noises[:k]) for k in range(len(noises))]
    image = pairs[0][0](LatentSlice(starts[0], noises[0])(z))
    for k in range(1, len(pairs)):
        coarse = Upsample()(image)
        residual = pairs[k][0]([LatentSlice(starts[k], noises[k])(z), coarse])
        image = ClipUnit(dtype="float32")(layers.Add()([coarse, residual]))
    generator = keras.Model(z, image, name="generator")

    x = keras.Input(data_shape, name="image")
    gaussians = [x]
    for _ in range(len(pairs) - 1):
        gaussians.insert(0, Downsample()(gaussians[0]))
    logits = [pairs[0][1](gaussians[0])]
    for k in range(1, len(pairs)):
        coarse = Upsample()(gaussians[k - 1])
        logits.append(pairs[k][1]([layers.Subtract()([gaussians[k], coarse]), coarse]))
    logit = layers.Average(dtype="float32", name="logit")(logits)
    return generator, keras.Model(x, logit, name="discriminator")


@register_family("lapgan")
def build_lapgan(data_shape, latent_dim, num_classes=0, levels=3, width=64, hidden=(512, 512), dropout=0.0,
                 l1=0.0, l2=0.0, spectral_norm=False):
    """LAPGAN pair for square images whose side halves ``levels - 1`` times to >= 4 pixels.

    ``hidden``: the coarsest level's fully connected widths. ``width``: conv width of the finer
    levels' G and of their D's first conv. ``spectral_norm`` wraps the finer levels' D convs.
    """
    del num_classes
    if len(data_shape) != 3 or data_shape[0] != data_shape[1] or data_shape[2] not in (1, 3):
        raise ValueError(f"LAPGAN needs square images with 1 or 3 channels, got shape {tuple(data_shape)}")
    sizes = level_sizes(data_shape[0], levels)
    noises = latent_split(latent_dim, levels)
    reg = regularizer(l1, l2)
    channels = data_shape[2]
    pairs = [_coarse_pair((sizes[0], sizes[0], channels), noises[0], hidden, reg)]
    for k in range(1, levels):
        pairs.append(_residual_pair(k, (sizes[k], sizes[k], channels), noises[k], width, dropout, reg, spectral_norm))
    return _chains(tuple(data_shape), latent_dim, pairs, noises)
