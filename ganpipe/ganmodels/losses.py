"""GAN losses, computed from D's logits in a numerically stable way.

Every loss is a pair of functions returning per-example values (shape [N]); the train step
averages them over the global batch, so they stay correct under ``tf.distribute``.

With l a logit and D = sigmoid(l):  -log D = softplus(-l)  and  -log(1 - D) = softplus(l).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from keras import ops


def _flat_logits(logits):
    return ops.reshape(ops.cast(logits, "float32"), (-1,))


def bce_from_logits(logits, targets):
    """Per-example binary cross-entropy with (possibly soft) targets in [0, 1]."""
    logits = _flat_logits(logits)
    return targets * ops.softplus(-logits) + (1.0 - targets) * ops.softplus(logits)


def bce_discriminator(real_logits, fake_logits, real_targets):
    """-E[t log D(x) + (1 - t) log(1 - D(x))] - E[log(1 - D(G(z)))], t = 1 unless smoothed/flipped."""
    real = bce_from_logits(real_logits, real_targets)
    fake = ops.softplus(_flat_logits(fake_logits))
    return real, fake


def minimax_generator(fake_logits):
    """G minimises E[log(1 - D(G(z)))] (saturates when D rejects the fakes confidently)."""
    return -ops.softplus(_flat_logits(fake_logits))


def non_saturating_generator(fake_logits):
    """G minimises -E[log D(G(z))], same fixed point, strong gradients early on."""
    return ops.softplus(-_flat_logits(fake_logits))


def wasserstein_discriminator(real_logits, fake_logits, real_targets):
    """Critic: E[D(G(z))] - E[D(x)]; needs a Lipschitz constraint (gradient penalty)."""
    del real_targets
    return -_flat_logits(real_logits), _flat_logits(fake_logits)


def wasserstein_generator(fake_logits):
    return -_flat_logits(fake_logits)


def hinge_discriminator(real_logits, fake_logits, real_targets):
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    del real_targets
    return ops.relu(1.0 - _flat_logits(real_logits)), ops.relu(1.0 + _flat_logits(fake_logits))


def least_squares_discriminator(real_logits, fake_logits, real_targets):
    """LSGAN with a=0, b=t (1 unless smoothed/flipped): 1/2 E[(D(x) - t)^2] + 1/2 E[D(G(z))^2]."""
    real = 0.5 * ops.square(_flat_logits(real_logits) - real_targets)
    return real, 0.5 * ops.square(_flat_logits(fake_logits))


def least_squares_generator(fake_logits):
    return 0.5 * ops.square(_flat_logits(fake_logits) - 1.0)


@dataclasses.dataclass(frozen=True)
class GANLoss:
    """D's loss as (per-example real term, per-example fake term) and G's per-example loss."""

    name: str
    discriminator: Callable
    generator: Callable
    needs_gradient_penalty: bool = False


LOSSES = {
    loss.name: loss
    for loss in (
        GANLoss("non_saturating", bce_discriminator, non_saturating_generator),
        GANLoss("minimax", bce_discriminator, minimax_generator),
        GANLoss("wasserstein", wasserstein_discriminator, wasserstein_generator, True),
        GANLoss("hinge", hinge_discriminator, wasserstein_generator),
        GANLoss("least_squares", least_squares_discriminator, least_squares_generator),
    )
}


def get(name: str) -> GANLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
