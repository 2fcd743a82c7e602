"""``reuse_fakes``: the last D step and the G step as one simultaneous update on the same fakes
(as TF-GAN's), a mixin of ``GAN`` (``joint_step``)."""
from __future__ import annotations

import tensorflow as tf
from keras import ops

from ganpipe.ganmodels import updates
from ganpipe.ganmodels.network_walk import couples_samples


class SimultaneousUpdate:
    """One G forward and one D forward pass feed both networks' updates."""

    def joint_step(self, real, condition, index):
        """D and G both differentiated at the current weights, on the fakes of D's step.

        G's gradient is J^T b, J = d(fake logits)/d(fakes), b_i = dG_loss/dl_i. D's backward pass
        already gives its gradient at the fakes, J^T a with a_i = dD_loss/dl_i, so where each
        logit depends only on its own sample (``single_backward_is_exact``: no BatchNorm or
        other cross-sample layer in D, no penalty on the fakes, float32; a packed D qualifies
        because every pack is all real or all fake, so a and b are constant over a pack) and a_i
        is non-zero wherever b_i is (the loss's ``d_slope_never_zero``), J^T b = (J^T a) b / a:
        one backward pass through D instead of two. Within that, a step where some a_i is too
        small relative to b_i for float32 (a BCE fake logit below about -57) takes the second
        pass too.

        D's gradient here comes from this step's own tape, not from ``discriminator_gradients``.
        """
        z = self.sample_latent(ops.shape(real)[0], "d_latent", index)
        with tf.GradientTape() as g_tape:
            fake = self.generate(z, condition, training=True)
            with tf.GradientTape(persistent=True) as d_tape:
                d_tape.watch(fake)
                real_logits, fake_logits, d_loss = self.discriminator_loss(real, fake, condition, index)
                d_total = self.discriminator_objective(d_loss, real, fake, condition, index)
            # G's loss on the same logits, cut from D's graph: b = dG_loss/dl from a small tape
            logits_for_g = tf.stop_gradient(fake_logits)
            with tf.GradientTape() as b_tape:
                b_tape.watch(logits_for_g)
                g_loss = self.generator_loss(real, fake, logits_for_g, condition)
                g_total = self.generator_objective(g_loss)
        b = b_tape.gradient(g_total, logits_for_g)
        d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables
        if self.single_backward_is_exact():
            *d_grads, d_at_fakes = d_tape.gradient(d_total, d_vars + [fake])
            a = d_tape.gradient(d_total, fake_logits)
            g_at_fakes = tf.cond(_ratio_is_safe(a, b), lambda: d_at_fakes * _per_sample(b / a, fake),
                                 lambda: d_tape.gradient(fake_logits, fake, output_gradients=b))
        else:
            d_grads = d_tape.gradient(d_total, d_vars)
            g_at_fakes = d_tape.gradient(fake_logits, fake, output_gradients=b)
        del d_tape
        # g_total's own path to G's weights (content loss, weight penalties) plus D's part J^T b
        g_grads = g_tape.gradient([fake, g_total], g_vars, output_gradients=[g_at_fakes, ops.ones_like(g_total)])
        updates.apply(self.d_optimizer, d_grads, d_vars)
        updates.apply(self.g_optimizer, g_grads, g_vars)
        return {"d_loss": d_loss, "g_loss": g_loss, **self.gan_loss.training_metrics(real_logits, fake_logits)}

    def single_backward_is_exact(self) -> bool:
        """Whether ``joint_step`` may read G's gradient off D's backward pass (its docstring)."""
        return (self.gan_loss.d_slope_never_zero and not self.penalty_reads_fakes()
                and not couples_samples(self.discriminator)
                and self.discriminator.dtype_policy.compute_dtype == "float32")


def _ratio_is_safe(a, b):
    """a_i * J cannot underflow where it matters: |a_i| > 1e-25 |b_i| for every sample (strictly,
    so a_i = b_i = 0, e.g. SRGAN pretraining against a D certain beyond float32, never gives 0/0)."""
    return ops.all(ops.abs(a) > 1e-25 * ops.abs(b))


def _per_sample(values, like):
    """[N] values shaped to broadcast over ``like``'s non-batch axes."""
    return ops.reshape(values, (-1,) + (1,) * (len(like.shape) - 1))
