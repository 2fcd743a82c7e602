"""Evaluate's synthetic-data sections end to end: the copying gate, CAS and the membership audit
of "generators" with known answers (Keras models that look up real images) and of a trained GAN."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import write_image_examples
from keras import layers
from sklearn.datasets import load_digits
from tensorboard.backend.event_processing import event_accumulator

from ganpipe.components import classifier, evaluate
from ganpipe.components.reader import make_dataset
from ganpipe.ganmodels.families import build_gan

EVAL_COUNT = 300


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    data = load_digits()
    images = np.round(data.images * 255 / 16).astype("uint8")[..., None]
    root = str(tmp_path_factory.mktemp("digits") / "examples")
    schema = write_image_examples(root, images, data.target, EVAL_COUNT, [str(i) for i in range(10)])
    x = images.astype("float32") / 127.5 - 1.0
    return root, schema, (x[EVAL_COUNT:], data.target[EVAL_COUNT:]), (x[:EVAL_COUNT], data.target[:EVAL_COUNT])


@pytest.fixture(scope="module")
def feature_space(digits, tmp_path_factory):
    root, schema, _, _ = digits
    out = str(tmp_path_factory.mktemp("classifier"))
    classifier.build_feature_model(root, schema, out, epochs=4, log=lambda *_: None)
    return out


def lookup_generator(images, labels=None, sharpness=100.0):
    """G(z) = the image whose latent coordinate is largest (softmax of sharpness * z, so nearly
    one-hot: an image with a faint blend of others); conditional, G(z, y) picks among class y only."""
    count = len(images)
    z = keras.Input((count,), name="latent")
    scores = layers.Dense(count, use_bias=False, trainable=False, name="sharpen")(z)
    inputs = [z]
    if labels is not None:
        y = keras.Input((), dtype="int32", name="label")
        outside_class = np.where(np.arange(labels.max() + 1)[:, None] == labels[None, :], 0.0, -1e4)
        scores = layers.Add()([scores, layers.Embedding(len(outside_class), count, name="mask")(y)])
        inputs.append(y)
    weights = layers.Softmax()(scores)
    flat = layers.Dense(int(np.prod(images.shape[1:])), use_bias=False, name="bank")(weights)
    model = keras.Model(inputs, layers.Reshape(images.shape[1:])(flat))
    model.get_layer("sharpen").set_weights([sharpness * np.eye(count, dtype="float32")])
    model.get_layer("bank").set_weights([images.reshape(count, -1)])
    if labels is not None:
        model.get_layer("mask").set_weights([outside_class.astype("float32")])
    return model


def small_discriminator(shape, conditional):
    x = keras.Input(shape)
    inputs = [x, keras.Input((), dtype="int32")] if conditional else [x]
    return keras.Model(inputs, layers.Dense(1)(layers.Flatten()(x)))


def write_model(directory, generator, discriminator, family, num_classes=0):
    os.makedirs(directory, exist_ok=True)
    generator.save(os.path.join(directory, "generator.keras"))
    discriminator.save(os.path.join(directory, "discriminator.keras"))
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump({"family": family, "latent_dim": int(generator.inputs[0].shape[-1]), "num_classes": num_classes,
                   "data_kind": "image", "steps": 0}, f)
    return directory


def evaluate_model(model_dir, digits, feature_space, tmp_path, **params):
    root, schema, _, _ = digits
    report = evaluate.evaluate_model(model_dir, root, schema, feature_space, str(tmp_path / "evaluation"),
                                     log=lambda *_: None, num_samples=EVAL_COUNT, **params)
    return report, evaluate.decide_blessing(report, {"num_samples": EVAL_COUNT, **params})


@pytest.fixture(scope="module")
def trained_gan(digits, tmp_path_factory):
    root, schema, _, _ = digits
    keras.utils.set_random_seed(0)
    gan = build_gan("mlp", (8, 8, 1), latent_dim=16, hidden=(64, 64))
    gan.compile()
    gan.fit(make_dataset(root, schema, batch_size=64, seed=0, repeat=True), steps_per_epoch=800, epochs=1, verbose=0)
    return write_model(str(tmp_path_factory.mktemp("gan")), gan.generator, gan.discriminator, "mlp")


def test_copying_gate_flags_a_memorising_generator_and_passes_a_trained_gan(digits, feature_space, trained_gan,
                                                                            tmp_path):
    _, _, (train_x, _), _ = digits
    memoriser = write_model(str(tmp_path / "memoriser"), lookup_generator(train_x),
                            small_discriminator((8, 8, 1), False), "mlp")
    copied, copied_blessing = evaluate_model(memoriser, digits, feature_space, tmp_path / "m", max_copying=0.2)
    fresh, fresh_blessing = evaluate_model(trained_gan, digits, feature_space, tmp_path / "g", max_copying=0.2)
    assert copied["metrics"]["copying_share"]["value"] > 0.9 and copied["metrics"]["copying_ct"]["value"] < -3
    assert fresh["metrics"]["copying_share"]["value"] < 0.2
    assert not copied_blessing["blessed"] and "copying_share" in copied_blessing["reasons"][0]
    assert fresh_blessing["blessed"]
    # the memoriser's closest pairs are copies: fake above, its train example below, near identical
    grid = keras.utils.load_img(tmp_path / "m" / "evaluation" / "closest_pairs.png", color_mode="grayscale")
    pixels = np.asarray(grid, "float32")
    cell = 4 * 9  # 8 pixels and a 1-pixel gap, drawn 4x
    assert np.abs(pixels[4:4 + 32, 4:4 + 32] - pixels[4 + cell:4 + cell + 32, 4:4 + 32]).max() < 8
    events = event_accumulator.EventAccumulator(str(tmp_path / "m" / "evaluation" / "logs" / "eval"),
                                                size_guidance={event_accumulator.TENSORS: 0}).Reload()
    assert events.SummaryMetadata("quality/closest_pairs").plugin_data.plugin_name == "images"
    width, height = tf.make_ndarray(events.Tensors("quality/closest_pairs")[0].tensor_proto)[:2].astype(int)
    assert (height, width) == (2 * 9 + 1, 8 * 9 + 1)  # two rows of 8 images, as drawn (unscaled) in TensorBoard
    # the membership audit finds the memoriser's members by distance, not the trained GAN's
    assert copied["metrics"]["membership_auc_distance"]["value"] > 0.9
    assert abs(fresh["metrics"]["membership_auc_distance"]["value"] - 0.5) < \
        3 * fresh["metrics"]["membership_auc_distance"]["std"] + 0.05


def test_cas_of_real_images_equals_the_real_trained_accuracy(digits, feature_space, tmp_path):
    _, _, (train_x, train_y), _ = digits
    real = write_model(str(tmp_path / "real"), lookup_generator(train_x, train_y),
                       small_discriminator((8, 8, 1), True), "cgan", num_classes=10)
    report, _ = evaluate_model(real, digits, feature_space, tmp_path)
    cas = report["metrics"]["cas"]
    assert cas["baseline_kind"] == "real_trained" and cas["baseline"] > 0.8
    assert abs(cas["value"] - cas["baseline"]) < 3 * report["metrics"]["cas"]["std"]
    per_class = report["cas_per_class"]
    assert sorted(per_class, key=int) == [str(i) for i in range(10)]
    assert all(abs(entry["cas"] - entry["real"]) < 0.25 for entry in per_class.values())


def test_cas_of_a_generator_that_swaps_two_classes_loses_both(digits, feature_space, tmp_path):
    # labels 3 and 8 exchanged in the image bank: CAS drops by about their share, and per class to ~0
    _, _, (train_x, train_y), _ = digits
    swapped = np.select([train_y == 3, train_y == 8], [8, 3], train_y)
    model = write_model(str(tmp_path / "swapped"), lookup_generator(train_x, swapped),
                        small_discriminator((8, 8, 1), True), "cgan", num_classes=10)
    report, _ = evaluate_model(model, digits, feature_space, tmp_path)
    assert report["cas_per_class"]["3"]["cas"] < 0.2 and report["cas_per_class"]["8"]["cas"] < 0.2
    assert report["metrics"]["cas"]["value"] < report["metrics"]["cas"]["baseline"] - 0.12
