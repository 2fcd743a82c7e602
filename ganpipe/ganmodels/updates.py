"""How an update reaches the weights: the optimizers (Adam with the DCGAN paper's settings, loss
scaling under float16), a replica's share of a global-batch loss, and the networks' own weight
penalties. The GAN's steps build their objectives and apply their gradients through these."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def default_optimizer(learning_rate=2e-4, beta_1=0.5, beta_2=0.999):
    """Adam with the DCGAN paper's settings."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)


def inner_optimizer(optimizer):
    """The optimizer that really steps (LossScaleOptimizer does not advance its own iterations)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def loss_scaled(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def apply(optimizer, grads, variables):
    """LossScaleOptimizer unscales here, and skips the step (halving the scale) if not finite."""
    optimizer.apply_gradients(zip(grads, variables))


def regularization(network):
    """The sum of ``network``'s weight penalties (its ``losses``), in float32."""
    return ops.sum(ops.stack([ops.cast(loss, "float32") for loss in network.losses])) if network.losses else 0.0


def global_share(loss):
    """This replica's share of a global-batch mean: the optimizers sum gradients over replicas."""
    return loss / tf.distribute.get_strategy().num_replicas_in_sync
