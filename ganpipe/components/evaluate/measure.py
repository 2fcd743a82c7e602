"""Evaluate's measurement: each metric with its sampling noise, beside its real-vs-real baseline,
and the served model measured alike.

Sizes (``samples.fold_sizes``): the reference is every train example (up to ``reference.CAP``),
read with its statistics from the Classifier artifact; a fold is n = min(num_samples, eval count)
fakes; there are K = num_fakes // n folds.

- model: each metric on each fold (reference vs the fold's fakes); the value is the mean over the
  K folds, its std the standard error of that mean (``metrics.sampling_noise``);
- baseline: the same metrics with the n real eval examples in place of the fakes (what a perfect
  generator scores at this size), its std by half-sampling the eval split; SRGAN's PSNR/SSIM
  baseline is bicubic upscaling, in the same folds as the model;
- served: the served version through its serving signature on the same folds (same latents,
  labels, reals, feature space, estimators), and per metric the paired difference
  candidate - served with its standard error, which the blessing's gate reads.

A section is a function (setup, fold) -> {metric: value}: ``SECTIONS`` lists them, so a new
metric module adds a section, and its values get folds, stds, baselines and the served
comparison like every other.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from typing import Callable

import keras
import numpy as np

from ganpipe.components import classifier as feature_models
from ganpipe.components import reference, specs
from ganpipe.components.base import ComponentError, Progress, absolute_path
from ganpipe.components.evaluate.report import sample_grid, write_report
from ganpipe.components.evaluate.synthetic import measure_synthetic_data
from ganpipe.components.evaluate.samples import (KerasSampler, SampleCounter, ServedSampler, Split, batched_call,
                                                 check_finite, chunks, existing, fake_folds, load_generator, read_model_info,
                                                 read_split, fold_sizes)
from ganpipe.components.quality import FRECHET_NAMES
from ganpipe.ganmodels import losses, metrics
from ganpipe.ganmodels.metrics.frechet import cov_sqrt
from ganpipe.ganmodels.metrics.sampling_noise import fold_summary, half_sample_std, paired_difference
from ganpipe.ganmodels.srgan import bicubic_upscale
from ganpipe.infra import storage

HALVES = 16  # random halves of the eval split for the baseline's std


@dataclasses.dataclass
class Setup:
    """What every section reads besides the fold: the reference and how to measure."""

    params: dict
    schema: dict
    feature_space: str
    names: list[str]  # ganmodels.metrics names computed in the feature space
    options: dict
    extract: Callable[[np.ndarray], dict]
    reference_features: dict


@dataclasses.dataclass
class Fold:
    """One set of samples measured against the reference, with the held-out examples beside it."""

    samples: np.ndarray
    held: Split
    features: dict
    discriminator: keras.Model | None = None
    threshold: float | None = None
    held_scores: np.ndarray | None = None  # D on ``held``, when computed once for many folds


def feature_metrics(setup: Setup, fold: Fold) -> dict[str, float]:
    """Fréchet, kernel, precision/recall, density/coverage (+ classifier score, class coverage,
    tabular) between the reference and the fold. A metric's own ``_std`` over its subsets is left
    out: the folds give the std."""
    values = metrics.compute(setup.names, setup.reference_features, fold.features, **setup.options)
    return {key: value for key, value in values.items() if not key.endswith("_std")}


def discriminator_accuracy(setup: Setup, fold: Fold) -> dict[str, float]:
    """D on the held-out reals (never trained on) and on the fold's fakes, with labels for a
    conditional D, at the GAN loss's decision threshold; only for a model that has a D."""
    if fold.discriminator is None or fold.threshold is None or fold.held.lowres is not None:
        return {}
    batch = setup.params["batch_size"]
    reals = fold.held_scores if fold.held_scores is not None else d_scores(fold.discriminator, fold.held.x,
                                                                            fold.held, batch)
    return metrics.compute_discriminator_accuracy(reals, d_scores(fold.discriminator, fold.samples, fold.held, batch),
                                                  threshold=fold.threshold)


def d_scores(discriminator: keras.Model, images: np.ndarray, held: Split, batch_size: int) -> np.ndarray:
    """D's outputs on ``images``, with the held-out labels for a conditional D."""
    labels = [held.labels.astype("int32")] if len(discriminator.inputs) == 2 else []
    return batched_call(discriminator, [images, *labels], batch_size)


def upscaling_quality(setup: Setup, fold: Fold) -> dict[str, float]:
    """SRGAN: PSNR/SSIM of the fold's upscaled images against the real high-res ones."""
    if fold.held.lowres is None:
        return {}
    unit = lambda images: np.clip((images + 1.0) / 2.0, 0.0, 1.0)  # noqa: E731
    window = min(11, fold.samples.shape[1], fold.samples.shape[2])
    return metrics.compute_image_quality(unit(fold.held.x), unit(fold.samples), window_size=window)


SECTIONS: tuple[Callable[[Setup, Fold], dict[str, float]], ...] = (
    feature_metrics, discriminator_accuracy, upscaling_quality)


def measure_folds(setup: Setup, folds: list[Fold]) -> list[dict[str, float]]:
    return [{key: value for section in SECTIONS for key, value in section(setup, fold).items()} for fold in folds]


def evaluate_model(model_dir: str, examples_uri: str, schema: dict, classifier_dir: str, output_dir: str, *,
                   served: dict | None = None, log=print, progress=None, **params) -> dict:
    """Measures the model in ``model_dir`` (and the served version ``served["destination"]``, if
    given, alike) and writes the report into ``output_dir``; returns it. ``params`` are this
    component's parameters (missing ones take their defaults); pass the report to
    ``decide_blessing``."""
    params = specs.EVALUATE.resolve_parameters(params, "evaluate")
    # tf.data's seeded shuffle also depends on the process-wide seed, which an earlier step in
    # this process (Train) may have set: fix it, so the examples measured depend only on params.
    keras.utils.set_random_seed(params["seed"])
    info = read_model_info(model_dir)
    generator, generator_file = load_generator(model_dir, params["use_ema"])
    discriminator = keras.saving.load_model(existing(model_dir, "discriminator.keras"), compile=False)
    feature_model, feature_info = feature_models.load_feature_model(classifier_dir)
    superres = info.get("family") == "srgan"
    n, folds = fold_sizes(schema, params["num_samples"], params["num_fakes"])
    stored_reference = reference.load(classifier_dir)
    reference_count = len(stored_reference["features"])
    held_out = read_split(examples_uri, schema, "eval", n, params, superres)
    models = 2 if served else 1
    log(f"evaluating {generator_file}{' and the served version ' + str(served['version']) if served else ''}: "
        f"{folds} folds of {n} fakes against {reference_count} train examples, {feature_info['feature_space']} features")
    total = n + models * 2 * folds * n + folds * n + n
    with (progress or functools.partial(Progress, log))("samples through G, the feature model and D", total,
                                                         "samples") as bar:
        counted = SampleCounter(bar)
        extract = lambda x: batched_call(feature_model, [x], params["batch_size"], counted)  # noqa: E731
        setup = make_setup(params, schema, feature_info["feature_space"], extract, stored_reference, n)
        threshold = losses.get(info.get("loss") or "non_saturating").threshold
        candidate, first_fakes = model_folds(setup, KerasSampler(generator, params["batch_size"]), held_out, folds, counted,
                                storage.join(model_dir, generator_file), discriminator, threshold)
        served_folds = model_folds(setup, ServedSampler(served["destination"], params["batch_size"]), held_out,
                                   folds, counted, served["destination"])[0] if served else None
        held_out_features = features_of(setup, held_out.x)
        baseline, baseline_std = real_vs_real(setup, held_out, held_out_features)
    # copying, CAS and the membership audit (upscaled eval images are not synthetic data)
    synthetic = None if superres else measure_synthetic_data(
        generator, discriminator, feature_model, feature_info, schema, examples_uri, held_out, held_out_features,
        int(info.get("num_classes") or 0), params)
    if superres:  # bicubic upscaling is SRGAN's baseline for PSNR/SSIM, in the model's folds
        bicubic = fold_summary([upscaling_quality(setup, Fold(_bicubic(chunk), chunk, {}))
                                for chunk in chunks(held_out, len(candidate))])
        baseline.update({key: mean for key, (mean, _) in bicubic.items()})
        baseline_std.update({key: std for key, (_, std) in bicubic.items()})
    space = feature_info["feature_space"]
    report = {
        "feature_space": space,
        "feature_space_id": feature_space_id(feature_model, space),
        "classifier_eval_accuracy": feature_info.get("eval_accuracy"),
        "num_samples": n,
        "samples": {"reference": reference_count, "held_out": n, "fold": n, "folds": len(candidate),
                    "fakes": len(candidate) * n},
        "model": {"dir": absolute_path(model_dir), "generator": generator_file,
                  **{key: info.get(key) for key in ("family", "steps", "latent_dim", "num_classes", "data_kind")}},
        "served": served,
        "metrics": {**metric_entries(space, candidate, baseline, baseline_std, served_folds),
                    **(synthetic_entries(synthetic) if synthetic else {})},
    }
    if synthetic and synthetic.per_class:
        report["cas_per_class"] = {str(label): entry for label, entry in synthetic.per_class.items()}
    report["main_metric"] = main_metric(report, params["main_metric"], superres)
    write_report(report, output_dir, sample_grid(generator, held_out, info, first_fakes, params["seed"]), info,
                 closest_pairs=synthetic.closest_pairs if synthetic else None)
    return report


def make_setup(params: dict, schema: dict, feature_space: str, extract, stored_reference: dict, n: int) -> Setup:
    """How to measure against the stored reference (``components/reference.py``: computed once per
    data set and feature space by the Classifier step) at fold size ``n``."""
    reference_features = {key: stored_reference[key] for key in ("features", "probabilities", "vectors")
                          if key in stored_reference}
    names = ["frechet", "kernel", "precision_recall", "density_coverage"]
    if "probabilities" in reference_features:
        names.append("classifier_score")
        if feature_space == "classifier":
            names.append("mode_coverage")
    if schema["kind"] == "vector":
        names.append("tabular")
    reals = reference_features["features"].astype("float64")
    half = max(2, n // 2)  # k-NN radii must exist on the baseline's half samples too
    k = {name: min(k, half - 1) for name, k in reference.NEIGHBOURS.items()}
    real_stats = metrics.FeatureStats.from_features(reals)
    options = {"frechet": {"real_stats": real_stats, "real_root": cov_sqrt(real_stats.cov)},
               "kernel": {"subset_size": max(n, len(reals)), "num_subsets": 1,
                          "real_within": float(stored_reference["kernel_within"])},
               **{name: {"k": k[name], "real_radii": reference.radii(stored_reference, k[name])}
                  for name in reference.NEIGHBOURS}}
    if "classifier_score" in names:
        options["classifier_score"] = {"num_splits": 1}
    return Setup(params, schema, feature_space, names, options, extract, reference_features)


def features_of(setup: Setup, samples: np.ndarray, features: dict | None = None) -> dict:
    features = dict(setup.extract(samples) if features is None else features)
    if setup.schema["kind"] == "vector":
        features["vectors"] = samples.reshape(len(samples), -1)
    return features


def model_folds(setup: Setup, sampler, held_out: Split, folds: int, counted, where: str,
                discriminator=None, threshold=None) -> tuple[list[dict[str, float]], np.ndarray]:
    """The metrics of one model per fold, and the first fold's fakes (for the sample grid)."""
    measured, first = [], None
    # every fold of fakes from noise stands beside the whole held-out split: D scores its reals once
    held_scores = None if discriminator is None or held_out.lowres is not None else d_scores(
        discriminator, held_out.x, held_out, setup.params["batch_size"])
    for fakes, held in fake_folds(sampler, held_out, folds, setup.params["seed"], counted):
        check_finite(fakes, where)
        fold = Fold(fakes, held, features_of(setup, fakes), discriminator, threshold,
                    held_scores if held is held_out else None)
        measured.append(measure_folds(setup, [fold])[0])
        first = fakes if first is None else first
    return measured, first


def real_vs_real(setup: Setup, held_out: Split, features: dict) -> tuple[dict[str, float], dict[str, float]]:
    """The metrics with the eval examples (``features``: theirs) in place of fakes, and their
    half-sample stds."""
    whole = measure_folds(setup, [Fold(held_out.x, held_out, features)])[0]
    rng = np.random.default_rng(setup.params["seed"])
    halves = []
    for _ in range(HALVES):
        rows = np.sort(rng.choice(len(held_out.x), max(2, len(held_out.x) // 2), replace=False))
        part = {key: array[rows] for key, array in features.items()}
        halves.append(measure_folds(setup, [Fold(held_out.x[rows], held_out.take(rows), part)])[0])
    keys = [key for key in whole if key not in ("psnr", "ssim")]  # identical images: no baseline
    return ({key: whole[key] for key in keys},
            {key: half_sample_std([half[key] for half in halves]) for key in keys})


def _bicubic(held: Split) -> np.ndarray:
    scale = held.x.shape[1] // held.lowres.shape[1]
    return keras.ops.convert_to_numpy(bicubic_upscale(held.lowres, scale))


def metric_entries(space: str, candidate, baseline: dict, baseline_std: dict, served_folds=None) -> dict:
    """Per metric (under its user-facing name): value ± std, baseline ± std, and the served
    model's value ± std with the paired difference candidate - served ± its std."""
    entries = {}
    for key, (value, std) in fold_summary(candidate).items():
        kind = None if key not in baseline else "bicubic" if key in ("psnr", "ssim") else "real_vs_real"
        entry = {"value": _finite_or_none(value), "std": _finite_or_none(std),
                 "baseline": _finite_or_none(baseline.get(key)), "baseline_std": _finite_or_none(baseline_std.get(key)),
                 "baseline_kind": kind, "better": metrics.DIRECTIONS[key]}
        if served_folds and key in served_folds[0]:
            served_value, served_std = fold_summary(served_folds)[key]
            difference, difference_std = paired_difference(candidate, served_folds, key)
            entry["served"] = {"value": _finite_or_none(served_value), "std": _finite_or_none(served_std),
                               "difference": _finite_or_none(difference),
                               "difference_std": _finite_or_none(difference_std)}
        entries[rename(key, space)] = entry
    return entries


def synthetic_entries(synthetic) -> dict:
    """Copying, CAS and the audit, each with the std its own estimator gives (bootstrap, binomial,
    DeLong): they are measured once on their own fakes, not over the folds."""
    entries = {}
    for key, value in synthetic.values.items():
        if key.endswith("_std"):
            continue
        baseline = synthetic.baselines.get(key)
        entries[key] = {"value": _finite_or_none(value), "std": _finite_or_none(synthetic.values.get(key + "_std")),
                        "baseline": _finite_or_none(baseline), "baseline_std": None,
                        "baseline_kind": None if baseline is None else "real_trained",
                        "better": metrics.DIRECTIONS[key]}
    return entries


def feature_space_id(feature_model: keras.Model, feature_space: str) -> str:
    """Names the feature space by its weights (a retrained classifier with identical weights
    still matches; its artifact fingerprint would not)."""
    digest = hashlib.sha256(feature_space.encode())
    for weight in feature_model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value)).tobytes())
    return f"{feature_space}:{digest.hexdigest()[:16]}"


def rename(key: str, feature_space: str) -> str:
    """Generic metric keys to the names users know for this feature space."""
    if key == "frechet_distance":
        return FRECHET_NAMES[feature_space]
    if key.startswith("kernel_distance"):
        return "kid" + key[len("kernel_distance"):]
    if key.startswith("classifier_score") and feature_space == "inception":
        return "inception_score" + key[len("classifier_score"):]
    return key


def main_metric(report: dict, requested: str, superres: bool) -> str:
    """``auto``: the feature space's Fréchet distance (fcd, fd or fid), PSNR for SRGAN: the one
    estimator that ranked every disturbance of ``benchmarks/evaluation.py`` on every data set
    (KID's cubic kernel inverted the strongest levels of three; docs/evaluation.md)."""
    if requested == "auto":
        return "psnr" if superres else rename("frechet_distance", report["feature_space"])
    if requested not in report["metrics"]:
        raise ComponentError(f"evaluate.main_metric: {requested!r} was not computed for this model; "
                             f"choose one of {', '.join(sorted(report['metrics']))}")
    if report["metrics"][requested]["better"] == "neither":
        raise ComponentError(f"evaluate.main_metric: {requested!r} has no better direction to compare")
    return requested


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
