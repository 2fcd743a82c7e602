"""Discriminator-side remedies for mode collapse: packing (PacGAN) and minibatch standard deviation.

**Packing** (Lin, Khetan, Fanti, Oh, "PacGAN: The power of two samples in generative adversarial
networks", NeurIPS 2018): D judges m samples at once, concatenated along the feature (channel)
axis, all real or all fake. A generator that drops modes makes packs that are less diverse than
real packs, which a packed D sees and a one-sample D cannot.

``packed_discriminator(inner, data_shape, m)`` wraps a discriminator ``inner`` built for the
packed shape (``packed_shape(data_shape, m)``) so that it still maps N samples to N logits:

    samples [N, *shape] --Pack(m)--> packs [ceil(N/m), *packed] --inner--> [ceil(N/m), 1]
        --SpreadPackLogits(m)--> [N, 1], sample i getting the logit of its pack i // m

Packs are consecutive samples. The GAN calls D on ``concat(real, fake)``, so with a per-call real
batch divisible by m no pack mixes real and fake, each pack's logit sits beside the targets of
its own samples, and a mean over the N per-sample losses is the mean over packs: every loss,
metric and penalty of the GAN works unchanged. A batch not divisible by m (e.g. Evaluate's last
batch) fills its last pack by repeating that pack's last sample.

**Minibatch standard deviation** (Karras et al., "Progressive Growing of GANs", ICLR 2018, sec. 3;
used by StyleGAN/StyleGAN2): one extra feature, the standard deviation of each feature over a group
of samples, averaged over features and positions, appended to every sample of the group. Groups are
consecutive samples (StyleGAN strides them over the batch): D sees real and fake in one call, and
consecutive groups keep the statistic to one kind when the group size divides the real batch.
"""
from __future__ import annotations

import keras
from keras import ops


def packed_shape(data_shape, packing: int) -> tuple:
    """The shape D's inner network sees: the last axis (channels, or features of a vector) x m."""
    data_shape = tuple(int(d) for d in data_shape)
    return data_shape[:-1] + (data_shape[-1] * int(packing),)


def check_packing(packing: int):
    if not isinstance(packing, int) or isinstance(packing, bool) or not 1 <= packing <= 64:
        raise ValueError(f"packing={packing!r}: give the number of samples per discriminator decision, 1..64")


class _PackingLayer(keras.layers.Layer):
    """A layer configured by the pack size m (checked, and saved in its config)."""

    def __init__(self, packing: int, **kwargs):
        super().__init__(**kwargs)
        check_packing(packing)
        self.packing = packing

    def get_config(self):
        return {**super().get_config(), "packing": self.packing}


@keras.saving.register_keras_serializable(package="ganpipe")
class Pack(_PackingLayer):
    """[N, *shape] -> [ceil(N / m), *shape[:-1], m * shape[-1]]: consecutive samples side by side."""

    def call(self, samples):
        m = self.packing
        n = ops.shape(samples)[0]
        missing = (-n) % m
        if not isinstance(missing, int) or missing:  # dynamic batch, or a last pack to fill
            last = samples[-1:]
            samples = ops.concatenate([samples, ops.repeat(last, missing, axis=0)], axis=0)
        rank = len(samples.shape)
        rest = tuple(samples.shape[1:])
        grouped = ops.reshape(samples, (-1, m) + rest)  # [P, m, d1, ..., dk]
        # Move the pack axis next to the last axis: [P, d1, ..., d(k-1), m, dk].
        perm = (0,) + tuple(range(2, rank)) + (1, rank)
        return ops.reshape(ops.transpose(grouped, perm), (-1,) + packed_shape(rest, m))

    def compute_output_shape(self, input_shape):
        return (None,) + packed_shape(input_shape[1:], self.packing)


@keras.saving.register_keras_serializable(package="ganpipe")
class SpreadPackLogits(_PackingLayer):
    """([P, 1] pack logits, [N, ...] samples) -> [N, 1]: each sample gets its pack's logit."""

    def call(self, inputs):
        logits, samples = inputs
        return ops.repeat(logits, self.packing, axis=0)[: ops.shape(samples)[0]]

    def compute_output_shape(self, input_shapes):
        return (input_shapes[1][0],) + tuple(input_shapes[0][1:])


def packed_discriminator(inner: keras.Model, data_shape, packing: int) -> keras.Model:
    """``inner`` (built for ``packed_shape(data_shape, packing)``) as a D of single samples."""
    check_packing(packing)
    expected = packed_shape(data_shape, packing)
    if tuple(inner.input_shape[1:]) != expected:
        raise ValueError(f"packing={packing}: the inner discriminator takes {tuple(inner.input_shape[1:])}, "
                         f"packs of {tuple(data_shape)} are {expected}")
    samples = keras.Input(tuple(data_shape), name="sample")
    logits = inner(Pack(packing, name="pack")(samples))
    spread = SpreadPackLogits(packing, dtype="float32", name="pack_logits")([logits, samples])
    return keras.Model(samples, spread, name="discriminator")


def packing_of(discriminator: keras.Model) -> int:
    """m of a packed discriminator (1 for an unpacked one), also after loading it from a file."""
    for layer in discriminator.layers:
        if isinstance(layer, Pack):
            return layer.packing
    return 1


@keras.saving.register_keras_serializable(package="ganpipe")
class MinibatchStdDev(keras.layers.Layer):
    """Appends one feature: the mean over features of the std over a group of ``group_size``
    consecutive samples (the last group may be smaller), computed in float32.

    Input [N, ..., C] -> [N, ..., C + 1]; works on feature maps and on flat feature vectors.
    """

    couples_samples = True  # a sample's output depends on its group (GAN.single_backward_is_exact)

    def __init__(self, group_size: int = 4, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(group_size, int) or group_size < 2:
            raise ValueError(f"minibatch_std group_size={group_size!r}: give an integer >= 2")
        self.group_size, self.epsilon = group_size, float(epsilon)

    def call(self, features):
        x = ops.cast(features, "float32")
        n = ops.shape(x)[0]
        groups = (n + self.group_size - 1) // self.group_size
        group_of = ops.arange(n) // self.group_size
        sizes = ops.segment_sum(ops.ones((n,)), group_of, num_segments=groups)
        size_shape = (-1,) + (1,) * (len(x.shape) - 1)
        means = ops.segment_sum(x, group_of, num_segments=groups) / ops.reshape(sizes, size_shape)
        deviation = x - ops.take(means, group_of, axis=0)
        variance = ops.segment_sum(ops.square(deviation), group_of, num_segments=groups)
        std = ops.sqrt(variance / ops.reshape(sizes, size_shape) + self.epsilon)  # [G, ...]
        per_group = ops.mean(ops.reshape(std, (groups, -1)), axis=1)  # [G]
        per_sample = ops.take(per_group, group_of, axis=0)
        feature = ops.broadcast_to(ops.reshape(per_sample, size_shape), ops.shape(x)[:-1] + (1,))
        return ops.concatenate([features, ops.cast(feature, features.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (None if input_shape[-1] is None else input_shape[-1] + 1,)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size, "epsilon": self.epsilon}
