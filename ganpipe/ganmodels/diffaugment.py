"""DiffAugment: differentiable augmentation of every sample D sees, real and fake alike.

Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for Data-Efficient GAN Training"
(NeurIPS 2020). The same random transform family T is applied to real images and to G's images
before D (in D's and in G's updates), and T is differentiable, so G learns through it. D then
cannot memorise a small training set, while G is still asked to match the un-augmented data
(the transforms are applied to both sides, so they do not leak into G's samples).

Transforms (the paper's, for images in [-1, 1]; each sample draws its own parameters):
  color        brightness + U(-0.5, 0.5); saturation: (x - channel mean) x U(0, 2) + mean;
               contrast: (x - image mean) x U(0.5, 1.5) + mean
  translation  shift by integers in [-r H, r H] x [-r W, r W] (r = 1/8), zero fill
  cutout       zero a square of half the image side at a random centre

Randomness is stateless: ``diff_augment(images, seed)`` is a pure function of the images and the
seed [2] int64, so a resumed run augments exactly as an uninterrupted one.
"""
from __future__ import annotations

import tensorflow as tf

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO, CUTOUT_RATIO = 0.125, 0.5


def parse_policy(policy) -> tuple[str, ...]:
    """``"color,translation,cutout"`` or a list of names -> a tuple; an unknown name is an error."""
    names = [name.strip() for name in policy.split(",")] if isinstance(policy, str) else list(policy)
    names = [name for name in names if name]
    unknown = [name for name in names if name not in POLICIES]
    if unknown or not names:
        raise ValueError(f"diffaugment={policy!r}: give one or more of {', '.join(POLICIES)} (comma-separated)")
    return tuple(names)


def diff_augment(images, seed, policy=POLICIES):
    """Applies the ``policy`` transforms in order to a batch [N, H, W, C]; differentiable in ``images``."""
    if len(images.shape) != 4:
        raise ValueError(f"DiffAugment needs image batches [N, H, W, C], got shape {tuple(images.shape)}")
    x = images
    for index, name in enumerate(parse_policy(policy)):
        x = TRANSFORMS[name](x, tf.random.experimental.stateless_fold_in(seed, index))
    return x


def _uniform(seed, n, dtype, low=0.0, high=1.0):
    return tf.cast(tf.random.stateless_uniform((n, 1, 1, 1), seed=seed, minval=low, maxval=high), dtype)


def color(x, seed):
    n = tf.shape(x)[0]
    seeds = [tf.random.experimental.stateless_fold_in(seed, k) for k in range(3)]
    x = x + _uniform(seeds[0], n, x.dtype, -0.5, 0.5)
    channel_mean = tf.reduce_mean(x, axis=3, keepdims=True)
    x = (x - channel_mean) * _uniform(seeds[1], n, x.dtype, 0.0, 2.0) + channel_mean
    image_mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - image_mean) * _uniform(seeds[2], n, x.dtype, 0.5, 1.5) + image_mean


def _shift_axis(x, shifts, axis):
    """out[..., i, ...] = x[..., i + shift, ...] along ``axis`` (1 or 2) per sample, 0 outside."""
    size = x.shape[axis]
    source = tf.range(size)[tf.newaxis, :] + shifts[:, tf.newaxis]  # [N, size]
    inside = tf.cast((source >= 0) & (source < size), x.dtype)
    moved = tf.gather(x, tf.clip_by_value(source, 0, size - 1), axis=axis, batch_dims=1)
    mask_shape = [-1, size, 1, 1] if axis == 1 else [-1, 1, size, 1]
    return moved * tf.reshape(inside, mask_shape)


def translation(x, seed, ratio=TRANSLATION_RATIO):
    n = tf.shape(x)[0]
    height, width = x.shape[1], x.shape[2]
    row_seed, col_seed = (tf.random.experimental.stateless_fold_in(seed, k) for k in range(2))
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = tf.random.stateless_uniform((n,), seed=row_seed, minval=-max_dy, maxval=max_dy + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform((n,), seed=col_seed, minval=-max_dx, maxval=max_dx + 1, dtype=tf.int32)
    return _shift_axis(_shift_axis(x, dy, axis=1), dx, axis=2)


def cutout(x, seed, ratio=CUTOUT_RATIO):
    n = tf.shape(x)[0]
    height, width = x.shape[1], x.shape[2]
    row_seed, col_seed = (tf.random.experimental.stateless_fold_in(seed, k) for k in range(2))
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    # The square's first row/column; as in the paper, it may hang over the border.
    top = tf.random.stateless_uniform((n,), seed=row_seed, minval=0, maxval=height + 1 - cut_h % 2,
                                      dtype=tf.int32) - cut_h // 2
    left = tf.random.stateless_uniform((n,), seed=col_seed, minval=0, maxval=width + 1 - cut_w % 2,
                                       dtype=tf.int32) - cut_w // 2
    rows, cols = tf.range(height)[tf.newaxis, :], tf.range(width)[tf.newaxis, :]
    in_rows = (rows >= top[:, tf.newaxis]) & (rows < (top + cut_h)[:, tf.newaxis])  # [N, H]
    in_cols = (cols >= left[:, tf.newaxis]) & (cols < (left + cut_w)[:, tf.newaxis])  # [N, W]
    cut = in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :]  # [N, H, W]
    return x * tf.cast(~cut, x.dtype)[..., tf.newaxis]


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}
