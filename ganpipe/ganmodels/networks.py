"""Generator/discriminator pairs, built by a registry from a family name and a few sizes.

Conventions every family follows (the GAN model, the trainer and the exporter rely on them):
- the generator maps ``z`` [N, latent_dim] (plus ``labels`` [N] for conditional families) to
  samples of ``data_shape``; images end in tanh, in [-1, 1];
- the discriminator maps samples (plus labels) to one logit per sample, [N, 1];
- the last layer of each is float32, so mixed precision never reaches the losses or outputs.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import keras
from keras import layers

from ganpipe.ganmodels.packing import MinibatchStdDev, check_packing, packed_discriminator, packed_shape

FAMILIES: dict[str, Callable] = {}


def register_family(name: str):
    """Decorator adding a builder ``fn(data_shape, latent_dim, num_classes, **sizes)`` to the registry."""

    def add(builder):
        FAMILIES[name] = builder
        return builder

    return add


def build_networks(family: str, data_shape, latent_dim: int = 64, num_classes: int = 0, **sizes):
    """Returns ``(generator, discriminator)`` for ``family``; unknown sizes are an error."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(sorted(FAMILIES))}")
    builder = FAMILIES[family]
    allowed = set(inspect.signature(builder).parameters) - {"data_shape", "latent_dim", "num_classes"}
    unknown = sorted(set(sizes) - allowed)
    if unknown:
        raise ValueError(f"model family {family!r} has no option {unknown[0]!r}; options: {', '.join(sorted(allowed))}")
    return builder(tuple(data_shape), latent_dim, num_classes, **sizes)


def regularizer(l1: float = 0.0, l2: float = 0.0):
    """A kernel regularizer whose loss joins only its own network's loss (see GAN.train_step)."""
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def upsampling_plan(size: int) -> tuple[int, int]:
    """Splits an image side into (start side, number of x2 upsamplings), start side 3..7.

    32 -> (4, 3), 28 -> (7, 2), 48 -> (6, 3), 8 -> (4, 1).
    """
    if not 8 <= size <= 1024:
        raise ValueError(f"image size {size} is outside 8..1024")
    start, doublings = size, 0
    while start % 2 == 0 and start >= 8:
        start, doublings = start // 2, doublings + 1
    if start > 7:
        raise ValueError(f"image size {size} must be a side of 3..7 pixels doubled at least once (e.g. 28, 32, 48, 64)")
    return start, doublings


@register_family("mlp")
def build_mlp(data_shape, latent_dim, num_classes=0, hidden=(256, 256), dropout=0.0, l1=0.0, l2=0.0,
              output_activation="auto", minibatch_std=0):
    """Vanilla GAN (Goodfellow et al. 2014): two MLPs. Works for images and tabular vectors.

    ``output_activation='auto'`` is tanh for images (rank 3) and linear for standardised vectors.
    ``minibatch_std`` > 1 appends D's minibatch-std feature (groups of that many) before its logit.
    """
    del num_classes
    if output_activation == "auto":
        output_activation = "tanh" if len(data_shape) == 3 else "linear"
    reg = regularizer(l1, l2)
    z = keras.Input((latent_dim,), name="latent")
    h = z
    for units in hidden:
        h = layers.Dense(units, kernel_regularizer=reg)(h)
        h = layers.LeakyReLU(0.2)(h)
    h = layers.Dense(math.prod(data_shape), kernel_regularizer=reg)(h)
    h = layers.Activation(output_activation, dtype="float32")(h)
    generator = keras.Model(z, layers.Reshape(data_shape, dtype="float32")(h), name="generator")

    x = keras.Input(data_shape, name="sample")
    h = layers.Flatten()(x)
    for units in reversed(hidden):
        h = layers.Dense(units, kernel_regularizer=reg)(h)
        h = layers.LeakyReLU(0.2)(h)
        if dropout:
            h = layers.Dropout(dropout)(h)
    if minibatch_std:
        h = MinibatchStdDev(minibatch_std)(h)
    logit = layers.Dense(1, kernel_regularizer=reg, dtype="float32", name="logit")(h)
    return generator, keras.Model(x, logit, name="discriminator")


def dcgan_generator_body(h, data_shape, width, reg):
    """From a flat code ``h`` to an image: project, then strided transposed convs with BN + ReLU."""
    size, channels = data_shape[0], data_shape[2]
    start, doublings = upsampling_plan(size)
    filters = min(width * 2 ** (doublings - 1), 512)
    h = layers.Dense(start * start * filters, use_bias=False, kernel_regularizer=reg)(h)
    h = layers.Reshape((start, start, filters))(h)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    for _ in range(doublings - 1):
        filters = max(filters // 2, 8)
        h = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False, kernel_regularizer=reg)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
    h = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", kernel_regularizer=reg)(h)
    return layers.Activation("tanh", dtype="float32", name="image")(h)


def dcgan_discriminator_body(x, width, dropout, reg, spectral_norm=False, minibatch_std=0):
    """Strided convs with LeakyReLU(0.2) down to a 3..7 pixel map (plus the minibatch-std feature
    map when ``minibatch_std`` > 1, as in ProGAN), flattened to a feature vector."""
    start, doublings = upsampling_plan(x.shape[1])
    h = x
    for i in range(doublings):
        conv = layers.Conv2D(min(width * 2**i, 512), 4, strides=2, padding="same", kernel_regularizer=reg)
        h = layers.SpectralNormalization(conv)(h) if spectral_norm else conv(h)
        h = layers.LeakyReLU(0.2)(h)
        if dropout:
            h = layers.Dropout(dropout)(h)
    if minibatch_std:
        h = MinibatchStdDev(minibatch_std)(h)
    return layers.Flatten()(h)


def _check_image_shape(data_shape):
    # Any channel count: a packed discriminator (PacGAN) sees m images stacked on the channels.
    if len(data_shape) != 3 or data_shape[0] != data_shape[1] or data_shape[2] < 1:
        raise ValueError(f"DCGAN needs square images, got shape {tuple(data_shape)}")


@register_family("dcgan")
def build_dcgan(data_shape, latent_dim, num_classes=0, width=64, dropout=0.0, l1=0.0, l2=0.0,
                spectral_norm=False, minibatch_std=0):
    """DCGAN (Radford et al. 2015) for square images of 8..128+ pixels, 1 or 3 channels.

    ``width`` is D's first conv width; each stride-2 level doubles it (capped at 512), and G
    mirrors D. Spectral normalisation on D's convs is optional.
    """
    del num_classes
    _check_image_shape(data_shape)
    reg = regularizer(l1, l2)
    z = keras.Input((latent_dim,), name="latent")
    generator = keras.Model(z, dcgan_generator_body(z, data_shape, width, reg), name="generator")
    x = keras.Input(data_shape, name="image")
    features = dcgan_discriminator_body(x, width, dropout, reg, spectral_norm, minibatch_std)
    logit = layers.Dense(1, kernel_regularizer=reg, dtype="float32", name="logit")(features)
    return generator, keras.Model(x, logit, name="discriminator")


PACKABLE_FAMILIES = ("mlp", "dcgan", "maxout_mlp")


def build_packed_discriminator(family: str, data_shape, latent_dim: int, packing: int, **sizes) -> keras.Model:
    """The family's discriminator built for packs of ``packing`` samples, wrapped by
    ``packed_discriminator``. Conditional and multi-scale families score one sample with its label
    or pyramid level, so they are not packed."""
    check_packing(packing)
    if family not in PACKABLE_FAMILIES:
        raise ValueError(f"packing={packing}: model family {family!r} cannot be packed; "
                         f"use one of {', '.join(PACKABLE_FAMILIES)}")
    _, inner = build_networks(family, packed_shape(data_shape, packing), latent_dim, **sizes)
    inner.name = "packed_inner"
    return packed_discriminator(inner, data_shape, packing)
