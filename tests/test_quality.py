"""The quality curve during training: Fréchet distance, precision and recall in the Classifier's
feature space every eval_every steps, to TensorBoard, and the best generator kept."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from ganpipe.components import classifier, quality, reference, train, train_args
from ganpipe.ganmodels import metrics
from conftest import TINY_DCGAN, write_processed_examples


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("processed"))
    schema = write_processed_examples(root)
    feature_dir = str(tmp_path_factory.mktemp("classifier"))
    classifier.build_feature_model(root, schema, feature_dir, log=lambda message: None, epochs=1, width=8,
                                   feature_dim=16)
    return root, schema, feature_dir


def curve(logdir):
    events = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"] if tag.startswith("quality/")}


def test_quality_curve_every_eval_every_steps_and_the_best_generator(data, tmp_path):
    root, schema, feature_dir = data
    messages = []
    info = train.train_model(root, schema, str(tmp_path), classifier_dir=feature_dir, log=messages.append,
                             **{**TINY_DCGAN, "steps": 9, "eval_every": 3, "eval_samples": 64, "keep_best": True})
    points = curve(str(tmp_path / "logs" / "train"))
    assert sorted(points) == ["quality/fcd", "quality/precision", "quality/recall"]
    assert [step for step, _ in points["quality/fcd"]] == [3, 6, 9]
    assert all(0.0 <= value <= 1.0 for _, value in points["quality/precision"] + points["quality/recall"])
    best_step, best_value = min(points["quality/fcd"], key=lambda point: point[1])
    assert info["best"] == {"step": best_step, "metric": "fcd", "value": pytest.approx(best_value, rel=1e-5)}
    assert json.load(open(tmp_path / "best.json")) == info["best"]
    assert any(message.startswith("step 9: fcd ") for message in messages)

    # The last point measures the final generator: recompute it from generator.keras.
    generator = keras.models.load_model(str(tmp_path / "generator.keras"))
    feature_model, _ = classifier.load_feature_model(feature_dir)
    latent = tf.random.stateless_normal((64, 8), seed=[quality.QUALITY_NOISE_SEED, 0])
    fake = np.asarray(feature_model(generator(latent, training=False), training=False)["features"])
    real = np.asarray(feature_model(next(iter(_real_batch(root, schema, 64))),
                                    training=False)["features"])
    expected = metrics.compute(["frechet"], real, fake)["frechet_distance"]
    assert points["quality/fcd"][-1][1] == pytest.approx(expected, rel=1e-3)
    if best_step == 9:
        assert os.path.isfile(tmp_path / "generator_best.keras")


def _real_batch(root, schema, n):
    from ganpipe.components.reader import make_dataset

    return make_dataset(root, schema, split="train", batch_size=n, shuffle=True, seed=0, drop_remainder=False,
                        cache=False)


def test_no_curve_without_a_classifier_or_with_eval_every_0(data, tmp_path):
    root, schema, feature_dir = data
    train.train_model(root, schema, str(tmp_path / "a"), log=lambda message: None, **{**TINY_DCGAN, "steps": 2,
                                                                                          "eval_every": 1})
    train.train_model(root, schema, str(tmp_path / "b"), classifier_dir=feature_dir, log=lambda message: None,
                      **{**TINY_DCGAN, "steps": 2, "eval_every": 0})
    for run in ("a", "b"):
        assert curve(str(tmp_path / run / "logs" / "train")) == {}
    assert not os.path.exists(tmp_path / "b" / "best.json")


def test_a_resumed_run_keeps_comparing_against_the_best_point_before_the_kill(data, tmp_path):
    """The best point of the first attempt (made unbeatable here) survives a resume: the resumed
    run's points never replace it, and without one a resumed run would keep its own best."""
    root, schema, feature_dir = data
    params = {**TINY_DCGAN, "eval_every": 3, "eval_samples": 32, "keep_best": True, "checkpoint_every": 3}
    train.train_model(root, schema, str(tmp_path), classifier_dir=feature_dir, log=lambda message: None,
                      **{**params, "steps": 3})
    unbeatable = {"step": 3, "metric": "fcd", "value": -1.0}
    with open(tmp_path / quality.BEST_INFO, "w") as f:
        json.dump(unbeatable, f)
    saved = os.path.getmtime(tmp_path / quality.BEST_GENERATOR)
    info = train.train_model(root, schema, str(tmp_path), classifier_dir=feature_dir, log=lambda message: None,
                             **{**params, "steps": 6})
    assert info["steps"] == 6 and info["best"] == unbeatable
    # the resumed attempt goes on measuring at the next multiple of eval_every after its start
    assert [step for step, _ in curve(str(tmp_path / "logs" / "train"))["quality/fcd"]] == [3, 6]
    assert os.path.getmtime(tmp_path / quality.BEST_GENERATOR) == saved
    os.remove(tmp_path / quality.BEST_GENERATOR)  # a best.json without its generator is no best point
    assert quality.read_best(str(tmp_path)) is None


class FixedSamplesGan:
    """Stands in for the trained GAN: generates the same samples whatever the noise."""
    latent_dim, seed = 2, 0

    def __init__(self, samples):
        self.samples = samples
        self.generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])

    def generate(self, latent, condition=None, training=False):
        return self.samples[:len(latent)]


def measuring_curve(logdir, feature_model, real, num_samples, best_dir=None):
    return quality.QualityCurve(tf.summary.create_file_writer(logdir), feature_model, real, "fcd", every=1,
                                num_samples=num_samples, best_dir=best_dir, log=lambda message: None)


def test_a_point_is_on_disk_when_measured_and_scores_inference_mode_features_of_few_samples(tmp_path):
    """Three samples: precision/recall's k is 2 (one below the count); the features come from the
    feature model in inference mode (its batch normalisation uses the moving statistics)."""
    rng = np.random.default_rng(0)
    real, fakes = rng.normal(size=(3, 2)).astype("float32"), rng.normal(1.0, 2.0, size=(3, 2)).astype("float32")
    inputs = keras.Input((2,))
    feature_model = keras.Model(inputs, {classifier.FEATURE_LAYER: keras.layers.BatchNormalization()(inputs)})
    curve_callback = measuring_curve(str(tmp_path), feature_model, real, num_samples=3)
    curve_callback.set_model(FixedSamplesGan(fakes))
    values = curve_callback.measure(step=1)
    expected = metrics.compute(["frechet", "precision_recall"], real,
                               np.asarray(feature_model(fakes, training=False)[classifier.FEATURE_LAYER]),
                               precision_recall={"k": 2})
    assert values == pytest.approx(expected)
    # flushed at once, for a TensorBoard watching the run (the writer is still open)
    assert curve(str(tmp_path))["quality/fcd"] == [(1, pytest.approx(values["frechet_distance"], rel=1e-6))]


def test_a_point_that_only_ties_the_best_does_not_replace_it(tmp_path):
    rng = np.random.default_rng(1)
    real, fakes = rng.normal(size=(8, 2)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    inputs = keras.Input((2,))
    feature_model = keras.Model(inputs, {classifier.FEATURE_LAYER: keras.layers.Identity()(inputs)})
    curve_callback = measuring_curve(str(tmp_path / "logs"), feature_model, real, num_samples=8,
                                     best_dir=str(tmp_path))
    curve_callback.set_model(FixedSamplesGan(fakes))
    first, again = curve_callback.measure(step=1), curve_callback.measure(step=2)
    assert again["frechet_distance"] == first["frechet_distance"]
    assert json.load(open(tmp_path / quality.BEST_INFO))["step"] == 1


def test_a_better_smaller_generator_replaces_the_best_one_whole_on_ram(tmp_path):
    """TensorFlow's ram:// keeps what a file held when it is opened for writing again (the new
    bytes land after it): the best generator is deleted before the next one is saved in its place."""
    rng = np.random.default_rng(2)
    real = rng.normal(size=(8, 2)).astype("float32")
    inputs = keras.Input((2,))
    feature_model = keras.Model(inputs, {classifier.FEATURE_LAYER: keras.layers.Identity()(inputs)})
    best_dir = f"ram://quality-best-{rng.integers(1 << 30)}"
    curve_callback = measuring_curve(str(tmp_path), feature_model, real, num_samples=8, best_dir=best_dir)
    gan = FixedSamplesGan(real + 3.0)
    gan.generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(256), keras.layers.Dense(2)])
    curve_callback.set_model(gan)
    curve_callback.measure(step=1)
    best = f"{best_dir}/{quality.BEST_GENERATOR}"
    first_size = tf.io.gfile.stat(best).length
    gan.samples, gan.generator = real, keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    curve_callback.measure(step=2)
    assert keras.models.load_model(best).count_params() == 6
    assert tf.io.gfile.stat(best).length < first_size


def test_the_real_side_is_a_shuffled_train_batch_in_inference_mode_and_a_model_without_noise_gets_no_curve(
        data, tmp_path):
    root, schema, _ = data
    inputs = keras.Input(tuple(schema["shape"]))
    flat = keras.layers.Flatten()(inputs)
    feature_model = keras.Model(inputs, {classifier.FEATURE_LAYER: keras.layers.BatchNormalization()(flat)})
    feature_model.save(str(tmp_path / classifier.MODEL_FILE))
    (tmp_path / classifier.INFO_FILE).write_text(json.dumps({"feature_space": "classifier"}))
    reference.save(str(tmp_path), {})  # a Classifier artifact has one; the curve reads only the model and info
    args = train_args.TrainArgs.from_params({"eval_every": 2, "eval_samples": 16, "seed": 0})
    writer = tf.summary.create_file_writer(str(tmp_path / "logs"))
    curve_callback = quality.quality_curve(writer, str(tmp_path), root, schema, args, FixedSamplesGan(None),
                                           str(tmp_path))
    real = next(iter(_real_batch(root, schema, 16)))
    np.testing.assert_allclose(curve_callback.real, feature_model(real, training=False)[classifier.FEATURE_LAYER],
                               rtol=1e-6)
    messages = []
    assert quality.quality_curve(writer, str(tmp_path), root, schema, args, object(), str(tmp_path),
                                 log=messages.append) is None
    assert messages and messages[0].startswith("quality curve: not for a model without latent noise")
