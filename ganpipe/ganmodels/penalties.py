"""Zero-centred gradient penalties R1 (on real samples) and R2 (on fakes), with lazy regularisation.

Mescheder, Geiger, Nowozin, "Which Training Methods for GANs do actually Converge?" (ICML 2018):

    R1 = gamma / 2 * E_x~data [ ||grad_x D(x)||^2 ]       R2 = gamma / 2 * E_x~G [ ||grad_x D(x)||^2 ]

where D(x) is the logit. Unlike WGAN-GP's (||grad|| - 1)^2 at interpolates, they push D's gradient
to zero on the data (R1) or on the fakes (R2), which makes the game locally convergent.

Lazy regularisation (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN",
CVPR 2020, sec. 3.1): the penalty is computed only every ``interval``-th D update and then weighted
by ``interval``, so its average strength is unchanged at a fraction of the cost.

The gradient norms are computed in float32: the samples enter D as float32 and the inner gradient
is taken of a (loss-scaled, under mixed_float16) float32 sum of logits and unscaled in float32.
With a packed D (``packing.packed_discriminator``) one decision covers m samples: the norm is taken
over the whole pack and the mean over packs, as for a D built on packs directly.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf
from keras import ops


def squared_gradient_norm(discriminate, samples, packing: int = 1, loss_scale=1.0):
    """E over D's decisions of ||grad_x D(x)||^2 at ``samples``, in float32.

    ``discriminate`` maps samples [N, ...] to logits [N, 1] (with a packed D, each of a pack's m
    samples carries the pack's logit). ``loss_scale`` multiplies the inner objective before the
    backward pass through float16 layers and is divided out in float32.
    """
    x = ops.cast(samples, "float32")
    n = ops.cast(ops.shape(x)[0], "float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        # A packed D repeats each pack's logit m times: the sum counts each decision m times.
        total = ops.sum(ops.cast(discriminate(x), "float32")) * (loss_scale / packing)
    grads = ops.cast(tape.gradient(total, x), "float32") / loss_scale
    return ops.sum(ops.square(grads)) / (n / packing)


@dataclasses.dataclass(frozen=True)
class ZeroCentredPenalty:
    """gamma_real / 2 * R1-norm + gamma_fake / 2 * R2-norm, every ``interval`` D updates x ``interval``."""

    r1: float = 0.0
    r2: float = 0.0
    interval: int = 1

    def __post_init__(self):
        for name in ("r1", "r2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}={value!r}: the penalty weight gamma must be a number >= 0")
        if not isinstance(self.interval, int) or isinstance(self.interval, bool) or not 1 <= self.interval <= 1000:
            raise ValueError(f"r1_interval={self.interval!r}: give the D updates between penalties, 1..1000")

    @property
    def active(self) -> bool:
        return self.r1 > 0.0 or self.r2 > 0.0

    def __call__(self, discriminate, real, fake, d_update, packing: int = 1, loss_scale=1.0):
        """The penalty to add to D's loss at D update number ``d_update`` (0 on lazy off-steps)."""
        if not self.active:
            return 0.0

        def penalty():
            total = 0.0
            if self.r1 > 0.0:
                total += 0.5 * self.r1 * squared_gradient_norm(discriminate, real, packing, loss_scale)
            if self.r2 > 0.0:
                total += 0.5 * self.r2 * squared_gradient_norm(discriminate, tf.stop_gradient(fake), packing,
                                                               loss_scale)
            return ops.cast(total, "float32") * float(self.interval)

        if self.interval == 1:
            return penalty()
        due = ops.equal(ops.mod(ops.cast(d_update, "int64"), self.interval), 0)
        return tf.cond(due, penalty, lambda: tf.constant(0.0))
