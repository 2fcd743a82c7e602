"""Classifier: the offline feature space Evaluate measures generated samples in.

Inception weights cannot be downloaded at run time, so by default this component trains a small
domain classifier on the real train split; its penultimate layer is the feature space of the
FID-type metrics (FCD: Fréchet *Classifier* Distance) and its softmax feeds the classifier score
and mode coverage. It is its own artifact, so every model trained on the same data is measured in
the same, cached feature space. What it builds, by data:

- labelled images (``num_classes >= 2``): a small conv net; feature space ``classifier``;
- labelled vectors: an MLP; feature space ``classifier``;
- ``inception_weights`` set (images): Keras InceptionV3 loaded from that file (with or without its
  top; never downloaded), images resized to 299x299, grey repeated to RGB; feature space
  ``inception`` (2048-d pool features; ImageNet probabilities when the file has the top);
- unlabelled images: a small self-supervised encoder (``components/contrastive.py``: SimCLR's
  NT-Xent over DiffAugment views) with the conv net's body, trained on the train split; feature
  space ``contrastive``. With ``unlabelled_features: pixels``, the pixels average-pooled to at most
  16x16 instead (feature space ``pixels``: Fréchet distances rank poorly there);
- unlabelled vectors: the standardised vectors themselves; feature space ``raw``.

The artifact (``outputs["classifier"].uri``)::

    classifier.keras   inputs as the reader yields them ([-1, 1] images, standardised vectors);
                       dict outputs {"features": [N, D]} plus {"probabilities": [N, C]} if any
    classifier.json    feature_space, feature_layer, outputs, input_shape, num_classes, recipe (the
                       training parameters, which CAS reuses),
                       label_names, train/eval accuracy (null when nothing was trained)
    reference.npz      the train split in this feature space and its statistics, which Evaluate
                       measures every model against (``components/reference.py``)
"""
from __future__ import annotations

import functools
import math
import os

import keras
import tensorflow as tf
from keras import layers

from ganpipe.components import contrastive, reference, specs
from ganpipe.infra import storage
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext, Progress
from ganpipe.components.reader import make_dataset

MODEL_FILE, INFO_FILE = "classifier.keras", "classifier.json"
FEATURE_LAYER, PROBABILITIES_LAYER = "features", "probabilities"
INCEPTION_SIZE = 299
MAX_PIXEL_SIDE = 16  # pixel feature space: pool larger images down to this side
RECIPE = ("epochs", "batch_size", "learning_rate", "width", "feature_dim", "dropout", "seed")



def run(inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict, ctx: ExecutionContext) -> None:
    schema = inputs["schema"].read_json("schema.json")
    info = build_feature_model(inputs["examples"].uri, schema, outputs["classifier"].uri, log=ctx.log,
                               progress=ctx.progress, **params)
    outputs["classifier"].properties.update(
        feature_space=info["feature_space"], feature_dim=info["feature_dim"], eval_accuracy=info["eval_accuracy"])


COMPONENT = specs.CLASSIFIER


def build_feature_model(examples_uri: str, schema: dict, output_dir: str, *, log=print, progress=None,
                        **params) -> dict:
    """Writes classifier.keras and classifier.json into ``output_dir``; returns classifier.json."""
    params = COMPONENT.resolve_parameters(params, "classifier")
    # Keras numbers auto-named layers per process: without this the saved model, and so its
    # fingerprint, would depend on what ran before in the process (as in Train).
    keras.backend.clear_session()
    keras.utils.set_random_seed(params["seed"])
    shape = tuple(schema["shape"])
    num_classes = int(schema.get("num_classes") or 0)
    info = {"input_shape": list(shape), "num_classes": 0, "label_names": [], "train_accuracy": None,
            "eval_accuracy": None, "feature_layer": FEATURE_LAYER}
    if params["inception_weights"] is not None:
        model, has_top = inception_model(params["inception_weights"], shape)
        info.update(feature_space="inception", num_classes=1000 if has_top else 0)
    elif num_classes >= 2:
        model, accuracies = train_classifier(examples_uri, schema, params, log,
                                             progress or functools.partial(Progress, log))
        info.update(feature_space="classifier", num_classes=num_classes,
                    label_names=list(schema.get("label_names") or []), **accuracies)
    elif schema["kind"] == "image" and params["unlabelled_features"] == "contrastive":
        model, _ = contrastive.train_contrastive_encoder(examples_uri, schema, params, conv_body, FEATURE_LAYER,
                                                         progress or functools.partial(Progress, log))
        info["feature_space"] = "contrastive"
        log("no labels: metrics use a self-supervised encoder's features (no classifier score or mode coverage)")
    else:
        model = pixel_model(shape) if schema["kind"] == "image" else raw_model(shape)
        info["feature_space"] = "pixels" if schema["kind"] == "image" else "raw"
        log(f"no labels: metrics use {info['feature_space']} features (no classifier score or mode coverage)")
    # CAS trains this recipe again on generated samples (components/evaluate/synthetic.py)
    info["recipe"] = {name: params[name] for name in RECIPE}
    info["outputs"] = sorted(model.output)
    info["feature_dim"] = int(model.output[FEATURE_LAYER].shape[-1])
    artifact = Artifact(type="FeatureModel", uri=output_dir)
    storage.makedirs(output_dir)
    model.save(artifact.path(MODEL_FILE))
    artifact.write_json(INFO_FILE, info)
    keras.utils.set_random_seed(params["seed"])  # the reference's shuffle reads the global seed too
    reference.save(output_dir, reference.build(model, examples_uri, schema, params["batch_size"], params["seed"]))
    return info


def load_feature_model(classifier_dir: str) -> tuple[keras.Model, dict]:
    """The saved model (dict outputs ``features`` and maybe ``probabilities``) and its info."""
    artifact = Artifact(type="FeatureModel", uri=classifier_dir)
    for name in (MODEL_FILE, INFO_FILE, reference.FILE):
        if not storage.exists(artifact.path(name)):
            raise ComponentError(f"{artifact.path(name)}: missing; is {classifier_dir} a Classifier artifact?")
    return keras.saving.load_model(artifact.path(MODEL_FILE), compile=False), artifact.read_json(INFO_FILE)


# ---------------------------------------------------------------------------- trained classifier


def train_classifier(examples_uri: str, schema: dict, params: dict, log, progress) -> tuple[keras.Model, dict]:
    """Fits the conv net (images) or MLP (vectors) on the train split; accuracy on both splits."""
    trainable, classifier = classifier_network(tuple(schema["shape"]), schema["kind"], int(schema["num_classes"]),
                                               params)

    def split(name, training=False):
        return make_dataset(examples_uri, schema, split=name, batch_size=params["batch_size"], shuffle=training,
                            seed=params["seed"], repeat=training, with_labels=True, drop_remainder=False)

    fit(trainable, split("train", training=True), schema["counts"]["train"], params, progress)
    accuracies = {f"{name}_accuracy": _accuracy(trainable, split(name), schema["counts"][name], params["batch_size"])
                  for name in ("train", "eval") if schema["counts"].get(name, 0)}
    log(f"classifier: train accuracy {accuracies['train_accuracy']:.3f}, "
        f"eval accuracy {accuracies.get('eval_accuracy') or float('nan'):.3f} over {schema['num_classes']} classes")
    return classifier, accuracies


def train_on_samples(samples, labels, kind: str, num_classes: int, params: dict, progress=None) -> keras.Model:
    """The classifier's architecture and recipe (``params``: the Classifier step's) fitted on
    in-memory labelled samples, e.g. a generator's (Classification Accuracy Score); the model's
    outputs are {features, probabilities}."""
    keras.utils.set_random_seed(params["seed"])
    trainable, classifier = classifier_network(tuple(samples.shape[1:]), kind, num_classes, params)
    dataset = tf.data.Dataset.from_tensor_slices((samples, labels.astype("int32"))).shuffle(
        len(samples), seed=params["seed"]).repeat().batch(params["batch_size"])
    fit(trainable, dataset, len(samples), params, progress or functools.partial(Progress, lambda _: None))
    return classifier


def classifier_network(shape, kind: str, num_classes: int, params: dict) -> tuple[keras.Model, keras.Model]:
    """The compiled model to fit (probabilities out) and the same layers with dict outputs
    {features, probabilities} to save."""
    body = conv_body if kind == "image" else mlp_body
    x = keras.Input(shape, name="sample")
    features = layers.Dense(params["feature_dim"], activation="relu", name=FEATURE_LAYER)(body(x, params["width"]))
    hidden = layers.Dropout(params["dropout"])(features)
    probabilities = layers.Dense(num_classes, activation="softmax", name=PROBABILITIES_LAYER)(hidden)
    trainable = keras.Model(x, probabilities, name="classifier")
    trainable.compile(optimizer=keras.optimizers.Adam(params["learning_rate"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return trainable, keras.Model(x, {FEATURE_LAYER: features, PROBABILITIES_LAYER: probabilities}, name="classifier")


def fit(trainable: keras.Model, batches, count: int, params: dict, progress) -> None:
    """``params["epochs"]`` passes of ``count`` examples over the repeating ``batches``."""
    steps_per_epoch = math.ceil(count / params["batch_size"])
    with progress("epoch", params["epochs"], "epochs") as bar:
        report = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: bar.update(
            epoch + 1, loss=float(logs["loss"]), accuracy=float(logs["accuracy"])))
        trainable.fit(batches, epochs=params["epochs"], steps_per_epoch=steps_per_epoch, shuffle=False, verbose=0,
                      callbacks=[report])


def _accuracy(model: keras.Model, dataset, count: int, batch_size: int) -> float:
    steps = math.ceil(count / batch_size)  # the reader's cardinality is unknown to Keras
    return float(model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)["accuracy"])


def conv_body(x, width: int):
    """3x3 conv pairs, the second strided, until the map is at most 4 pixels a side; flattened."""
    h, filters = x, width
    while h.shape[1] > 4 or h.shape[2] > 4:
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(h)
        filters = min(filters * 2, 256)
    return layers.Flatten()(h)


def mlp_body(x, width: int):
    h = layers.Flatten()(x)
    return layers.Dense(width * 4, activation="relu")(h)


# ------------------------------------------------------------------ untrained feature spaces


def pixel_model(shape) -> keras.Model:
    """Pixels in [-1, 1], average-pooled by an integer factor to at most MAX_PIXEL_SIDE a side."""
    x = keras.Input(shape, name="sample")
    factor = max(1, -(-max(shape[0], shape[1]) // MAX_PIXEL_SIDE))
    h = layers.AveragePooling2D(factor, padding="same")(x) if factor > 1 else x
    return keras.Model(x, {FEATURE_LAYER: layers.Flatten(name=FEATURE_LAYER)(h)}, name="pixel_features")


def raw_model(shape) -> keras.Model:
    x = keras.Input(shape, name="sample")
    return keras.Model(x, {FEATURE_LAYER: layers.Flatten(name=FEATURE_LAYER)(x)}, name="raw_features")


def inception_model(weights_path: str, shape) -> tuple[keras.Model, bool]:
    """InceptionV3 from ``weights_path`` behind resizing to 299x299 (grey -> RGB); the [-1, 1]
    input range is already Inception's. Returns the model and whether it has the ImageNet top."""
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ComponentError(f"classifier.inception_weights: Inception needs images with 1 or 3 channels, "
                             f"the data has shape {list(shape)}")
    if not os.path.isfile(weights_path):
        raise ComponentError(f"classifier.inception_weights: no such file {weights_path!r} "
                             "(InceptionV3 weights are never downloaded; give a local .h5 file)")
    base, has_top = _load_inception(weights_path)
    x = keras.Input(shape, name="sample")
    h = layers.Resizing(INCEPTION_SIZE, INCEPTION_SIZE, interpolation="bilinear")(x)
    if shape[2] == 1:
        h = layers.Concatenate()([h, h, h])
    if not has_top:
        return keras.Model(x, {FEATURE_LAYER: layers.Identity(name=FEATURE_LAYER)(base(h))}, name="inception"), False
    features, probabilities = base(h)
    return keras.Model(x, {FEATURE_LAYER: layers.Identity(name=FEATURE_LAYER)(features),
                           PROBABILITIES_LAYER: layers.Identity(name=PROBABILITIES_LAYER)(probabilities)},
                       name="inception"), True


def _load_inception(weights_path: str) -> tuple[keras.Model, bool]:
    """InceptionV3 exactly as Keras defines it (so every weights format Keras reads loads); the
    file decides whether it has the ImageNet top, in which case pool features join the output."""
    from keras.applications import InceptionV3

    input_shape = (INCEPTION_SIZE, INCEPTION_SIZE, 3)
    try:
        full = InceptionV3(include_top=True, weights=weights_path, input_shape=input_shape)
        return keras.Model(full.input, [full.get_layer("avg_pool").output, full.output], name="inception_v3"), True
    except ValueError:
        pass
    try:
        return InceptionV3(include_top=False, weights=weights_path, input_shape=input_shape, pooling="avg"), False
    except ValueError as error:
        raise ComponentError(f"classifier.inception_weights: {weights_path!r} holds no InceptionV3 weights "
                             f"(with or without top): {error}") from error
