"""The Classifier step's feature spaces for unlabelled images: the self-supervised (SimCLR)
encoder and its NT-Xent loss, and the pooled-pixel option."""
import functools

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_image_examples
from sklearn.datasets import load_digits

from ganpipe.components import classifier, contrastive
from ganpipe.components.base import Progress
from ganpipe.ganmodels.diffaugment import diff_augment


def reference_nt_xent(first, second, temperature):
    """Written out per anchor: -log softmax over the 2B - 1 other views, at the partner."""
    views = np.concatenate([first, second])
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    count = len(first)
    losses = []
    for i in range(2 * count):
        partner = (i + count) % (2 * count)
        others = [j for j in range(2 * count) if j != i]
        logits = np.array([views[i] @ views[j] / temperature for j in others])
        losses.append(-(logits[others.index(partner)] - np.log(np.exp(logits).sum())))
    return np.mean(losses)


def test_nt_xent_matches_the_formula():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    loss = contrastive.nt_xent(tf.constant(first, tf.float32), tf.constant(second, tf.float32), 0.3)
    assert float(loss) == pytest.approx(reference_nt_xent(first, second, 0.3), rel=1e-5)


@pytest.fixture(scope="module")
def unlabelled_digits(tmp_path_factory):
    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype("uint8")[..., None]
    root = str(tmp_path_factory.mktemp("unlabelled") / "examples")
    return root, write_image_examples(root, images, eval_count=300), images[:300]


@pytest.fixture(scope="module")
def encoder(unlabelled_digits, tmp_path_factory):
    root, schema, _ = unlabelled_digits
    out = str(tmp_path_factory.mktemp("encoder"))
    info = classifier.build_feature_model(root, schema, out, contrastive_epochs=3, log=lambda *_: None)
    return info, classifier.load_feature_model(out)[0]


def test_unlabelled_images_get_a_trained_encoder(encoder):
    info, model = encoder
    assert info["feature_space"] == "contrastive" and info["outputs"] == ["features"]
    assert info["feature_dim"] == 128 and info["eval_accuracy"] is None and info["num_classes"] == 0
    assert model(np.zeros((2, 8, 8, 1), "float32"), training=False)["features"].shape == (2, 128)


def held_out_loss(encoder, head, images, seed):
    """NT-Xent of two fresh views (seeds training never drew) of held-out images, in batches of 64."""
    x = tf.constant(images.astype("float32") / 127.5 - 1.0)
    losses = []
    for start in range(0, len(images) - 63, 64):
        batch = x[start:start + 64]
        views = [head(encoder(diff_augment(batch, tf.constant([seed, start + view], tf.int64),
                                           contrastive.AUGMENTATIONS))["features"]) for view in (1, 2)]
        losses.append(float(contrastive.nt_xent(*views)))
    return np.mean(losses)


def test_encoder_training_lowers_the_held_out_contrastive_loss(unlabelled_digits):
    # Chance is log(127) = 4.84 for 64 images. Measured: untrained weights 4.8; the two training
    # views drawn with one seed (no invariance learned) 5.9.
    root, schema, eval_images = unlabelled_digits
    params = classifier.COMPONENT.resolve_parameters({"contrastive_epochs": 3}, "classifier")
    encoder, head = contrastive.train_contrastive_encoder(root, schema, params, classifier.conv_body, "features",
                                                          functools.partial(Progress, lambda *_: None))
    assert held_out_loss(encoder, head, eval_images, seed=777) < 0.75 * np.log(127)  # 2.5-3.0 measured


def test_pixels_stay_an_option(unlabelled_digits, tmp_path):
    root, schema, _ = unlabelled_digits
    info = classifier.build_feature_model(root, schema, str(tmp_path), unlabelled_features="pixels")
    assert info["feature_space"] == "pixels" and info["feature_dim"] == 64


def test_unknown_feature_choice_is_refused(unlabelled_digits, tmp_path):
    root, schema, _ = unlabelled_digits
    with pytest.raises(ValueError, match="unlabelled_features"):
        classifier.build_feature_model(root, schema, str(tmp_path), unlabelled_features="inception")
