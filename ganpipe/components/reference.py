"""The reference side of Evaluate's metrics: the real train split in a feature space, and the
statistics of it that every fold, every model and every run measured in that space reuse.

It depends only on the data and the feature space, so the Classifier step computes it once and
keeps it in its artifact (``reference.npz``): a second model trained on the same data, or a
re-run of Evaluate, reads it instead of passing the train split through the feature model again
and recomputing its O(reference²) statistics.

    features, probabilities (if the feature model has them), vectors (vector data: the examples)
    kernel_within       KID's mean kernel value over pairs of distinct reference items
    radii_<k>           each item's distance to its k-th nearest other item, for NEIGHBOURS
"""
from __future__ import annotations

import io

import numpy as np

from ganpipe.components.reader import make_dataset
from ganpipe.ganmodels.metrics import kernel
from ganpipe.ganmodels.metrics.feature_stats import kth_neighbour_distances
from ganpipe.infra import storage

FILE = "reference.npz"
CAP = 5000  # train examples in the reference: the k-NN metrics cost O(reference²) per fold
# k of the k-NN balls: precision/recall (Kynkäänniemi et al.) and density/coverage (Naeem et al.)
NEIGHBOURS = {"precision_recall": 3, "density_coverage": 5}


def build(feature_model, examples_uri: str, schema: dict, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The first CAP examples of a seeded shuffle of the train split through ``feature_model``
    (all of them when the split is smaller), with the statistics above."""
    count = min(schema["counts"]["train"], CAP)
    dataset = make_dataset(examples_uri, schema, split="train", batch_size=batch_size, shuffle=True, seed=seed,
                           drop_remainder=False, cache=False)
    images, outputs = [], []
    for batch in dataset.take(-(-count // batch_size)):
        images.append(batch.numpy())
        outputs.append({key: np.asarray(value) for key, value in feature_model(batch, training=False).items()})
    arrays = {key: np.concatenate([output[key] for output in outputs])[:count] for key in outputs[0]}
    if schema["kind"] == "vector":
        arrays["vectors"] = np.concatenate(images)[:count].reshape(count, -1)
    return with_statistics(arrays)


def with_statistics(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feature model's outputs on the reference items, with the statistics above (those a
    split too small for them has not: Evaluate refuses such data, the steps before it need not)."""
    reals = arrays["features"].astype("float64")
    statistics = {"kernel_within": np.float64(kernel.within(reals))} if len(reals) >= 2 else {}
    statistics.update({f"radii_{k}": kth_neighbour_distances(reals, k, "reference")
                       for k in sorted(set(NEIGHBOURS.values())) if k < len(reals)})
    return {**arrays, **statistics}


def save(directory: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    storage.write_bytes(storage.join(directory, FILE), buffer.getvalue())


def load(directory: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(storage.read_bytes(storage.join(directory, FILE)))) as stored:
        return {key: stored[key] for key in stored.files}


def radii(reference: dict[str, np.ndarray], k: int) -> np.ndarray:
    """The stored k-NN radii, or computed when a small fold needs a smaller k."""
    stored = reference.get(f"radii_{k}")
    return stored if stored is not None else kth_neighbour_distances(
        reference["features"].astype("float64"), k, "reference")
