"""Classifier and Evaluate components: the feature spaces, metrics that move the right way as a
GAN trains, metrics.json, the TensorBoard report read back from the event files, blessing logic."""
import json
import math
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits
from tensorboard.backend.event_processing import event_accumulator

from ganpipe import ganmodels
from ganpipe.components import classifier, evaluate, export, reference
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext
from ganpipe.components.evaluate import measure, samples
from ganpipe.components.reader import make_dataset
from ganpipe.ganmodels.conditional import ConditionalGAN
from ganpipe.ganmodels.families import build_gan
from ganpipe.ganmodels.metrics import kernel
from ganpipe.ganmodels.metrics.feature_stats import kth_neighbour_distances
from conftest import write_image_examples

N_EVAL = 300
EVAL_PARAMS = {"num_samples": 300, "num_fakes": 1500}  # 5 folds


def _feature(kind, value):
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if kind == "int":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=value))


def write_examples(root, records, schema):
    """Records (dicts of tf.train.Feature) in Preprocess's processed layout: first N_EVAL eval."""
    for split, chunk in (("eval", records[:N_EVAL]), ("train", records[N_EVAL:])):
        os.makedirs(os.path.join(root, split))
        with tf.io.TFRecordWriter(os.path.join(root, split, "part-00000.tfrecord")) as writer:
            for features in chunk:
                writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    schema = {"dtype": "uint8", "lowres_shape": None, "label_names": [], "num_classes": 0, **schema,
              "counts": {"train": len(records) - N_EVAL, "eval": N_EVAL}}
    with open(os.path.join(root, "schema.json"), "w") as f:
        json.dump(schema, f)
    return schema


def digit_images(size):
    digits = load_digits()
    images = digits.images[..., None] / 16.0
    if size != 8:
        images = tf.image.resize(images, (size, size), method="area").numpy()
    return (images * 255).round().clip(0, 255).astype("uint8"), digits.target


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """sklearn's 8x8 digits, labelled: 1497 train, 300 eval."""
    root = str(tmp_path_factory.mktemp("digits"))
    images, labels = digit_images(8)
    records = [{"image": _feature("bytes", image.tobytes()), "label": _feature("int", int(label))}
               for image, label in zip(images, labels)]
    schema = write_examples(root, records, {"kind": "image", "shape": [8, 8, 1], "channels": 1, "num_classes": 10,
                                            "label_names": [str(i) for i in range(10)]})
    return root, schema


@pytest.fixture(scope="module")
def feature_space(digits, tmp_path_factory):
    """The Classifier component's executor on the digits."""
    root, _ = digits
    out = Artifact("FeatureModel", str(tmp_path_factory.mktemp("classifier")))
    params = classifier.COMPONENT.resolve_parameters({"epochs": 4})
    classifier.COMPONENT.execute({"examples": Artifact("Examples", root), "schema": Artifact("Schema", root)},
                                  {"classifier": out}, params, ExecutionContext("p", "Classifier", 1, log=print))
    return out


def test_same_classifier_gives_the_same_fingerprint_whatever_ran_before(feature_space, digits, tmp_path):
    """As for Train: equal weights must give an equal fingerprint, or Train and Evaluate re-run
    after a Classifier step that ran in a process where other layers were built first."""
    from ganpipe.infra import fingerprints

    keras.layers.Flatten(), keras.layers.Conv2D(2, 3), keras.layers.Dense(2)  # e.g. an earlier step
    root, _ = digits
    again = Artifact("FeatureModel", str(tmp_path))
    classifier.COMPONENT.execute({"examples": Artifact("Examples", root), "schema": Artifact("Schema", root)},
                                  {"classifier": again}, classifier.COMPONENT.resolve_parameters({"epochs": 4}),
                                  ExecutionContext("p", "Classifier", 2, log=lambda message: None))
    assert fingerprints.artifact_fingerprint(again.uri) == fingerprints.artifact_fingerprint(feature_space.uri)


def write_model(directory, gan, family, schema, steps, ema=None):
    """A Train Model artifact in its documented layout."""
    os.makedirs(directory, exist_ok=True)
    gan.generator.save(os.path.join(directory, "generator.keras"))
    gan.discriminator.save(os.path.join(directory, "discriminator.keras"))
    if ema is not None:
        ema.save(os.path.join(directory, "generator_ema.keras"))
    info = {"family": family, "latent_dim": gan.latent_dim, "num_classes": int(getattr(gan, "num_classes", 0)),
            "data_kind": schema["kind"], "data_shape": schema["shape"], "lowres_shape": schema.get("lowres_shape"),
            "normalization": schema.get("normalization"), "steps": steps, "precision": "float32", "seed": 0,
            "ema": ema is not None}
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(info, f)
    return Artifact("Model", directory)


@pytest.fixture(scope="module")
def mlp_models(digits, tmp_path_factory):
    """The same MLP GAN untrained and after 800 steps."""
    root, schema = digits
    keras.utils.set_random_seed(0)
    gan = build_gan("mlp", (8, 8, 1), latent_dim=16, hidden=(64, 64))
    gan.compile()
    untrained = write_model(str(tmp_path_factory.mktemp("untrained")), gan, "mlp", schema, 0)
    gan.fit(make_dataset(root, schema, batch_size=64, seed=0, repeat=True), steps_per_epoch=800, epochs=1, verbose=0)
    trained = write_model(str(tmp_path_factory.mktemp("trained")), gan, "mlp", schema, 800)
    return untrained, trained


def run_evaluate(model, digits, feature_space, tmp_path_factory, served=None, **params):
    root, _ = digits
    outputs = {"evaluation": Artifact("Evaluation", str(tmp_path_factory.mktemp("evaluation"))),
               "blessing": Artifact("Blessing", str(tmp_path_factory.mktemp("blessing")))}
    inputs = {"model": model, "examples": Artifact("Examples", root), "schema": Artifact("Schema", root),
              "classifier": feature_space, **({"served": served} if served else {})}
    context = ExecutionContext("p", "Evaluate", 2, log=print)
    evaluate.COMPONENT.execute(inputs, outputs, evaluate.COMPONENT.resolve_parameters({**EVAL_PARAMS, **params}),
                                context)
    return outputs["evaluation"], outputs["blessing"]


def push(model, digits, tmp_path_factory):
    """``model`` exported (forced) as version 1 of its own serving directory: its PushedModel."""
    _, schema = digits
    pushed = Artifact("PushedModel", str(tmp_path_factory.mktemp("pushed")))
    export.export_model(model.uri, schema, None, pushed.uri, export_base=str(tmp_path_factory.mktemp("serving")),
                        force=True, model_fingerprint=f"f-{os.path.basename(model.uri)}", log=lambda line: None)
    return pushed


@pytest.fixture(scope="module")
def evaluations(mlp_models, digits, feature_space, tmp_path_factory):
    """Trained first (nothing served: blessed), then served; untrained measured beside it."""
    untrained, trained = mlp_models
    trained_eval, trained_blessing = run_evaluate(trained, digits, feature_space, tmp_path_factory)
    served = push(trained, digits, tmp_path_factory)
    untrained_eval, untrained_blessing = run_evaluate(untrained, digits, feature_space, tmp_path_factory,
                                                      served=served)
    return {"trained": (trained_eval, trained_blessing), "untrained": (untrained_eval, untrained_blessing),
            "served": served}


def values(evaluation):
    return {name: entry["value"] for name, entry in evaluation.read_json("metrics.json")["metrics"].items()}


# ------------------------------------------------------------------------------ Classifier


def test_classifier_artifact(feature_space):
    info = feature_space.read_json(classifier.INFO_FILE)
    assert info["feature_space"] == "classifier" and info["num_classes"] == 10 and info["input_shape"] == [8, 8, 1]
    assert info["outputs"] == ["features", "probabilities"] and info["feature_layer"] == "features"
    assert info["feature_dim"] == 128 and info["label_names"] == [str(i) for i in range(10)]
    assert 0.7 < info["eval_accuracy"] <= 1.0 and info["train_accuracy"] >= info["eval_accuracy"] - 0.1
    assert feature_space.properties == {"feature_space": "classifier", "feature_dim": 128,
                                        "eval_accuracy": info["eval_accuracy"]}
    model, _ = classifier.load_feature_model(feature_space.uri)
    outputs = model(np.zeros((3, 8, 8, 1), "float32"), training=False)
    assert outputs["features"].shape == (3, 128)
    np.testing.assert_allclose(np.sum(outputs["probabilities"], axis=1), 1.0, rtol=1e-5)


def test_the_classifier_keeps_the_train_split_and_its_statistics_as_the_reference(feature_space, digits):
    root, schema = digits
    stored = reference.load(feature_space.uri)
    model, _ = classifier.load_feature_model(feature_space.uri)
    train = np.concatenate([batch.numpy() for batch in make_dataset(root, schema, "train", batch_size=500,
                                                                    shuffle=False, drop_remainder=False)])
    direct = samples.batched_call(model, [train], 500)
    assert len(stored["features"]) == len(train) == 1497  # every train example, none of the eval split
    np.testing.assert_allclose(stored["features"].mean(0), direct["features"].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.cov(stored["features"].T), np.cov(direct["features"].T), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(stored["probabilities"].sum(0), direct["probabilities"].sum(0), rtol=1e-4)
    features = direct["features"].astype("float64")
    assert float(stored["kernel_within"]) == pytest.approx(kernel.within(features), rel=1e-6)
    for k in (3, 5):  # radii of the k the k-NN metrics use, as a set (the stored order is shuffled)
        np.testing.assert_allclose(np.sort(stored[f"radii_{k}"]),
                                   np.sort(kth_neighbour_distances(features, k, "direct")), rtol=1e-5)


def test_evaluate_measures_against_the_stored_reference(mlp_models, digits, feature_space, evaluations,
                                                        tmp_path_factory):
    """Evaluate reads the Classifier's reference statistics instead of recomputing them."""
    tampered = Artifact("FeatureModel", str(tmp_path_factory.mktemp("tampered") / "classifier"))
    shutil.copytree(feature_space.uri, tampered.uri)
    stored = reference.load(tampered.uri)
    reference.save(tampered.uri, {**stored, "kernel_within": stored["kernel_within"] + 0.1,
                                  "radii_3": np.zeros_like(stored["radii_3"])})
    original = evaluations["trained"][0].read_json("metrics.json")["metrics"]
    measured = run_evaluate(mlp_models[1], digits, tampered, tmp_path_factory)[0].read_json("metrics.json")["metrics"]
    assert measured["kid"]["value"] == pytest.approx(original["kid"]["value"] + 0.1, abs=1e-5)
    assert measured["precision"]["value"] == 0.0 and original["precision"]["value"] > 0.3  # zero radii hold nothing
    assert measured["fcd"]["value"] == pytest.approx(original["fcd"]["value"], rel=1e-6)


def test_unlabelled_data_uses_pixels_or_raw_vectors(tmp_path):
    photos = np.random.default_rng(1).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    image_schema = write_image_examples(str(tmp_path / "images"), photos, eval_count=10)
    pixels = classifier.build_feature_model(str(tmp_path / "images"), image_schema, str(tmp_path / "p"),
                                            unlabelled_features="pixels")
    assert pixels["feature_space"] == "pixels" and pixels["feature_dim"] == 16 * 16 * 3
    assert pixels["eval_accuracy"] is None and pixels["outputs"] == ["features"]
    model, _ = classifier.load_feature_model(str(tmp_path / "p"))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    pooled = images.reshape(2, 16, 2, 16, 2, 3).mean(axis=(2, 4)).reshape(2, -1)
    np.testing.assert_allclose(model(images, training=False)["features"], pooled, atol=1e-6)
    train = photos[10:].astype("float32") / 127.5 - 1.0
    pooled_train = train.reshape(20, 16, 2, 16, 2, 3).mean(axis=(2, 4)).reshape(20, -1)
    stored = reference.load(str(tmp_path / "p"))["features"]  # the reference: every train image, pooled
    np.testing.assert_allclose(stored[np.lexsort(stored.T)], pooled_train[np.lexsort(pooled_train.T)], atol=1e-5)
    rows = np.random.default_rng(2).normal(size=(N_EVAL + 20, 5))
    vector_schema = write_examples(str(tmp_path / "vectors"), [{"features": _feature("float", row.tolist())}
                                                                for row in rows],
                                   {"kind": "vector", "shape": [5], "dtype": "float32", "channels": None,
                                    "normalization": {"mean": [0.0] * 5, "std": [1.0] * 5}})
    raw = classifier.build_feature_model(str(tmp_path / "vectors"), vector_schema, str(tmp_path / "r"))
    assert raw["feature_space"] == "raw" and raw["feature_dim"] == 5
    assert reference.load(str(tmp_path / "r"))["vectors"].shape == (20, 5)


def test_inception_weights_must_exist(tmp_path):
    schema = {"kind": "image", "shape": [8, 8, 1], "num_classes": 10, "counts": {"train": 1, "eval": 1}}
    with pytest.raises(ComponentError, match=r"inception_weights: no such file '.*nope\.h5'.*never downloaded"):
        classifier.build_feature_model("unused", schema, str(tmp_path), inception_weights=str(tmp_path / "nope.h5"))
    with pytest.raises(ComponentError, match="Inception needs images with 1 or 3 channels"):
        classifier.build_feature_model("unused", {**schema, "kind": "vector", "shape": [4]}, str(tmp_path),
                                       inception_weights=str(tmp_path / "nope.h5"))


# ------------------------------------------------------------------------------ Evaluate


def test_metrics_move_the_right_way_with_training(evaluations):
    before, after = values(evaluations["untrained"][0]), values(evaluations["trained"][0])
    for lower_is_better in ("fcd", "kid", "class_kl_uniform"):
        assert after[lower_is_better] < 0.7 * before[lower_is_better], lower_is_better
    for higher_is_better in ("precision", "coverage", "classifier_score", "class_entropy"):
        assert after[higher_is_better] > before[higher_is_better], higher_is_better
    assert after["precision"] > 0.3 and before["precision"] < 0.1


def test_baselines_are_real_vs_real_and_beat_the_model(evaluations):
    trained_report, untrained_report = (evaluations[name][0].read_json("metrics.json") for name in ("trained", "untrained"))
    assert trained_report["feature_space_id"] == untrained_report["feature_space_id"]  # comparable runs
    assert trained_report["feature_space_id"].startswith("classifier:")
    trained, untrained = trained_report["metrics"], untrained_report["metrics"]
    for name in ("fcd", "kid", "precision", "recall", "coverage", "classifier_score", "classes_present"):
        assert trained[name]["baseline"] == untrained[name]["baseline"], name  # same data, same seed
        assert trained[name]["baseline_kind"] == "real_vs_real"
    assert trained["fcd"]["baseline"] < trained["fcd"]["value"]
    assert trained["precision"]["baseline"] > 0.7 and trained["classes_present"]["baseline"] == 10
    assert trained["classifier_score"]["baseline"] > 5  # 10 well-separated classes
    for name in ("d_accuracy", "d_accuracy_real", "d_accuracy_fake"):
        assert trained[name]["baseline"] is None and trained[name]["baseline_kind"] is None
        assert 0.0 <= trained[name]["value"] <= 1.0


def test_metrics_json_content(evaluations, mlp_models):
    evaluation, _ = evaluations["trained"]
    with open(evaluation.path("metrics.json")) as f:  # strict JSON: no NaN/Infinity literals
        report = json.loads(f.read(), parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert report["feature_space"] == "classifier" and report["num_samples"] == 300
    assert report["samples"] == {"reference": 1497, "held_out": 300, "fold": 300, "folds": 5, "fakes": 1500}
    assert report["main_metric"] == "fcd" and 0.7 < report["classifier_eval_accuracy"] <= 1
    assert report["model"]["generator"] == "generator.keras" and report["model"]["steps"] == 800
    assert report["model"]["dir"] == os.path.abspath(mlp_models[1].uri) and report["served"] is None
    expected = {"fcd", "kid", "precision", "recall", "density", "coverage", "classifier_score", "classes_present",
                "class_entropy", "class_entropy_normalized", "class_kl_uniform", "class_kl_real", "d_accuracy",
                "d_accuracy_real", "d_accuracy_fake", "copying_share", "copying_ct", "membership_auc_d",
                "membership_auc_distance"}
    assert set(report["metrics"]) == expected
    for name, entry in report["metrics"].items():
        assert set(entry) == {"value", "std", "baseline", "baseline_std", "baseline_kind", "better"}
        assert entry["better"] in ("lower", "higher", "neither")
    assert report["metrics"]["fcd"]["better"] == "lower" and report["metrics"]["coverage"]["better"] == "higher"
    assert evaluation.properties["fcd"] == report["metrics"]["fcd"]["value"]
    assert evaluation.properties["main_metric"] == "fcd" and os.path.getsize(evaluation.path("samples.png")) > 0


def test_every_metric_has_its_sampling_std(evaluations):
    """A std for every value and every real-vs-real baseline; the spread over folds is real noise
    (not zero), and small beside the gap between a trained and an untrained model."""
    trained, untrained = (evaluations[name][0].read_json("metrics.json")["metrics"] for name in ("trained", "untrained"))
    for name, entry in trained.items():
        assert entry["std"] is not None and entry["std"] >= 0, name
        assert (entry["baseline_std"] is not None) == (entry["baseline"] is not None), name
    for name in ("fcd", "kid", "precision", "recall", "coverage", "d_accuracy"):
        assert trained[name]["std"] > 0, name
    for name in ("fcd", "kid", "precision", "coverage"):
        assert trained[name]["baseline_std"] > 0, name
        gap = abs(untrained[name]["value"] - trained[name]["value"])
        assert gap > 5 * max(trained[name]["std"], untrained[name]["std"]), name


def test_the_std_predicts_how_far_another_draw_of_fakes_moves(evaluations, mlp_models, digits, feature_space,
                                                             tmp_path_factory):
    """Other latent draws (another seed): each metric moves, by no more than its stated noise allows."""
    _, trained = mlp_models
    other, _ = run_evaluate(trained, digits, feature_space, tmp_path_factory, seed=1)
    first = evaluations["trained"][0].read_json("metrics.json")["metrics"]
    second = other.read_json("metrics.json")["metrics"]
    for name in ("fcd", "kid", "precision", "coverage"):
        moved = abs(first[name]["value"] - second[name]["value"])
        real_side = abs(first[name]["baseline"] - second[name]["baseline"])  # the seed also redraws the reals
        assert 0 < moved < 4 * math.hypot(first[name]["std"], second[name]["std"]) + real_side, name


def test_tensorboard_eval_report(evaluations):
    evaluation, _ = evaluations["untrained"]
    events = event_accumulator.EventAccumulator(evaluation.path("logs", "eval"),
                                                size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    report = evaluation.read_json("metrics.json")
    scalar = lambda tag: float(tf.make_ndarray(events.Tensors(tag)[0].tensor_proto))  # noqa: E731
    for name, entry in report["metrics"].items():
        assert scalar(f"quality/{name}") == pytest.approx(entry["value"], rel=1e-5)
        assert scalar(f"quality/{name}_std") == pytest.approx(entry["std"], rel=1e-5)
        assert (f"real_vs_real/{name}" in tags) == (entry["baseline"] is not None)
        assert (f"served/{name}" in tags) == ("served" in entry)
    assert scalar("served/fcd") == pytest.approx(report["metrics"]["fcd"]["served"]["value"], rel=1e-5)
    assert [event.step for event in events.Tensors("quality/fcd")] == [0]
    plugin = lambda tag: events.SummaryMetadata(tag).plugin_data.plugin_name  # noqa: E731
    assert plugin("quality/fcd") == "scalars" and plugin("quality/report") == "text"
    assert plugin("quality/samples") == "images"
    assert "_hparams_/session_start_info" not in tags  # one trial per pipeline run, written by the pipeline
    table = tf.make_ndarray(events.Tensors("quality/report")[0].tensor_proto).item().decode()
    assert "| metric | model | baseline | served | difference | better |" in table
    fcd = report["metrics"]["fcd"]
    assert (f"| fcd **(main)** | {fcd['value']:.4g} ± {fcd['std']:.2g} | {fcd['baseline']:.4g} ± "
            f"{fcd['baseline_std']:.2g} | {fcd['served']['value']:.4g} ± {fcd['served']['std']:.2g} | "
            f"{fcd['served']['difference']:+.4g} ± {fcd['served']['difference_std']:.2g} | lower |") in table
    assert "Served: version 1 (" in table and "5 folds of 300 fakes against 1497 train examples" in table
    grid = tf.make_ndarray(events.Tensors("quality/samples")[0].tensor_proto)
    assert tf.io.decode_png(grid[2]).shape == (8 * 9 + 1, 8 * 9 + 1, 1)  # 8 x 8 samples of 8 x 8


def test_blessing_through_the_component(evaluations):
    _, trained = evaluations["trained"]
    blessing = trained.read_json("blessing.json")
    assert blessing["blessed"] is True and trained.properties["blessed"] is True
    assert blessing["reasons"] == ["no model is served under this model name: nothing to compare with"]
    assert trained.properties["main_metric"] == "fcd" and trained.properties["num_samples"] == 300
    assert trained.properties["main_metric_value"] == blessing["metrics"]["fcd"]["value"]
    _, untrained = evaluations["untrained"]
    blessing = untrained.read_json("blessing.json")
    assert blessing["blessed"] is False and untrained.properties["blessed"] is False
    assert len(blessing["reasons"]) == 1 and blessing["reasons"][0].startswith("fcd ")
    assert "of served version 1: difference +" in blessing["reasons"][0]
    assert "worse by more than 1.64 std (one-sided test at level 0.05, paired over 5 folds)" in blessing["reasons"][0]
    assert blessing["served"]["version"] == 1 and blessing["served"]["model_fingerprint"].startswith("f-")


def test_the_served_model_is_measured_alike(evaluations, mlp_models, digits, feature_space, tmp_path_factory):
    """The served SavedModel of the same generator, on the same folds: the same values and no
    difference, so nothing about the measurement differs between the two sides."""
    _, trained = mlp_models
    evaluation, blessing = run_evaluate(trained, digits, feature_space, tmp_path_factory, served=evaluations["served"])
    metrics = evaluation.read_json("metrics.json")["metrics"]
    for name in ("fcd", "kid", "precision", "recall", "coverage", "classifier_score"):
        assert metrics[name]["served"]["value"] == pytest.approx(metrics[name]["value"], rel=1e-3, abs=1e-5), name
        assert abs(metrics[name]["served"]["difference"]) <= 1e-3 * abs(metrics[name]["value"]) + 1e-5, name
    assert "served" not in metrics["d_accuracy"]  # a SavedModel has no D
    assert blessing.read_json("blessing.json")["blessed"] is True


def test_a_model_within_noise_of_the_served_one_is_blessed(evaluations, mlp_models, digits, feature_space,
                                                          tmp_path_factory):
    """The trained generator with every weight nudged: measurably different, not worse by more
    than the noise, so blessed; the untrained one beside the same served model is refused."""
    _, trained = mlp_models
    generator = keras.saving.load_model(os.path.join(trained.uri, "generator.keras"), compile=False)
    rng = np.random.default_rng(5)
    for weight in generator.weights:
        weight.assign(weight.numpy() * (1 + 0.02 * rng.standard_normal(weight.shape)).astype("float32"))
    nudged = str(tmp_path_factory.mktemp("nudged"))
    for name in ("discriminator.keras", "model.json"):
        shutil.copy(os.path.join(trained.uri, name), nudged)
    generator.save(os.path.join(nudged, "generator.keras"))
    evaluation, blessing = run_evaluate(Artifact("Model", nudged), digits, feature_space, tmp_path_factory,
                                        served=evaluations["served"])
    fcd = evaluation.read_json("metrics.json")["metrics"]["fcd"]
    assert fcd["served"]["difference"] != 0.0
    assert blessing.read_json("blessing.json")["blessed"] is True, blessing.read_json("blessing.json")["reasons"]
    assert evaluations["untrained"][1].read_json("blessing.json")["blessed"] is False


def test_discriminator_accuracy_scores_reals_and_fakes_apart():
    """D = mean pixel + 0.5: digits (mostly -1 background) score below 0, fakes of value 0.1 and
    0.9 above; each side is counted on its own samples."""
    x = keras.Input((4, 4, 1))
    d = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(1 / 16),
                           bias_initializer=keras.initializers.Constant(0.5))(keras.layers.Flatten()(x))
    discriminator = keras.Model(x, d)
    reals = np.concatenate([np.full((6, 4, 4, 1), -1.0), np.full((2, 4, 4, 1), 0.0)]).astype("float32")
    fakes = np.concatenate([np.full((3, 4, 4, 1), 0.9), np.full((1, 4, 4, 1), -0.8)]).astype("float32")
    fold = measure.Fold(fakes, samples.Split(reals), {}, discriminator, threshold=0.0)
    setup = measure.Setup({"batch_size": 3}, {}, "pixels", [], {}, None, {})
    result = measure.discriminator_accuracy(setup, fold)
    assert result == {"d_accuracy_real": 2 / 8, "d_accuracy_fake": 1 / 4, "d_accuracy": (2 / 8 + 1 / 4) / 2}


# -------------------------------------------------------------------------- blessing logic


def entry(value, better, std=0.1, baseline=None, served=None):
    return {"value": value, "std": std, "baseline": baseline, "baseline_std": None,
            "baseline_kind": None if baseline is None else "real_vs_real", "better": better,
            **({"served": served} if served else {})}


def report(fcd=10.0, precision=0.6, d_accuracy=0.7, main="fcd", served=None, fcd_baseline=None):
    """A report as Evaluate writes it; ``served`` = (served value, difference, difference std) of
    the main metric measured beside it."""
    compared = None if served is None else {"value": served[0], "std": 0.1, "difference": served[1],
                                            "difference_std": served[2]}
    metrics = {"fcd": entry(fcd, "lower", baseline=fcd_baseline), "precision": entry(precision, "higher"),
               "d_accuracy": entry(d_accuracy, "neither")}
    metrics[main] = {**metrics[main], **({"served": compared} if compared else {})}
    return {"feature_space": "classifier", "feature_space_id": "space-a", "num_samples": 500, "main_metric": main,
            "samples": {"reference": 1000, "held_out": 500, "fold": 500, "folds": 20, "fakes": 10000},
            "model": {}, "metrics": metrics,
            "served": None if served is None else {"version": 3, "destination": "/s/m/3", "model_fingerprint": "f"}}


def decide(rep, **params):
    return evaluate.decide_blessing(rep, params)


def test_thresholds():
    assert decide(report(), fcd_below=11.0, precision_above=0.5, d_accuracy_within=0.25)["blessed"] is True
    result = decide(report(), fcd_below=9.0, precision_above=0.5)
    assert result["blessed"] is False and result["reasons"] == ["fcd 10 is not below 9.0 (fcd_below)"]
    assert decide(report(precision=0.4), precision_above=0.5)["blessed"] is False
    result = decide(report(d_accuracy=0.9), d_accuracy_within=0.25)
    assert result["blessed"] is False and result["reasons"] == ["|d_accuracy - 0.5| = 0.4 is not within 0.25 "
                                                                "(d_accuracy_within)"]
    assert decide(report(d_accuracy=0.3), d_accuracy_within=0.25)["blessed"] is True
    result = decide(report(), recall_above=0.1)
    assert result["blessed"] is False and result["reasons"] == ["recall was not computed for this model "
                                                                "(recall_above=0.1)"]
    result = decide(report(fcd=None), no_worse_than_served=False)
    assert result["blessed"] is False and result["reasons"] == ["fcd is not finite"]
    checks = decide(report(), fcd_below=11.0)["checks"]
    assert checks[0] == {"check": "fcd_below", "metric": "fcd", "value": 10.0, "limit": 11.0, "passed": True,
                         "reason": "fcd 10 is below 11.0 (fcd_below)"}


def test_fcd_threshold_relative_to_the_real_vs_real_baseline():
    assert decide(report(fcd=14.0, fcd_baseline=10.0), fcd_below_ratio=1.5)["blessed"] is True
    result = decide(report(fcd=16.0, fcd_baseline=10.0), fcd_below_ratio=1.5)
    assert result["blessed"] is False and result["reasons"] == ["fcd / real-vs-real 1.6 is not below 1.5 "
                                                                "(fcd_below_ratio)"]
    assert decide(report(fcd=16.0), fcd_below_ratio=1.5)["reasons"] == [
        "fcd / real-vs-real is not finite (fcd_below_ratio=1.5)"]  # no baseline: no ratio, refused


def test_the_gate_refuses_only_a_model_worse_by_more_than_the_noise():
    """One-sided test at level 0.05: refused when the paired difference exceeds 1.645 std."""
    nothing = decide(report(fcd=50.0))
    assert nothing["blessed"] is True and nothing["reasons"] == [
        "no model is served under this model name: nothing to compare with"]
    assert decide(report(fcd=10.3, served=(10.0, 0.3, 0.2)))["blessed"] is True  # 1.5 std worse: within noise
    worse = decide(report(fcd=10.4, served=(10.0, 0.4, 0.2)))  # 2 std worse
    assert worse["blessed"] is False
    assert worse["reasons"] == ["fcd 10.4 vs 10 of served version 3: difference +0.4 ± 0.2, worse by more than "
                                "1.64 std (one-sided test at level 0.05, paired over 20 folds)"]
    assert decide(report(fcd=10.4, served=(10.0, 0.4, 0.2)), no_worse_level=0.01)["blessed"] is True  # z = 2.33
    assert decide(report(fcd=10.4, served=(10.0, 0.4, 0.2)), no_worse_than_served=False)["blessed"] is True
    assert decide(report(fcd=5.0, served=(10.0, -5.0, 0.2)))["blessed"] is True  # better
    assert decide(report(fcd=10.0, served=(10.0, 0.0, 0.0)))["blessed"] is True  # the served model itself
    # higher is better: a lower value is the worse one
    assert decide(report(main="precision", precision=0.5, served=(0.6, -0.1, 0.02)))["blessed"] is False
    assert decide(report(main="precision", precision=0.7, served=(0.6, 0.1, 0.02)))["blessed"] is True
    # the served model's value or the difference's std not finite: no comparison can pass
    for served in ((None, None, None), (10.0, 0.3, None)):
        result = decide(report(fcd=10.0, served=served))
        assert result["blessed"] is False and result["reasons"] == [
            "fcd of the served version 3 or the difference is not finite (one-sided test at level 0.05, paired "
            "over 20 folds)"]


def test_the_gate_records_what_export_decides_with():
    check = decide(report(fcd=10.4, served=(10.0, 0.4, 0.2)))["checks"][-1]
    assert check["check"] == evaluate.GATE and check["served"]["version"] == 3
    assert (check["difference"], check["difference_std"], check["level"], check["better"]) == (0.4, 0.2, 0.05, "lower")
    assert evaluate.gate_passes(check) is False and evaluate.gate_passes({**check, "difference": 0.3}) is True


# ---------------------------------------------------------------- other model kinds


def test_conditional_model_grid_has_a_row_per_class(digits, feature_space, tmp_path_factory):
    _, schema = digits
    keras.utils.set_random_seed(1)
    generator, discriminator = ganmodels.build_networks("cgan", (8, 8, 1), latent_dim=8, num_classes=10, width=8)
    model = write_model(str(tmp_path_factory.mktemp("cgan")),
                        ConditionalGAN(generator, discriminator, 8, 10), "cgan", schema, 0)
    evaluation, blessing = run_evaluate(model, digits, feature_space, tmp_path_factory, num_samples=100)
    report = evaluation.read_json("metrics.json")
    assert report["num_samples"] == 100 and {"fcd", "d_accuracy", "classes_present"} <= set(report["metrics"])
    grid = tf.io.decode_png(tf.io.read_file(evaluation.path("samples.png")))
    assert grid.shape == (4 * (10 * 9 + 1), 4 * (8 * 9 + 1), 1)  # 10 classes x 8 columns, drawn 4x


def test_superresolution_model_reports_psnr_ssim_against_bicubic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sr"))
    highres, _ = digit_images(16)
    lowres = tf.image.resize(highres.astype("float32"), (8, 8), method="area").numpy().round().astype("uint8")
    records = [{"image": _feature("bytes", hi.tobytes()), "image_lowres": _feature("bytes", lo.tobytes()),
                "label": _feature("int", -1)} for hi, lo in zip(highres[:600], lowres[:600])]
    schema = write_examples(root, records, {"kind": "image", "shape": [16, 16, 1], "channels": 1,
                                            "lowres_shape": [8, 8, 1]})
    features = Artifact("FeatureModel", str(tmp_path_factory.mktemp("pixels")))
    classifier.build_feature_model(root, schema, features.uri, unlabelled_features="pixels")
    keras.utils.set_random_seed(2)
    gan = build_gan("srgan", (16, 16, 1), lowres_shape=(8, 8, 1), residual_blocks=1, filters=8, width=8, stages=1,
                    dense_units=16, bicubic_skip=False)
    model = write_model(str(tmp_path_factory.mktemp("srgan")), gan, "srgan", schema, 0)
    evaluation, blessing = run_evaluate(model, (root, schema), features, tmp_path_factory, num_samples=50,
                                        psnr_above=40.0)
    metrics = evaluation.read_json("metrics.json")["metrics"]
    assert evaluation.read_json("metrics.json")["feature_space"] == "pixels" and "fd" in metrics
    for name in ("psnr", "ssim"):
        assert metrics[name]["baseline_kind"] == "bicubic" and metrics[name]["better"] == "higher"
    assert metrics["psnr"]["baseline"] > 15  # bicubic x2 of smooth digits
    assert metrics["psnr"]["value"] < metrics["psnr"]["baseline"]  # an untrained SRGAN is worse than bicubic
    result = blessing.read_json("blessing.json")
    assert result["main_metric"] == "psnr" and result["blessed"] is False
    assert result["reasons"][0].startswith("psnr ") and "is not above 40.0 (psnr_above)" in result["reasons"][0]


def test_vector_model_reports_tabular_metrics(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vectors"))
    rng = np.random.default_rng(0)
    data = rng.multivariate_normal([1.0, -2.0, 0.5], [[1, 0.8, 0], [0.8, 1, 0], [0, 0, 0.5]], size=700)
    records = [{"features": _feature("float", row.tolist()), "label": _feature("int", -1)} for row in data]
    schema = write_examples(root, records, {"kind": "vector", "shape": [3], "dtype": "float32", "channels": None,
                                            "feature_names": ["a", "b", "c"],
                                            "normalization": {"mean": data.mean(0).tolist(),
                                                              "std": data.std(0).tolist()}})
    features = Artifact("FeatureModel", str(tmp_path_factory.mktemp("raw")))
    classifier.build_feature_model(root, schema, features.uri)
    keras.utils.set_random_seed(3)
    model = write_model(str(tmp_path_factory.mktemp("mlp_vec")), build_gan("mlp", (3,), latent_dim=4, hidden=(8,)),
                        "mlp", schema, 0)
    evaluation, _ = run_evaluate(model, (root, schema), features, tmp_path_factory, num_samples=200)
    metrics = evaluation.read_json("metrics.json")["metrics"]
    assert {"fd", "ks_mean", "ks_max", "correlation_distance", "precision"} <= set(metrics)
    assert "classifier_score" not in metrics and "fcd" not in metrics
    assert metrics["ks_mean"]["baseline"] < metrics["ks_mean"]["value"]
    assert metrics["correlation_distance"]["baseline"] < 0.3 < metrics["correlation_distance"]["value"]


def test_too_few_eval_examples_is_an_error(digits, mlp_models, feature_space, tmp_path):
    root, schema = digits
    few = {**schema, "counts": {"train": 1497, "eval": 5}}
    with pytest.raises(ComponentError, match="at least 10 train and eval examples"):
        evaluate.evaluate_model(mlp_models[0].uri, root, few, feature_space.uri, str(tmp_path))
    with pytest.raises(ComponentError, match="main_metric: 'psnr' was not computed"):
        evaluate.evaluate_model(mlp_models[0].uri, root, schema, feature_space.uri, str(tmp_path), num_samples=20,
                                num_fakes=40, main_metric="psnr")


def test_a_threshold_met_exactly_passes_only_within():
    """"below" and "above" are strict; "within" includes its limit."""
    assert decide(report(fcd=10.0), fcd_below=10.0)["blessed"] is False
    assert decide(report(precision=0.5), precision_above=0.5)["blessed"] is False
    assert decide(report(d_accuracy=0.75), d_accuracy_within=0.25)["blessed"] is True
