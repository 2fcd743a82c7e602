"""GAN evaluation metrics: one module per metric over shared feature statistics, plus a registry.

Every metric function returns a flat dict of Python floats, computed in float64 numpy; these
modules never import TensorFlow. The registry maps a metric name to its
function, the kind of arrays it reads and, for each output key, which direction is better:

    from ganpipe.ganmodels import metrics
    metrics.compute(["frechet", "kernel"], real_features, fake_features, kernel={"num_subsets": 20})
    metrics.compute(["frechet", "classifier_score"],
                    {"features": real_features, "probabilities": real_probs},
                    {"features": fake_features, "probabilities": fake_probs})
    metrics.real_vs_real(["frechet"], train_features, eval_features, num_items=len(fake_features))
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from .classifier_score import compute_classifier_score
from .copying import closest_pairs, compute_copying
from .density_coverage import compute_density_coverage
from .discriminator_accuracy import compute_discriminator_accuracy
from .feature_stats import FeatureStats
from .frechet import compute_frechet, frechet_distance
from .image_quality import compute_image_quality, psnr, ssim
from .kernel import compute_kernel_distance
from .membership import compute_discriminator_membership, compute_distance_membership
from .mode_coverage import compute_mode_coverage
from .precision_recall import compute_precision_recall
from .tabular import compute_tabular, correlation_distance, ks_statistics
from .utility import compute_classification_accuracy, per_class_accuracy

# What each input kind holds, per sample.
INPUT_KINDS = {
    "features": "feature vectors [N, D] (classifier or Inception embeddings; raw vectors for vector data)",
    "probabilities": "class probabilities [N, C] from the domain classifier (or integer labels [N])",
    "vectors": "raw data vectors [N, D] (vector data)",
    "images": "images [N, H, W, C], uint8 or float in [0, 1] (reference = real, test = fake)",
    "d_outputs": "discriminator logits [N] or [N, 1] (probabilities with from_logits=False)",
}


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registry entry: how to call a metric and how to read its outputs."""

    name: str
    fn: Callable[..., dict[str, float]]
    inputs: str  # a key of INPUT_KINDS
    paired: bool  # True: fn(real, fake, **options); False (one-sample): fn(fake, **options)
    baseline: bool  # whether a real-vs-real baseline is meaningful
    directions: Mapping[str, str]  # output key -> "lower" | "higher" (is better) | "neither"


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("frechet", compute_frechet, "features", True, True, {"frechet_distance": "lower"}),
        Metric("kernel", compute_kernel_distance, "features", True, True,
               {"kernel_distance": "lower", "kernel_distance_std": "neither"}),
        Metric("precision_recall", compute_precision_recall, "features", True, True,
               {"precision": "higher", "recall": "higher"}),
        # density is ~1 when the sets match; above 1 is not better, so no direction
        Metric("density_coverage", compute_density_coverage, "features", True, True,
               {"density": "neither", "coverage": "higher"}),
        Metric("classifier_score", compute_classifier_score, "probabilities", False, True,
               {"classifier_score": "higher", "classifier_score_std": "neither"}),
        Metric("mode_coverage", compute_mode_coverage, "probabilities", True, True,
               {"classes_present": "higher", "class_entropy": "higher", "class_entropy_normalized": "higher",
                "class_kl_uniform": "lower", "class_kl_real": "lower"}),
        Metric("tabular", compute_tabular, "vectors", True, True,
               {"ks_mean": "lower", "ks_max": "lower", "correlation_distance": "lower"}),
        Metric("image_quality", compute_image_quality, "images", True, False, {"psnr": "higher", "ssim": "higher"}),
        # 0.5 is the equilibrium; distance from it, not the value, says how well G fools D
        Metric("discriminator_accuracy", compute_discriminator_accuracy, "d_outputs", True, False,
               {"d_accuracy": "neither", "d_accuracy_real": "neither", "d_accuracy_fake": "neither"}),
        # (train, fakes) with options {"held_out": eval features}; copying_ct: << 0 copies, >> 0 underfits
        Metric("copying", compute_copying, "features", True, False,
               {"copying_share": "lower", "copying_share_std": "neither", "copying_ct": "neither",
                "copying_ct_std": "neither"}),
        # (labels of the real eval examples, probabilities of a classifier trained on fakes)
        Metric("utility", compute_classification_accuracy, "probabilities", True, False,
               {"cas": "higher", "cas_std": "neither", "cas_worst_class": "higher"}),
        # membership audits: (members = train, non-members = eval); 0.5 = nothing leaks, so no direction
        Metric("membership_discriminator", compute_discriminator_membership, "d_outputs", True, False,
               {"membership_auc_d": "neither", "membership_auc_d_std": "neither"}),
        Metric("membership_distance", compute_distance_membership, "vectors", True, False,
               {"membership_auc_distance": "neither", "membership_auc_distance_std": "neither"}),
    )
}

# Output key -> "lower" | "higher" | "neither", over all metrics (keys are unique across metrics).
DIRECTIONS: dict[str, str] = {key: way for metric in METRICS.values() for key, way in metric.directions.items()}


def get(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(METRICS)}") from None


def compute(names: Sequence[str], real, fake, **options: Mapping) -> dict[str, float]:
    """Runs the named metrics and merges their outputs into one flat dict of floats.

    ``real`` and ``fake`` are either one array used by every named metric, or a mapping from
    input kind (see ``INPUT_KINDS``) to array. ``real`` may be None if every metric is
    one-sample. ``options`` holds keyword arguments per metric name, e.g.
    ``precision_recall={"k": 5}``.
    """
    metrics = _metrics(names, options)
    results: dict[str, float] = {}
    for metric in metrics:
        kwargs = options.get(metric.name, {})
        fake_input = _input(fake, metric, "fake")
        if metric.paired:
            results.update(metric.fn(_input(real, metric, "real"), fake_input, **kwargs))
        else:
            results.update(metric.fn(fake_input, **kwargs))
    return results


def real_vs_real(names: Sequence[str], real_a, real_b, num_items: int | None = None, seed: int = 0,
                 **options: Mapping) -> dict[str, float]:
    """The named metrics between two real splits (e.g. train as "real", eval as "fake"): what a
    perfect generator would score on this data, to print beside the model's values.

    Metrics without a meaningful baseline (``Metric.baseline`` False: image_quality,
    discriminator_accuracy) are skipped; one-sample metrics score ``real_b``. ``num_items`` subsamples each split (seeded, without
    replacement) to at most that many items, to match the fake sample count: Fréchet distance
    is biased upwards for small samples, so a fair baseline uses as many items as the model's.
    """
    metrics = _metrics(names, options)
    chosen = [metric.name for metric in metrics if metric.baseline]
    rng = np.random.default_rng(seed)
    real_a, real_b = _subsample(real_a, num_items, rng, "real_a"), _subsample(real_b, num_items, rng, "real_b")
    return compute(chosen, real_a, real_b, **{name: options[name] for name in chosen if name in options})


def _metrics(names: Sequence[str], options: Mapping) -> list[Metric]:
    if isinstance(names, str):
        raise ValueError(f"metric names must be a list, got the string {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeat: {list(names)}")
    metrics = [get(name) for name in names]
    for name, value in options.items():
        if name not in names:
            raise ValueError(f"options given for metric {name!r}, which is not among {list(names)}")
        if not isinstance(value, Mapping):
            raise ValueError(f"options for metric {name!r} must be a mapping of keyword arguments, got {value!r}")
    return metrics


def _input(data, metric: Metric, side: str):
    if not isinstance(data, Mapping):
        if data is None:
            raise ValueError(f"metric {metric.name!r} needs {side} {metric.inputs}, got None")
        return data
    if metric.inputs not in data:
        raise ValueError(f"metric {metric.name!r} needs {side} {metric.inputs!r} ({INPUT_KINDS[metric.inputs]}); "
                         f"given: {', '.join(data) or 'nothing'}")
    return data[metric.inputs]


def _subsample(data, num_items: int | None, rng: np.random.Generator, name: str):
    """The same random rows of every array in ``data`` (rows are samples across input kinds)."""
    if num_items is None:
        return data
    if num_items < 2:
        raise ValueError(f"{name}: num_items must be at least 2, got {num_items}")
    arrays = dict(data) if isinstance(data, Mapping) else {"": data}
    lengths = {kind: len(array) for kind, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{name}: arrays must hold the same samples to subsample together, got lengths {lengths}")
    count = next(iter(lengths.values()))
    rows = np.sort(rng.choice(count, min(num_items, count), replace=False))
    picked = {kind: np.asarray(array)[rows] for kind, array in arrays.items()}
    return picked if isinstance(data, Mapping) else picked[""]


__all__ = [
    "DIRECTIONS", "INPUT_KINDS", "METRICS", "FeatureStats", "Metric", "closest_pairs", "compute",
    "compute_classification_accuracy", "compute_classifier_score", "compute_copying", "compute_density_coverage",
    "compute_discriminator_accuracy", "compute_discriminator_membership", "compute_distance_membership",
    "compute_frechet", "compute_image_quality", "compute_kernel_distance", "compute_mode_coverage",
    "compute_precision_recall", "compute_tabular", "correlation_distance", "frechet_distance", "get",
    "ks_statistics", "per_class_accuracy", "psnr", "real_vs_real", "ssim",
]
