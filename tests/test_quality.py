"""The quality curve during training: Fréchet distance, precision and recall in the Classifier's
feature space every eval_every steps, to TensorBoard, and the best generator kept."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from ganpipe.components import classifier, quality, train
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
    assert os.path.getmtime(tmp_path / quality.BEST_GENERATOR) == saved
    os.remove(tmp_path / quality.BEST_GENERATOR)  # a best.json without its generator is no best point
    assert quality.read_best(str(tmp_path)) is None
