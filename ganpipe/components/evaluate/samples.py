"""The samples Evaluate measures: real examples of a split and fakes from the generator."""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from ganpipe.components import specs
from ganpipe.components.base import ComponentError
from ganpipe.components.reader import make_dataset
from ganpipe.infra import storage
import ganpipe.ganmodels.families  # noqa: F401  registers the custom layers the .keras files name

SAMPLE_NOISE_SEED = 0x5EED_0E7A  # the noise of the fakes, offset from training's draws


@dataclasses.dataclass
class Split:
    """n examples of one split, as the model sees them: [-1, 1] images or standardised vectors."""

    x: np.ndarray
    labels: np.ndarray | None = None
    lowres: np.ndarray | None = None


def load_generator(model_dir: str, use_ema: bool) -> tuple[keras.Model, str]:
    """The EMA generator when present (and wanted), else the raw one; and its file name."""
    name = "generator_ema.keras" if use_ema and storage.exists(storage.join(model_dir, "generator_ema.keras")) \
        else "generator.keras"
    return keras.saving.load_model(existing(model_dir, name), compile=False), name


def sample_count(schema: dict, num_samples: int) -> int:
    counts = schema.get("counts", {})
    n = min(num_samples, counts.get("train", 0), counts.get("eval", 0))
    if n < specs.MIN_SAMPLES:
        raise ComponentError(f"evaluate: needs at least {specs.MIN_SAMPLES} train and eval examples, the schema counts "
                             f"{counts} (preprocess: keep a larger eval split)")
    return n


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


MODEL_PASSES = 6  # generator 1, feature model 3 (reference, fakes, held-out), discriminator 2


class SampleCounter:
    """Adds each batch a model call has done to a Progress."""

    def __init__(self, progress):
        self.progress, self.done = progress, 0

    def __call__(self, count: int) -> None:
        self.done += count
        self.progress.update(self.done)


def generate(generator: keras.Model, held_out: Split, n: int, params: dict, counted=None) -> np.ndarray:
    """n fakes: from seeded noise (with the held-out labels if conditional) or upscaled low-res."""
    if held_out.lowres is not None:
        return batched_call(generator, [held_out.lowres], params["batch_size"], counted)
    latent = np.random.default_rng([SAMPLE_NOISE_SEED, params["seed"]]).standard_normal(
        (n, generator.inputs[0].shape[-1])).astype("float32")
    if len(generator.inputs) == 1:
        return batched_call(generator, [latent], params["batch_size"], counted)
    if held_out.labels.min() < 0:
        raise ComponentError("evaluate: a conditional generator needs labelled eval examples, found label -1")
    return batched_call(generator, [latent, held_out.labels.astype("int32")], params["batch_size"], counted)


def batched_call(model: keras.Model, arrays: list[np.ndarray], batch_size: int, counted=None):
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

