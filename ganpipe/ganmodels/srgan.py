"""SRGAN (Ledig et al. 2017): super-resolution by a residual generator and a conv discriminator.

G maps a low-resolution image ``lowres`` [N, h, w, C] in [-1, 1] to [N, s*h, s*w, C] in [-1, 1]
(s = 2 or 4): a 9x9 conv, B residual blocks (conv-BN-PReLU-conv-BN + skip), a long skip, then one
sub-pixel step per factor 2 (conv to 4x channels with ICNR initialisation, depth-to-space, PReLU)
and a 9x9 conv with tanh.
G is fully convolutional, so it upscales images of any size. With ``bicubic_skip`` (default on;
not in the paper: global residual learning as in VDSR, Kim et al. 2016) G's last conv starts at
zero and its output is added to the bicubic upscaling, so G starts as the bicubic baseline and
learns the missing detail; training on a CPU budget beats bicubic within minutes this way. D is the
paper's stack of 3x3 convs (stride 1 and 2 in turn, widths doubling, BN, LeakyReLU), a dense
layer and one logit.

G's loss per example = ``pixel_weight`` * log(pixel MSE) + ``feature_weight`` * VGG feature MSE (only
when a VGG19 weights file is given; features scaled by 1/12.75 as in the paper; never downloaded)
+ ``adversarial_weight`` (default 1e-3) * the adversarial loss. There is no noise: G is
deterministic given the low-resolution image. The paper starts SRGAN from a generator trained on
the content loss alone (SRResNet): ``pretrain_steps`` > 0 does that within one run, G's adversarial
term is off for the first that many steps (D trains throughout). Without it the adversarial
gradients dominate G's early updates and PSNR falls below bicubic before it rises.

The pixel term is the log of each example's MSE (not in the paper): PSNR, the usual measure, is
the mean over images of -10 log10 MSE, and plain MSE lets the few textured patches dominate, so G
learned to add faint noise to smooth ones (sky) and fell below bicubic on mean PSNR; the log weighs
every patch by its relative error. Its gradients are ~1/MSE times larger than plain MSE's, so the
adversarial term counts for less at the same ``adversarial_weight``.
"""
from __future__ import annotations

import math
import os

import keras
from keras import layers, ops

from ganpipe.ganmodels.gan import GAN
from ganpipe.ganmodels.lapgan import ClipUnit
from ganpipe.ganmodels.networks import register_family, regularizer

VGG_FEATURE_SCALE = 1.0 / 12.75  # Ledig et al.: rescales VGG feature maps to match the pixel loss
PIXEL_MSE_FLOOR = 1e-6  # keeps log(pixel MSE) finite for a perfect upscaling


@keras.saving.register_keras_serializable(package="ganpipe")
class PixelShuffle(layers.Layer):
    """Sub-pixel upsampling (Shi et al. 2016): [N, h, w, r*r*C] -> [N, r*h, r*w, C]."""

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        return ops.depth_to_space(x, self.factor)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        h, w = (None if side is None else side * self.factor for side in (h, w))
        return (n, h, w, c // self.factor**2)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="ganpipe")
class ICNR(keras.initializers.Initializer):
    """ICNR (Aitken et al. 2017) for the conv before a ``PixelShuffle(factor)``: every group of
    factor^2 output channels that depth-to-space spreads over one block starts with the same kernel,
    so the shuffle starts as nearest-neighbour upsampling, free of checkerboard artifacts."""

    def __init__(self, factor=2, seed=None):
        self.factor = int(factor)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        *window, channels_in, channels_out = shape
        base = keras.initializers.GlorotUniform(self.seed)((*window, channels_in, channels_out // self.factor**2), dtype)
        # depth_to_space puts input channel k at sub-pixel k // C, output channel k % C: tile, not repeat
        return ops.tile(base, (1, 1, 1, self.factor**2))

    def get_config(self):
        return {"factor": self.factor, "seed": self.seed}


def bicubic_upscale(lowres, scale):
    """The classic baseline: bicubic interpolation of [-1, 1] images, clipped to [-1, 1]."""
    lowres = ops.convert_to_tensor(lowres, dtype="float32")
    return ops.clip(layers.UpSampling2D(scale, interpolation="bicubic")(lowres), -1.0, 1.0)


class SRGAN(GAN):
    """Batches are ``(lowres, highres)``; D tells real high-resolution images from G's upscaling.

    Args: the core GAN's (``latent_dim`` is not used), plus ``adversarial_weight``,
    ``pixel_weight``, ``feature_weight``, ``vgg_weights`` (path to Keras VGG19 weights without the
    top, e.g. ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``), ``vgg_layer`` and
    ``pretrain_steps`` (content-only generator steps first).
    """

    def __init__(self, generator, discriminator, latent_dim=0, *, adversarial_weight=1e-3, pixel_weight=1.0,
                 feature_weight=1.0, vgg_weights=None, vgg_layer="block5_conv4", pretrain_steps=0, **kwargs):
        super().__init__(generator, discriminator, latent_dim, **kwargs)
        self.adversarial_weight = float(adversarial_weight)
        self.pretrain_steps = int(pretrain_steps)
        self.pixel_weight = float(pixel_weight)
        self.feature_weight = float(feature_weight)
        highres_shape = tuple(discriminator.inputs[0].shape[1:])
        self.scale = 2 ** sum(isinstance(layer, PixelShuffle) for layer in generator.layers)
        self.feature_network = vgg_features(vgg_weights, vgg_layer, highres_shape) if vgg_weights else None

    def unpack(self, data):
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError("SRGAN needs (lowres, highres) batches: read the data with with_lowres=True")
        lowres, highres = data
        return highres, lowres

    def sample_latent(self, n, stream, index=0):
        return None  # G is deterministic given the low-resolution image

    def generate(self, z, condition=None, training=False):
        if condition is None:
            raise ValueError("SRGAN generates from low-resolution images, got none")
        return self.generator(condition, training=training)

    def generator_inputs(self, n, seed=0):
        raise ValueError("SRGAN's generator needs low-resolution images: pass calibration_inputs to ema_generator")

    def call(self, lowres, training=False):
        return self.generator(lowres, training=training)

    def generator_loss(self, real, fake, fake_logits, condition):
        """Content loss + ``adversarial_weight`` x the adversarial loss (0 during ``pretrain_steps``)."""
        weight = self.adversarial_weight * ops.cast(self.step >= self.pretrain_steps, "float32")
        return ops.mean(weight * self.gan_loss.generator(fake_logits) + self.content_loss(real, fake))

    def content_loss(self, real, fake):
        """Content loss per example: log pixel MSE, plus VGG feature MSE when a weights file was given."""
        real, fake = ops.cast(real, "float32"), ops.cast(fake, "float32")
        content = self.pixel_weight * ops.log(_per_example_mse(real, fake) + PIXEL_MSE_FLOOR)
        if self.feature_network is not None:
            real_features = self.feature_network(_vgg_input(real), training=False)
            fake_features = self.feature_network(_vgg_input(fake), training=False)
            content += self.feature_weight * _per_example_mse(
                ops.cast(real_features, "float32") * VGG_FEATURE_SCALE, ops.cast(fake_features, "float32") * VGG_FEATURE_SCALE)
        return content


def vgg_features(weights_path, layer_name, highres_shape):
    """VGG19 (no top) loaded from ``weights_path``, cut at ``layer_name``, frozen."""
    if not os.path.isfile(weights_path):
        raise ValueError(f"SRGAN vgg_weights: no such file {weights_path!r} (weights are never downloaded)")
    vgg = keras.applications.VGG19(include_top=False, weights=weights_path, input_shape=highres_shape[:2] + (3,))
    names = [layer.name for layer in vgg.layers]
    if layer_name not in names:
        raise ValueError(f"SRGAN vgg_layer {layer_name!r} is not a VGG19 layer; choose one of {', '.join(names[1:])}")
    features = keras.Model(vgg.inputs, vgg.get_layer(layer_name).output, name="vgg_features")
    features.trainable = False
    return features


def _vgg_input(images):
    """[-1, 1] images (grey or RGB) to VGG19's input: RGB in [0, 255], then its own preprocessing."""
    if images.shape[-1] == 1:
        images = ops.concatenate([images] * 3, axis=-1)
    return keras.applications.vgg19.preprocess_input((images + 1.0) * 127.5)


def _per_example_mse(a, b):
    return ops.mean(ops.reshape(ops.square(a - b), (ops.shape(a)[0], -1)), axis=1)


# ------------------------------------------------------------------------- networks


def _prelu():
    return layers.PReLU(shared_axes=[1, 2])  # one slope per channel: works at any image size


def _normalised(h, batch_norm):
    return layers.BatchNormalization()(h) if batch_norm else h


def _residual_block(h, filters, reg, batch_norm):
    r = layers.Conv2D(filters, 3, padding="same", kernel_regularizer=reg)(h)
    r = _prelu()(_normalised(r, batch_norm))
    r = _normalised(layers.Conv2D(filters, 3, padding="same", kernel_regularizer=reg)(r), batch_norm)
    return layers.Add()([h, r])


def _discriminator_conv(h, filters, strides, normalise, reg, spectral_norm):
    conv = layers.Conv2D(filters, 3, strides=strides, padding="same", kernel_regularizer=reg)
    h = layers.SpectralNormalization(conv)(h) if spectral_norm else conv(h)
    if normalise and not spectral_norm:
        h = layers.BatchNormalization()(h)
    return layers.LeakyReLU(0.2)(h)


@register_family("srgan")
def build_srgan(data_shape, latent_dim, num_classes=0, scale=4, residual_blocks=16, filters=64, batch_norm=True,
                bicubic_skip=True, width=64, stages=4, dense_units=1024, l1=0.0, l2=0.0, spectral_norm=False):
    """SRGAN pair for high-resolution images of ``data_shape`` upscaled ``scale`` (2 or 4) times.

    G: ``residual_blocks`` blocks of ``filters`` channels, plus the bicubic upscaling when
    ``bicubic_skip``; ``batch_norm=False`` drops G's batch norm (as EDSR, Lim et al. 2017, found
    better for super-resolution; also, BN's moving statistics lag in short runs). D: ``stages`` pairs of convs (stride 1,
    then 2; widths ``width`` * 2^i), ``dense_units``, one logit; ``spectral_norm`` wraps D's convs
    and replaces its batch norm.
    """
    del latent_dim, num_classes
    if scale not in (2, 4):
        raise ValueError(f"SRGAN scale must be 2 or 4, got {scale!r}")
    if len(data_shape) != 3 or data_shape[0] % scale or data_shape[1] % scale or data_shape[2] not in (1, 3):
        raise ValueError(f"SRGAN needs images of 1 or 3 channels whose sides divide by scale={scale}, "
                         f"got shape {tuple(data_shape)}")
    reg = regularizer(l1, l2)
    channels = data_shape[2]
    lowres = keras.Input((None, None, channels), name="lowres")
    h = skip = _prelu()(layers.Conv2D(filters, 9, padding="same", kernel_regularizer=reg)(lowres))
    for _ in range(residual_blocks):
        h = _residual_block(h, filters, reg, batch_norm)
    h = _normalised(layers.Conv2D(filters, 3, padding="same", kernel_regularizer=reg)(h), batch_norm)
    h = layers.Add()([skip, h])
    for _ in range(int(math.log2(scale))):
        h = layers.Conv2D(filters * 4, 3, padding="same", kernel_initializer=ICNR(2), kernel_regularizer=reg)(h)
        h = _prelu()(PixelShuffle(2)(h))
    if bicubic_skip:
        h = layers.Conv2D(channels, 9, padding="same", kernel_initializer="zeros", kernel_regularizer=reg)(h)
        h = layers.Activation("tanh", dtype="float32", name="detail")(h)
        bicubic = layers.UpSampling2D(scale, interpolation="bicubic", dtype="float32", name="bicubic")(lowres)
        highres = ClipUnit(dtype="float32", name="highres")(layers.Add(dtype="float32")([bicubic, h]))
    else:
        h = layers.Conv2D(channels, 9, padding="same", kernel_regularizer=reg)(h)
        highres = layers.Activation("tanh", dtype="float32", name="highres")(h)
    generator = keras.Model(lowres, highres, name="generator")

    x = keras.Input(tuple(data_shape), name="image")
    h = _discriminator_conv(x, width, 1, False, reg, spectral_norm)
    for i in range(stages):
        if i:
            h = _discriminator_conv(h, width * 2**i, 1, True, reg, spectral_norm)
        h = _discriminator_conv(h, width * 2**i, 2, True, reg, spectral_norm)
    h = layers.LeakyReLU(0.2)(layers.Dense(dense_units, kernel_regularizer=reg)(layers.Flatten()(h)))
    logit = layers.Dense(1, kernel_regularizer=reg, dtype="float32", name="logit")(h)
    return generator, keras.Model(x, logit, name="discriminator")
