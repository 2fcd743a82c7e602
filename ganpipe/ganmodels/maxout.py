"""The networks of the 2-D mixture benchmarks of VEEGAN and PacGAN, as the ``maxout_mlp`` family.

Srivastava et al., "VEEGAN" (NeurIPS 2017) and Lin et al., "PacGAN" (NeurIPS 2018), synthetic
experiments: G has 4 hidden layers of 400 ReLU units with batch normalisation and a linear
output; D has 3 hidden layers of 200 maxout units with 5 pieces each (Goodfellow et al., "Maxout
Networks", ICML 2013) and a logit; weights ~ N(0, 0.02^2), biases 0.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from ganpipe.ganmodels.networks import register_family, regularizer
from ganpipe.ganmodels.packing import MinibatchStdDev


@keras.saving.register_keras_serializable(package="ganpipe")
class Maxout(keras.layers.Layer):
    """Dense to ``units * pieces``, then the max over each unit's ``pieces``."""

    def __init__(self, units: int, pieces: int = 5, kernel_initializer="glorot_uniform", kernel_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.units, self.pieces = int(units), int(pieces)
        self.dense = layers.Dense(self.units * self.pieces, kernel_initializer=kernel_initializer,
                                  kernel_regularizer=kernel_regularizer, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        h = self.dense(x)
        return ops.max(ops.reshape(h, (-1, self.units, self.pieces)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "pieces": self.pieces,
                "kernel_initializer": keras.initializers.serialize(self.dense.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.dense.kernel_regularizer)}


@register_family("maxout_mlp")
def build_maxout_mlp(data_shape, latent_dim, num_classes=0, g_hidden=(400, 400, 400, 400), d_hidden=(200, 200, 200),
                     pieces=5, init_std=0.02, minibatch_std=0, l1=0.0, l2=0.0):
    """G: ``g_hidden`` x (Dense, BatchNorm, ReLU) -> linear output (tanh for images); D: ``d_hidden``
    maxout layers (``pieces`` each) -> logit. ``minibatch_std`` > 1 appends the minibatch-std
    feature (groups of that many samples) before D's last hidden layer."""
    del num_classes
    reg = regularizer(l1, l2)
    init = keras.initializers.RandomNormal(stddev=init_std)
    z = keras.Input((latent_dim,), name="latent")
    h = z
    for units in g_hidden:
        h = layers.Dense(units, use_bias=False, kernel_initializer=init, kernel_regularizer=reg)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
    h = layers.Dense(math.prod(data_shape), kernel_initializer=init, kernel_regularizer=reg)(h)
    h = layers.Activation("tanh" if len(data_shape) == 3 else "linear", dtype="float32")(h)
    generator = keras.Model(z, layers.Reshape(data_shape, dtype="float32")(h), name="generator")

    x = keras.Input(data_shape, name="sample")
    h = layers.Flatten()(x)
    for i, units in enumerate(d_hidden):
        if minibatch_std and i == len(d_hidden) - 1:
            h = MinibatchStdDev(minibatch_std)(h)
        h = Maxout(units, pieces, kernel_initializer=init, kernel_regularizer=reg)(h)
    logit = layers.Dense(1, kernel_initializer=init, kernel_regularizer=reg, dtype="float32", name="logit")(h)
    return generator, keras.Model(x, logit, name="discriminator")
