"""Class-conditional GAN (Mirza & Osindero 2014) with an optional projection discriminator
(Miyato & Koyama 2018), for images (DCGAN bodies) and vectors (MLP bodies).

Both networks take a second input, the integer class ``label`` [N]:
- G: ``[latent, label] -> sample``; the label's embedding is concatenated to z (``concat``) or
  multiplies z element-wise (``multiply``, one learned gain per latent unit and class);
- D: ``[sample, label] -> logit``; ``projection`` scores ``psi(phi(x)) + <V y, phi(x)>`` on D's
  feature vector phi(x) (V: a learned vector per class), ``concat`` feeds the label's embedding in
  with the sample (as an extra image channel, or extra vector features).

Projection D and the paper: with ``spectral_norm`` every layer of D is spectrally normalised,
psi and the class embedding V included, as in Miyato & Koyama. One deviation: phi(x) is the
flattened last feature map of the DCGAN body (or the MLP's last hidden layer), not a global sum
over positions of a ResNet's ReLU features: the DCGAN body ends at a 3..7 pixel map for small
images, and flattening keeps where a feature is, as DCGAN's own D does.
The Input names ``latent``, ``label`` (G) and ``sample``/``image``, ``label`` (D) are part of the
contract: the exporter builds its ``serving_default`` signature from them.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from ganpipe.ganmodels.gan import GAN
from ganpipe.ganmodels.networks import (dcgan_discriminator_body, dcgan_generator_body, register_family,
                                        regularizer)

GENERATOR_CONDITIONING = ("concat", "multiply")
DISCRIMINATOR_CONDITIONING = ("projection", "concat")


class ConditionalGAN(GAN):
    """A GAN whose batches are ``(samples, labels)`` and whose G and D both see the labels.

    The D step judges real samples with their true labels against fakes generated for the same
    labels; the G step generates for the batch's labels too, so G learns p(x | y) with the data's
    class frequencies. All other options are the core GAN's.
    """

    def __init__(self, generator, discriminator, latent_dim, num_classes, **kwargs):
        super().__init__(generator, discriminator, latent_dim, **kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"a conditional GAN needs num_classes >= 2, got {num_classes!r}")
        self.num_classes = int(num_classes)

    def unpack(self, data):
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError("ConditionalGAN needs (samples, labels) batches: read the data with with_labels=True")
        samples, labels = data
        return samples, ops.cast(labels, "int32")

    def generate(self, z, condition=None, training=False):
        return self.generator([z, _required_labels(condition)], training=training)

    def discriminate(self, samples, condition=None, training=False):
        return self.discriminator([samples, _required_labels(condition)], training=training)

    def call(self, inputs, training=False):
        """``[z, labels] -> samples``."""
        z, labels = inputs
        return self.generate(z, labels, training=training)

    def generator_inputs(self, n, seed=0):
        """``[z, labels]`` with the classes in turn (equal shares)."""
        labels = ops.arange(n, dtype="int32") % self.num_classes
        return [keras.random.normal((n, self.latent_dim), seed=seed), labels]

    def grid_labels(self, per_class: int):
        """Labels ``0,0,..,1,1,..`` (``per_class`` of each): one row per class in a sample grid."""
        return ops.repeat(ops.arange(self.num_classes, dtype="int32"), per_class)

    def sample(self, labels, seed: int = 0, generator=None):
        """Samples for the given integer labels from noise drawn with ``seed`` (G in inference mode)."""
        labels = ops.convert_to_tensor(labels, dtype="int32")
        z = keras.random.normal((ops.shape(labels)[0], self.latent_dim), seed=seed)
        return (generator or self.generator)([z, labels], training=False)


def _required_labels(condition):
    if condition is None:
        raise ValueError("a conditional GAN needs labels to generate or discriminate")
    return condition


# ------------------------------------------------------------------------- networks


def _label_input():
    return keras.Input((), dtype="int32", name="label")


def _conditioned_latent(z, labels, num_classes, latent_dim, mode, embedding_dim):
    if mode == "concat":
        return layers.Concatenate(name="latent_and_label")([z, layers.Embedding(num_classes, embedding_dim)(labels)])
    gains = layers.Embedding(num_classes, latent_dim, embeddings_initializer="ones", name="label_gain")(labels)
    return layers.Multiply(name="modulated_latent")([z, gains])


def _mlp_generator_body(h, data_shape, hidden, reg):
    for units in hidden:
        h = layers.LeakyReLU(0.2)(layers.Dense(units, kernel_regularizer=reg)(h))
    h = layers.Dense(math.prod(data_shape), kernel_regularizer=reg)(h)
    h = layers.Activation("tanh" if len(data_shape) == 3 else "linear", dtype="float32")(h)
    return layers.Reshape(data_shape, dtype="float32", name="sample")(h)


def _mlp_discriminator_body(h, hidden, dropout, reg, spectral_norm):
    h = layers.Flatten()(h)
    for units in reversed(hidden):
        dense = layers.Dense(units, kernel_regularizer=reg)
        h = layers.LeakyReLU(0.2)(layers.SpectralNormalization(dense)(h) if spectral_norm else dense(h))
        if dropout:
            h = layers.Dropout(dropout)(h)
    return h


def _label_as_input(x, labels, num_classes, embedding_dim):
    """``concat`` D: the label's embedding as one extra image channel, or extra vector features."""
    if len(x.shape) == 4:
        height, width = x.shape[1], x.shape[2]
        plane = layers.Embedding(num_classes, height * width, name="label_plane")(labels)
        plane = layers.Reshape((height, width, 1))(plane)
        return layers.Concatenate(name="image_and_label")([x, plane])
    flat = layers.Flatten()(x) if len(x.shape) > 2 else x
    return layers.Concatenate(name="sample_and_label")([flat, layers.Embedding(num_classes, embedding_dim)(labels)])


def _conditional_logit(features, labels, num_classes, mode, reg, spectral_norm):
    """psi(phi) (+ <V y, phi> for ``projection``), both linear maps spectrally normalised with
    ``spectral_norm`` as in Miyato & Koyama. The class embedding V is a bias-free Dense layer on
    the one-hot label (the same map as an Embedding) so that SpectralNormalization can wrap it."""
    def linear(layer):
        return layers.SpectralNormalization(layer) if spectral_norm else layer

    logit = linear(layers.Dense(1, kernel_regularizer=reg, dtype="float32", name="unconditional_logit"))(features)
    if mode != "projection":
        return logit
    one_hot = layers.CategoryEncoding(num_classes, output_mode="one_hot", name="label_one_hot")(labels)
    class_vector = linear(layers.Dense(features.shape[-1], use_bias=False, kernel_regularizer=reg,
                                       name="class_projection"))(one_hot)
    projection = layers.Dot(axes=1, name="projection")([class_vector, features])
    return layers.Add(dtype="float32", name="logit")([logit, projection])


@register_family("cgan")
def build_cgan(data_shape, latent_dim, num_classes, width=64, hidden=(256, 256), embedding_dim=16,
               generator_conditioning="concat", discriminator_conditioning="projection", dropout=0.0,
               l1=0.0, l2=0.0, spectral_norm=False):
    """Conditional pair: DCGAN bodies for square images, MLP bodies (``hidden``) for vectors.

    ``generator_conditioning``: ``concat`` (label embedding of ``embedding_dim`` joined to z) or
    ``multiply`` (z scaled by a per-class gain vector). ``discriminator_conditioning``:
    ``projection`` or ``concat``. ``spectral_norm`` wraps every weight layer of D: convs (images) or
    dense layers (vectors), the output layer and the class projection.
    """
    if int(num_classes) < 2:
        raise ValueError(f"model family 'cgan' needs labelled data with >= 2 classes, got num_classes={num_classes!r}")
    _check_choice("generator_conditioning", generator_conditioning, GENERATOR_CONDITIONING)
    _check_choice("discriminator_conditioning", discriminator_conditioning, DISCRIMINATOR_CONDITIONING)
    is_image = len(data_shape) == 3
    if is_image and (data_shape[0] != data_shape[1] or data_shape[2] not in (1, 3)):
        raise ValueError(f"cgan needs square images with 1 or 3 channels or vectors, got shape {tuple(data_shape)}")
    reg = regularizer(l1, l2)

    z, labels = keras.Input((latent_dim,), name="latent"), _label_input()
    h = _conditioned_latent(z, labels, num_classes, latent_dim, generator_conditioning, embedding_dim)
    out = dcgan_generator_body(h, data_shape, width, reg) if is_image else _mlp_generator_body(h, data_shape, hidden, reg)
    generator = keras.Model([z, labels], out, name="generator")

    x, labels = keras.Input(data_shape, name="image" if is_image else "sample"), _label_input()
    h = x if discriminator_conditioning == "projection" else _label_as_input(x, labels, num_classes, embedding_dim)
    if is_image:
        features = dcgan_discriminator_body(h, width, dropout, reg, spectral_norm)
    else:
        features = _mlp_discriminator_body(h, hidden, dropout, reg, spectral_norm)
    logit = _conditional_logit(features, labels, num_classes, discriminator_conditioning, reg, spectral_norm)
    return generator, keras.Model([x, labels], logit, name="discriminator")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"cgan option {name}={value!r}; choose one of {', '.join(choices)}")
