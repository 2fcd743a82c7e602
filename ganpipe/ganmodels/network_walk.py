"""What a network is made of: every layer, nested models and wrapped layers included, and the
questions the GAN asks of them (cross-sample layers, spectral norm, convolutions, state that a
forward pass writes)."""
from __future__ import annotations

import contextlib

import keras
from keras import ops


def all_layers(model) -> list:
    """Every layer of ``model``, nested models and wrapped layers (SpectralNormalization's) included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def batch_norm_layers(model) -> list:
    return [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def couples_samples(network) -> bool:
    """Whether one sample's output can depend on other samples of the batch: BatchNorm, or a
    layer that declares ``couples_samples = True`` (e.g. minibatch statistics)."""
    return any(isinstance(layer, keras.layers.BatchNormalization) or getattr(layer, "couples_samples", False)
               for layer in all_layers(network))


def has_spectral_norm(network) -> bool:
    return any(isinstance(layer, keras.layers.SpectralNormalization) for layer in all_layers(network))


def has_convolutions(*models) -> bool:
    return any("Conv" in type(layer).__name__ for model in models for layer in all_layers(model))


@contextlib.contextmanager
def frozen_state(network):
    """Keeps every variable of ``network`` as it is across the block, though the block runs it
    in training mode: BatchNorm keeps its moving statistics, Keras' SpectralNormalization its
    power-iteration vector u and its kernel (which it rewrites as W / sigma(W) on every
    training-mode call). Inside, BatchNorm normalises with the batch's statistics and spectral
    norm takes one power-iteration step, as in D's own step."""
    written = variables_written_by_forward(network)
    saved = [ops.copy(variable.value) for variable in written]
    yield
    for variable, value in zip(written, saved):
        variable.assign(value)


def variables_written_by_forward(network) -> list:
    written = []
    for layer in all_layers(network):
        if isinstance(layer, keras.layers.BatchNormalization):
            written += [layer.moving_mean, layer.moving_variance]
        elif isinstance(layer, keras.layers.SpectralNormalization):
            written += [layer.vector_u, layer.kernel]
    return written


def recompute_batch_statistics(model, norms, inputs):
    """Sets each BatchNorm's moving mean and variance to its batch statistics over ``inputs``
    in one training-mode pass (momentum 0 for that pass)."""
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        model(inputs, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
