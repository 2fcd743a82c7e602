"""GAN losses, computed from D's outputs (logits or critic scores) in a numerically stable way.

Every loss is a pair of functions returning per-example values (shape [N]); the train step
averages them over the global batch, so they stay correct under ``tf.distribute``. Each loss also
says what it needs and what it can report:

- ``uses_targets``: D's real term reads the real targets, so ``label_smoothing`` / ``label_flip``
  change it (BCE and least squares); hinge and Wasserstein have no targets.
- ``d_slope_never_zero``: d(D's fake term)/d(fake output) is non-zero wherever G's loss has a
  slope, so G's gradient can be read off D's backward pass (see ``GAN.joint_step``).
- ``threshold``: D's decision boundary, for ``d_accuracy`` (none for the Wasserstein critic,
  whose scores are defined only up to a constant).
- ``statistics``: the loss's own training metrics (``metric_names``).

With l a logit and D = sigmoid(l):  -log D = softplus(-l)  and  -log(1 - D) = softplus(l).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

from keras import ops

LOG4 = math.log(4.0)


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
    """Critic: E[D(G(z))] - E[D(x)]; needs a Lipschitz constraint (gradient penalty or spectral norm)."""
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


# ------------------------------------------------------------------ training metrics per loss


def accuracy(real_scores, fake_scores, threshold):
    """Share of samples on the right side of D's decision boundary (real >= threshold > fake)."""
    correct = ops.concatenate([ops.cast(real_scores >= threshold, "float32"),
                               ops.cast(fake_scores < threshold, "float32")], axis=0)
    return ops.mean(correct)


def bce_statistics(real_logits, fake_logits):
    """Mean D(x) and D(G(z)) as probabilities, the value V(D, G) of the minimax game and
    ``js_lower_bound`` = (V + log 4) / 2: for any D, V <= 2 JS(p_data, p_g) - log 4, so this
    estimates a lower bound on the Jensen-Shannon divergence (it can be negative for a poor D)."""
    value = -ops.mean(ops.softplus(-real_logits)) - ops.mean(ops.softplus(fake_logits))
    return {"d_real": ops.mean(ops.sigmoid(real_logits)), "d_fake": ops.mean(ops.sigmoid(fake_logits)),
            "value": value, "js_lower_bound": (value + LOG4) / 2.0}


def least_squares_statistics(real_logits, fake_logits):
    """Mean D output on reals (target 1) and fakes (target 0)."""
    return {"d_real": ops.mean(real_logits), "d_fake": ops.mean(fake_logits)}


def hinge_statistics(real_logits, fake_logits):
    """Shares of reals with D(x) < 1 and fakes with D(G(z)) > -1: the samples inside the margin,
    the only ones that still give D a gradient."""
    return {"real_inside_margin": ops.mean(ops.cast(real_logits < 1.0, "float32")),
            "fake_inside_margin": ops.mean(ops.cast(fake_logits > -1.0, "float32"))}


def wasserstein_statistics(real_logits, fake_logits):
    """E[D(x)] - E[D(G(z))]: the critic's estimate of the Wasserstein-1 distance (a lower bound
    of it while the critic is 1-Lipschitz)."""
    return {"wasserstein_estimate": ops.mean(real_logits) - ops.mean(fake_logits)}


@dataclasses.dataclass(frozen=True)
class GANLoss:
    """D's loss as (per-example real term, per-example fake term), G's per-example loss, and the
    loss's properties (module docstring)."""

    name: str
    discriminator: Callable
    generator: Callable
    statistics: Callable
    metric_names: tuple
    threshold: float | None = 0.0
    uses_targets: bool = False
    d_slope_never_zero: bool = False
    needs_lipschitz: bool = False

    def training_metrics(self, real_logits, fake_logits) -> dict:
        """This loss's metrics of one D step, from D's outputs on reals and fakes."""
        real, fake = _flat_logits(real_logits), _flat_logits(fake_logits)
        stats = self.statistics(real, fake)
        if self.threshold is not None:
            stats["d_accuracy"] = accuracy(real, fake, self.threshold)
        return stats


BCE_METRICS = ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake", "value", "js_lower_bound")

LOSSES = {
    loss.name: loss
    for loss in (
        GANLoss("non_saturating", bce_discriminator, non_saturating_generator, bce_statistics, BCE_METRICS,
                uses_targets=True, d_slope_never_zero=True),
        GANLoss("minimax", bce_discriminator, minimax_generator, bce_statistics, BCE_METRICS,
                uses_targets=True, d_slope_never_zero=True),
        GANLoss("wasserstein", wasserstein_discriminator, wasserstein_generator, wasserstein_statistics,
                ("d_loss", "g_loss", "wasserstein_estimate"), threshold=None, d_slope_never_zero=True,
                needs_lipschitz=True),
        GANLoss("hinge", hinge_discriminator, wasserstein_generator, hinge_statistics,
                ("d_loss", "g_loss", "d_accuracy", "real_inside_margin", "fake_inside_margin")),
        GANLoss("least_squares", least_squares_discriminator, least_squares_generator, least_squares_statistics,
                ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake"), threshold=0.5, uses_targets=True),
    )
}


def get(name: str) -> GANLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
