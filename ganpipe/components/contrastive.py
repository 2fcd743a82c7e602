"""A small self-supervised image encoder (SimCLR, Chen et al. ICML 2020) for unlabelled images:
the feature space Evaluate measures them in when there are no labels to train a classifier on.

Each step draws two augmented views of every image in a batch (DiffAugment's color and
translation, the latter a random crop with zero padding), encodes them, projects them with a small
head and minimises NT-Xent: for view i, the cross-entropy of picking its partner among the other
2B - 1 views by cosine similarity / temperature. Left out on purpose: flips (digits and text are
not mirror-invariant, so a flip is not a view of the same thing) and cutout (an encoder taught to
ignore a missing square would not see occluding rectangles, a defect the metrics must see). The
encoder (the
classifier's conv body and a ``features`` dense layer) is kept; the projection head is not, as in
SimCLR, whose representation before the head transfers better.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers

from ganpipe.components.reader import make_dataset
from ganpipe.ganmodels.diffaugment import diff_augment

TEMPERATURE = 0.1  # SimCLR's best (its Table 5); 0.5 left the loss near its floor on digits
PROJECTION_DIM = 64
AUGMENTATIONS = ("color", "translation")


def nt_xent(first: tf.Tensor, second: tf.Tensor, temperature: float = TEMPERATURE) -> tf.Tensor:
    """Mean NT-Xent loss of two batches of projections, row i of each a view of the same image."""
    views = tf.math.l2_normalize(tf.concat([first, second], axis=0), axis=1)
    count = tf.shape(first)[0]
    similarity = tf.matmul(views, views, transpose_b=True) / temperature
    similarity -= 1e9 * tf.eye(2 * count)  # a view is never its own candidate
    partners = tf.concat([tf.range(count, 2 * count), tf.range(count)], axis=0)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(partners, similarity))


def train_contrastive_encoder(examples_uri: str, schema: dict, params: dict, body, feature_layer: str, progress
                              ) -> tuple[keras.Model, keras.Model]:
    """The encoder (dict output ``{feature_layer: [N, feature_dim]}``) and the projection head, trained
    for ``params["contrastive_epochs"]`` passes over the train split; ``body(x, width)`` is the
    classifier's conv body."""
    x = keras.Input(tuple(schema["shape"]), name="sample")
    features = layers.Dense(params["feature_dim"], activation="relu", name=feature_layer)(body(x, params["width"]))
    encoder = keras.Model(x, {feature_layer: features}, name="contrastive_encoder")
    head = keras.Sequential([layers.Dense(params["feature_dim"], activation="relu"), layers.Dense(PROJECTION_DIM)],
                            name="projection_head")
    optimizer = keras.optimizers.Adam(params["learning_rate"])
    head.build((None, params["feature_dim"]))
    variables = encoder.trainable_variables + head.trainable_variables

    @tf.function
    def step(images, seed):
        with tf.GradientTape() as tape:
            projected = [head(encoder(diff_augment(images, tf.random.experimental.stateless_fold_in(seed, view),
                                                   AUGMENTATIONS), training=True)[feature_layer], training=True)
                         for view in range(2)]
            loss = nt_xent(*projected)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    batch_size = min(params["batch_size"], schema["counts"]["train"])
    batches = make_dataset(examples_uri, schema, split="train", batch_size=batch_size, shuffle=True,
                           seed=params["seed"], repeat=True, drop_remainder=True)
    steps_per_epoch = math.ceil(schema["counts"]["train"] / batch_size)
    iterator = iter(batches)
    with progress("epoch", params["contrastive_epochs"], "epochs") as bar:
        for epoch in range(params["contrastive_epochs"]):
            for index in range(steps_per_epoch):
                seed = tf.constant([params["seed"], epoch * steps_per_epoch + index], tf.int64)
                loss = step(next(iterator), seed)
            bar.update(epoch + 1, loss=float(loss))
    return encoder, head
