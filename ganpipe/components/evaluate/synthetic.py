"""The questions users of synthetic data ask, answered beside the fidelity metrics:

- does the model copy its training examples? (``copying``: each fake's feature-space distance to
  its nearest train example against the same for held-out eval examples; a grid of the closest
  (fake, train) pairs; ``evaluate.max_copying`` gates on ``copying_share``)
- does its data train a useful model? (``utility``: Classification Accuracy Score, for conditional
  models on labelled data: the Classifier's architecture and recipe trained on balanced generated
  labelled samples, tested on the held-out eval examples, beside the real-trained accuracy)
- can an attacker tell its training examples from unseen ones? (the membership audit: AUCs of a
  threshold attack on D's logits and of GAN-Leaks' distance attack in pixel space, where no learned
  feature space trained on the members themselves can leak membership into the measurement)

The train side is the whole train split up to ``MAX_MEMBERS`` examples (a fake copying an
example outside a subsample would not be found close to it); the fakes are ``AUDIT_FAKES`` of their
own, with balanced labels for conditional models, the first train-count of which also train CAS.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ganpipe.components import classifier as feature_models
from ganpipe.components import monitoring
from ganpipe.components.evaluate.samples import SAMPLE_NOISE_SEED, Split, batched_call, read_split
from ganpipe.ganmodels import metrics

# Measured once on their own fakes, not per fold nor for the served model: never a main metric.
SYNTHETIC_METRICS = ("copying", "utility", "membership_discriminator", "membership_distance")
MAX_MEMBERS = 20_000  # train examples read for copying and the audit (memory: ~N x fakes distances in chunks)
AUDIT_FAKES = 5_000  # fakes for copying and the audit: GAN-Leaks' attack needs many, so a copy is found
CLOSEST_PAIRS = 8  # columns of the closest-pairs grid: fakes above, their nearest train examples below


@dataclasses.dataclass
class SyntheticDataReport:
    values: dict  # metric key -> float, as metrics.compute returns them
    baselines: dict  # cas -> the real-trained accuracy on the same held-out examples
    per_class: dict | None  # class -> {"cas": ..., "real": ...} (conditional models on labelled data)
    closest_pairs: np.ndarray  # uint8 grid for metrics and TensorBoard


def measure_synthetic_data(generator, discriminator, feature_model, feature_info: dict, schema: dict,
                           examples_uri: str, held_out: Split, held_out_features: dict, num_classes: int,
                           params: dict) -> SyntheticDataReport:
    """Copying, the membership audit and (conditional models, labelled data) CAS of one model."""
    members = read_split(examples_uri, schema, "train", min(schema["counts"]["train"], MAX_MEMBERS), params,
                         superres=False)
    conditional = len(generator.inputs) == 2
    fakes, labels = generate_balanced(generator, max(AUDIT_FAKES, len(members.x)), num_classes if conditional else 0,
                                      params)
    member_features, fake_features = (batched_call(feature_model, [x], params["batch_size"])["features"]
                                      for x in (members.x, fakes))
    values = metrics.compute(["copying"], member_features, fake_features,
                             copying={"held_out": held_out_features["features"], "seed": params["seed"]})
    values.update(membership_audit(discriminator, members, held_out, fakes, params["batch_size"]))
    baselines, per_class = {}, None
    if conditional and feature_info.get("feature_space") == "classifier":
        # as many generated examples as the real classifier was trained on, for the same recipe
        count = schema["counts"]["train"]
        cas, per_class = classification_accuracy_score(fakes[:count], labels[:count], feature_info, schema,
                                                       held_out, held_out_features["probabilities"], params)
        values.update(cas)
        baselines["cas"] = metrics.compute(["utility"], held_out.labels, held_out_features["probabilities"])["cas"]
    return SyntheticDataReport(values, baselines, per_class,
                               closest_pairs_grid(member_features, fake_features, members.x, fakes))


def generate_balanced(generator, count: int, num_classes: int, params: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """``count`` fakes from seeded noise, for balanced shuffled labels when ``num_classes`` > 0."""
    rng = np.random.default_rng([SAMPLE_NOISE_SEED, params["seed"], 2])
    latent = rng.standard_normal((count, generator.inputs[0].shape[-1])).astype("float32")
    if not num_classes:
        return batched_call(generator, [latent], params["batch_size"]), None
    labels = rng.permutation(np.arange(count) % num_classes).astype("int32")
    return batched_call(generator, [latent, labels], params["batch_size"]), labels


def membership_audit(discriminator, members: Split, held_out: Split, fakes: np.ndarray, batch_size: int) -> dict:
    """AUCs (with standard errors) of D's-logit and distance-to-nearest-fake attacks, train
    examples as members and eval examples as non-members."""
    conditional = len(discriminator.inputs) == 2
    logits = [batched_call(discriminator, [split.x] + ([split.labels.astype("int32")] if conditional else []),
                           batch_size) for split in (members, held_out)]
    flat = [split.x.reshape(len(split.x), -1) for split in (members, held_out)]
    return {**metrics.compute(["membership_discriminator"], *logits),
            **metrics.compute(["membership_distance"], *flat,
                              membership_distance={"fakes": fakes.reshape(len(fakes), -1)})}


def classification_accuracy_score(samples, labels, feature_info: dict, schema: dict, held_out: Split,
                                  real_trained_probabilities: np.ndarray, params: dict) -> tuple[dict, dict]:
    """CAS of a classifier trained with the Classifier's recipe on generated labelled samples;
    per class beside the real-trained classifier's accuracy on the same held-out examples."""
    recipe = feature_models.COMPONENT.resolve_parameters(feature_info.get("recipe") or {}, "classifier")
    trained = feature_models.train_on_samples(samples, labels, schema["kind"], int(feature_info["num_classes"]),
                                              recipe)
    probabilities = batched_call(trained, [held_out.x], params["batch_size"])["probabilities"]
    generated = metrics.per_class_accuracy(held_out.labels, probabilities)
    real = metrics.per_class_accuracy(held_out.labels, real_trained_probabilities)
    per_class = {label: {"cas": generated[label], "real": real[label]} for label in generated}
    return metrics.compute(["utility"], held_out.labels, probabilities), per_class


def closest_pairs_grid(member_features, fake_features, member_images, fake_images) -> np.ndarray:
    """The fakes nearest to a train example (top row, closest first) above that example."""
    rows, nearest, _ = metrics.closest_pairs(member_features, fake_features, CLOSEST_PAIRS)
    return monitoring.sample_grid(np.concatenate([fake_images[rows], member_images[nearest]]), CLOSEST_PAIRS)
