"""The samples Evaluate measures: real examples of a split, and fakes from a generator in folds.

A generator is a *sampler*: the candidate's Keras generator, or the served SavedModel called
through its ``serving_default`` signature with its outputs brought back to the model's space
([-1, 1] images, standardised vectors). Both get the same latent draws (seeded per fold) and the
same labels, so they are measured alike.
"""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from ganpipe.components import specs
from ganpipe.components.base import ComponentError
from ganpipe.components.reader import make_dataset
from ganpipe.infra import storage
import ganpipe.ganmodels.families  # noqa: F401  registers the custom layers the .keras files name

SAMPLE_NOISE_SEED = 0x5EED_0E7A  # the noise of the fakes, offset from training's draws
MIN_FOLDS = 2  # a standard error needs two folds
MAX_FOLDS = 50  # more folds only shrink an already small standard error, at the reference's cost each


@dataclasses.dataclass
class Split:
    """Examples of one split, as the model sees them: [-1, 1] images or standardised vectors."""

    x: np.ndarray
    labels: np.ndarray | None = None
    lowres: np.ndarray | None = None

    def take(self, rows) -> "Split":
        return Split(*(None if part is None else part[rows] for part in (self.x, self.labels, self.lowres)))


def load_generator(model_dir: str, use_ema: bool) -> tuple[keras.Model, str]:
    """The EMA generator when present (and wanted), else the raw one; and its file name."""
    name = "generator_ema.keras" if use_ema and storage.exists(storage.join(model_dir, "generator_ema.keras")) \
        else "generator.keras"
    return keras.saving.load_model(existing(model_dir, name), compile=False), name


def fold_sizes(schema: dict, num_samples: int, num_fakes: int) -> tuple[int, int]:
    """(fold size n, folds): n = min(num_samples, eval count), so the real-vs-real baseline on the
    eval split has the folds' size; as many folds of n fakes as ``num_fakes`` holds, from MIN_FOLDS
    to MAX_FOLDS."""
    counts = schema.get("counts", {})
    n = min(num_samples, counts.get("eval", 0))
    if n < specs.MIN_SAMPLES or counts.get("train", 0) < specs.MIN_SAMPLES:
        raise ComponentError(f"evaluate: needs at least {specs.MIN_SAMPLES} train and eval examples, the schema counts "
                             f"{counts} (preprocess: keep a larger eval split)")
    return n, max(MIN_FOLDS, min(MAX_FOLDS, num_fakes // n))


def read_split(examples_uri: str, schema: dict, split: str, n: int, params: dict, superres: bool) -> Split:
    """The first n examples of a seeded shuffle of ``split``, as numpy arrays."""
    dataset = make_dataset(examples_uri, schema, split=split, batch_size=params["batch_size"], shuffle=True,
                           seed=params["seed"], with_labels=not superres, with_lowres=superres,
                           drop_remainder=False, cache=False)
    firsts, seconds = [], []
    for first, second in dataset.take(math.ceil(n / params["batch_size"])):
        firsts.append(first.numpy())
        seconds.append(second.numpy())
    first, second = np.concatenate(firsts)[:n], np.concatenate(seconds)[:n]
    if len(first) < n:
        raise ComponentError(f"evaluate: {examples_uri}/{split} holds {len(first)} examples, the schema says more")
    return Split(x=second, lowres=first) if superres else Split(x=first, labels=second)


class SampleCounter:
    """Adds each batch a model call has done to a Progress."""

    def __init__(self, progress):
        self.progress, self.done = progress, 0

    def __call__(self, count: int) -> None:
        self.done += count
        self.progress.update(self.done)


def batched_call(model, arrays: list[np.ndarray], batch_size: int, counted=None):
    """``model`` in inference mode over batches; an array, or a dict of arrays for dict outputs.

    ``training=False`` always: a nested model called with training=None runs its batch norm in
    training mode (seen in Keras 3.15), which would make the metrics depend on the batch.
    """
    outputs = []
    for start in range(0, len(arrays[0]), batch_size):
        batch = [array[start:start + batch_size] for array in arrays]
        outputs.append(keras.tree.map_structure(np.asarray,
                                                model(batch if len(batch) > 1 else batch[0], training=False)))
        if counted:
            counted(len(batch[0]))
    if isinstance(outputs[0], dict):
        return {key: np.concatenate([output[key] for output in outputs]) for key in outputs[0]}
    return np.concatenate(outputs)


# ------------------------------------------------------------------------------------ samplers


@dataclasses.dataclass
class KerasSampler:
    """The candidate: its Keras generator."""

    generator: keras.Model
    batch_size: int

    @property
    def latent_dim(self) -> int:
        return int(self.generator.inputs[0].shape[-1])

    @property
    def conditional(self) -> bool:
        return len(self.generator.inputs) == 2

    def __call__(self, inputs: list[np.ndarray], counted=None) -> np.ndarray:
        return batched_call(self.generator, inputs, self.batch_size, counted)


class ServedSampler:
    """A served version directory (``<export_base>/<model_name>/<version>``) through its
    ``serving_default`` signature, as a downstream team calls it."""

    def __init__(self, version_dir: str, batch_size: int):
        self.info = storage.read_json(storage.join(version_dir, specs.SERVED_EXTRA, "model.json"))
        self.signature = tf.saved_model.load(version_dir).signatures["serving_default"]
        self.batch_size = batch_size
        self.latent_dim = int(self.info.get("latent_dim") or 0)
        self.conditional = bool(self.info.get("num_classes")) and self.info.get("family") != "srgan"

    def __call__(self, inputs: list[np.ndarray], counted=None) -> np.ndarray:
        return batched_call(self._model_space, inputs, self.batch_size, counted)

    def _model_space(self, batch, training=False):
        if self.info.get("family") == "srgan":
            lowres = np.round((batch + 1.0) * 127.5).clip(0, 255).astype("uint8")
            return self.signature(lowres=tf.constant(lowres))["images_float"].numpy() * 2.0 - 1.0
        latent, *labels = batch if self.conditional else [batch]
        named = {"latent": tf.constant(latent, tf.float32),
                 **({"label": tf.constant(labels[0], tf.int64)} if labels else {})}
        outputs = self.signature(**named)
        if "samples" in outputs:  # vector data, in the data's units: standardise again
            normalization = self.info.get("normalization") or {"mean": 0.0, "std": 1.0}
            return (outputs["samples"].numpy() - np.asarray(normalization["mean"])) / np.asarray(normalization["std"])
        return outputs["images_float"].numpy() * 2.0 - 1.0


def fake_folds(sampler, held_out: Split, folds: int, seed: int, counted=None) -> list[tuple[np.ndarray, Split]]:
    """``folds`` pairs (fakes, the held-out examples they stand beside). From noise: each fold n
    fakes from the fold's seeded latents (with the held-out labels if conditional), beside the
    whole held-out split. SRGAN (no noise): the held-out split in chunks (at most ``folds``),
    upscaled."""
    if held_out.lowres is not None:  # chunks of at least MIN_SAMPLES, for metrics over sets
        count = min(folds, max(MIN_FOLDS, len(held_out.x) // specs.MIN_SAMPLES))
        return [(sampler([chunk.lowres], counted), chunk) for chunk in chunks(held_out, count)]
    if sampler.conditional and (held_out.labels is None or held_out.labels.min() < 0):
        raise ComponentError("evaluate: a conditional generator needs labelled eval examples, found label -1")
    result = []
    for fold in range(folds):
        latent = np.random.default_rng([SAMPLE_NOISE_SEED, seed, fold]).standard_normal(
            (len(held_out.x), sampler.latent_dim)).astype("float32")
        inputs = [latent, held_out.labels.astype("int32")] if sampler.conditional else [latent]
        result.append((sampler(inputs, counted), held_out))
    return result


def chunks(split: Split, count: int) -> list[Split]:
    """``split`` in ``count`` consecutive parts of (nearly) equal size."""
    return [split.take(rows) for rows in np.array_split(np.arange(len(split.x)), count)]


def check_finite(samples: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(samples)
    if bad.any():
        raise ComponentError(f"{where}: the generator produced {int(bad.sum())} non-finite values (NaN/inf); "
                             "training diverged")


def existing(directory: str, name: str) -> str:
    path = storage.join(directory, name)
    if not storage.exists(path):
        raise ComponentError(f"{path}: missing; is {directory} a Train Model artifact?")
    return path


def read_model_info(model_dir: str) -> dict:
    """A Train Model artifact's model.json, or a clear error when it is not one."""
    return storage.read_json(existing(model_dir, "model.json"))
