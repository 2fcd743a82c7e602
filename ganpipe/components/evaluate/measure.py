"""Evaluate's measurement: the metrics of one model's samples beside their real-vs-real baselines."""
from __future__ import annotations

import functools
import hashlib
import math

import keras
import numpy as np

from ganpipe.components import classifier as feature_models
from ganpipe.components import specs
from ganpipe.components.base import ComponentError, Progress, absolute_path
from ganpipe.components.evaluate.report import sample_grid, write_report
from ganpipe.components.evaluate.synthetic import measure_synthetic_data
from ganpipe.components.evaluate.samples import (MODEL_PASSES, SampleCounter, Split, batched_call, check_finite,
                                                 existing, generate, load_generator, read_model_info, read_split,
                                                 sample_count)
from ganpipe.components.quality import FRECHET_NAMES
from ganpipe.ganmodels import losses, metrics
from ganpipe.ganmodels.srgan import bicubic_upscale
from ganpipe.infra import storage


def evaluate_model(model_dir: str, examples_uri: str, schema: dict, classifier_dir: str, output_dir: str, *,
                   log=print, progress=None, **params) -> dict:
    """Measures the model in ``model_dir`` and writes the report into ``output_dir``; returns it.

    ``params`` are this component's parameters (missing ones take their defaults). Pass the
    returned report to ``decide_blessing``.
    """
    params = specs.EVALUATE.resolve_parameters(params, "evaluate")
    # tf.data's seeded shuffle also depends on the process-wide seed, which an earlier step in
    # this process (Train) may have set: fix it, so the examples measured depend only on params.
    keras.utils.set_random_seed(params["seed"])
    info = read_model_info(model_dir)
    generator, generator_file = load_generator(model_dir, params["use_ema"])
    discriminator = keras.saving.load_model(existing(model_dir, "discriminator.keras"), compile=False)
    feature_model, feature_info = feature_models.load_feature_model(classifier_dir)
    superres = info.get("family") == "srgan"

    n = sample_count(schema, params["num_samples"])
    reference = read_split(examples_uri, schema, "train", n, params, superres)
    held_out = read_split(examples_uri, schema, "eval", n, params, superres)
    log(f"evaluating {generator_file} on {n} samples in the {feature_info['feature_space']} feature space")
    # Samples through a model: generated, then three sets embedded, then two through D.
    with (progress or functools.partial(Progress, log))("samples through G, the feature model and D", MODEL_PASSES * n, "samples") as bar:
        counted = SampleCounter(bar)
        fakes = generate(generator, held_out, n, params, counted)
        check_finite(fakes, storage.join(model_dir, generator_file))
        values, baselines, held_out_features = feature_metrics(
            feature_model, feature_info, schema, reference.x, fakes, held_out.x, params, counted)
        threshold = losses.get(info.get("loss") or "non_saturating").threshold
        if threshold is not None:  # a Wasserstein critic's scores have no decision threshold
            values.update(held_out_discriminator_accuracy(discriminator, held_out, fakes, params["batch_size"],
                                                          counted, threshold))
    if superres:
        quality, bicubic = upscaling_quality(held_out, fakes, info)
        values.update(quality)
        baselines.update(bicubic)
        synthetic = None
    else:  # copying, CAS and the membership audit (upscaled eval images are not synthetic data)
        synthetic = measure_synthetic_data(generator, discriminator, feature_model, feature_info, schema, examples_uri,
                                           held_out, held_out_features, int(info.get("num_classes") or 0), params)
        values.update(synthetic.values)
        baselines.update(synthetic.baselines)
    space = feature_info["feature_space"]
    report = {
        "feature_space": space,
        "feature_space_id": feature_space_id(feature_model, space),
        "classifier_eval_accuracy": feature_info.get("eval_accuracy"),
        "num_samples": n,
        "model": {"dir": absolute_path(model_dir), "generator": generator_file,
                  **{key: info.get(key) for key in ("family", "steps", "latent_dim", "num_classes", "data_kind")}},
        "metrics": {rename(key, space): _entry(key, value, baselines.get(key))
                    for key, value in values.items()},
    }
    if synthetic and synthetic.per_class:
        report["cas_per_class"] = {str(label): entry for label, entry in synthetic.per_class.items()}
    report["main_metric"] = main_metric(report, params["main_metric"], superres)
    write_report(report, output_dir, sample_grid(generator, held_out, info, fakes, params["seed"]), info,
                 closest_pairs=synthetic.closest_pairs if synthetic else None)
    return report


def feature_space_id(feature_model: keras.Model, feature_space: str) -> str:
    """Names the feature space by its weights: metrics are comparable across runs exactly when
    this matches (a retrained classifier with identical weights, e.g. after a code change that
    re-ran the Classifier step, still matches; its artifact fingerprint would not)."""
    digest = hashlib.sha256(feature_space.encode())
    for weight in feature_model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value)).tobytes())
    return f"{feature_space}:{digest.hexdigest()[:16]}"


def feature_metrics(feature_model, feature_info, schema, reference, fakes, held_out, params, counted=None):
    """The feature-space (and, for vectors, tabular) metrics, their real-vs-real baselines, and the
    held-out examples' features."""
    extract = lambda x: batched_call(feature_model, [x], params["batch_size"], counted)  # noqa: E731
    real, fake, other = extract(reference), extract(fakes), extract(held_out)
    names = ["frechet", "kernel", "precision_recall", "density_coverage"]
    if "probabilities" in real:
        names.append("classifier_score")
        if feature_info["feature_space"] == "classifier":
            names.append("mode_coverage")
    if schema["kind"] == "vector":
        names.append("tabular")
        for side, vectors in ((real, reference), (fake, fakes), (other, held_out)):
            side["vectors"] = vectors.reshape(len(vectors), -1)
    n = len(reference)
    # Subsets of half the items: with all n, every KID subset would be the same and its std 0.
    options = {"kernel": {"subset_size": min(1000, max(2, n // 2)), "num_subsets": 50, "seed": params["seed"]},
               "precision_recall": {"k": min(3, n - 1)}, "density_coverage": {"k": min(5, n - 1)}}
    if "classifier_score" in names:
        options["classifier_score"] = {"num_splits": min(10, n)}
    return (metrics.compute(names, real, fake, **options), metrics.real_vs_real(names, real, other, **options),
            other)


def held_out_discriminator_accuracy(discriminator, held_out: Split, fakes, batch_size: int,
                                    counted=None, threshold: float = 0.0) -> dict[str, float]:
    """D on real eval samples (never trained on) vs the fakes, with labels for conditional D,
    at the GAN loss's decision threshold."""
    conditional = len(discriminator.inputs) == 2
    real_inputs = [held_out.x] + ([held_out.labels.astype("int32")] if conditional else [])
    fake_inputs = [fakes] + ([held_out.labels.astype("int32")] if conditional else [])
    return metrics.compute_discriminator_accuracy(batched_call(discriminator, real_inputs, batch_size, counted),
                                                  batched_call(discriminator, fake_inputs, batch_size, counted),
                                                  threshold=threshold)


def upscaling_quality(held_out: Split, fakes: np.ndarray, info: dict) -> tuple[dict, dict]:
    """PSNR/SSIM of the generator's upscaling and of bicubic upscaling vs the real high-res."""
    scale = fakes.shape[1] // held_out.lowres.shape[1]
    bicubic = keras.ops.convert_to_numpy(bicubic_upscale(held_out.lowres, scale))
    unit = lambda images: np.clip((images + 1.0) / 2.0, 0.0, 1.0)  # noqa: E731
    window = min(11, fakes.shape[1], fakes.shape[2])
    real = unit(held_out.x)
    return (metrics.compute_image_quality(real, unit(fakes), window_size=window),
            metrics.compute_image_quality(real, unit(bicubic), window_size=window))


def rename(key: str, feature_space: str) -> str:
    """Generic metric keys to the names users know for this feature space."""
    if key == "frechet_distance":
        return FRECHET_NAMES[feature_space]
    if key.startswith("kernel_distance"):
        return "kid" + key[len("kernel_distance"):]
    if key.startswith("classifier_score") and feature_space == "inception":
        return "inception_score" + key[len("classifier_score"):]
    return key


BASELINE_KINDS = {"psnr": "bicubic", "ssim": "bicubic", "cas": "real_trained"}  # else real_vs_real


def _entry(key: str, value: float, baseline: float | None) -> dict:
    kind = None if baseline is None else BASELINE_KINDS.get(key, "real_vs_real")
    return {"value": _finite_or_none(value), "baseline": _finite_or_none(baseline), "baseline_kind": kind,
            "better": metrics.DIRECTIONS[key]}


def main_metric(report: dict, requested: str, superres: bool) -> str:
    if requested == "auto":
        return "psnr" if superres else FRECHET_NAMES[report["feature_space"]]
    if requested not in report["metrics"]:
        raise ComponentError(f"evaluate.main_metric: {requested!r} was not computed for this model; "
                             f"choose one of {', '.join(sorted(report['metrics']))}")
    if report["metrics"][requested]["better"] == "neither":
        raise ComponentError(f"evaluate.main_metric: {requested!r} has no better direction to compare")
    return requested


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None

