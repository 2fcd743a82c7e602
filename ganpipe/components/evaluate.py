"""Evaluate: measures a trained generator's samples, reports them, and decides the blessing.

Three sets of the same size n = min(num_samples, train count, eval count) are compared in the
Classifier artifact's feature space (see ``components/classifier.py``):

    reference  n real train examples (seeded shuffle)
    fakes      n generated samples (the EMA generator when the model has one); conditional models
               generate for the held-out examples' labels, SRGAN upscales their low-res copies
    held-out   n real eval examples

Each metric is computed on (reference, fakes) and, as its real-vs-real baseline, on (reference,
held-out): what a perfect generator would score with this much data. The held-out examples also
feed the discriminator accuracy (D on real eval samples vs the fakes; 0.5 at equilibrium). SRGAN
models add PSNR/SSIM of their upscaling and, as the baseline, of bicubic upscaling.

Metric names follow the feature space: the Fréchet distance is ``fcd`` (classifier features),
``fid`` (Inception) or ``fd`` (pixels / raw vectors); the kernel distance is ``kid``; the
classifier score is ``inception_score`` on Inception features.

Outputs::

    evaluation/metrics.json   the report: {"metrics": {name: {value, baseline, baseline_kind,
                              better}}, feature space, sample counts, model}; a non-finite value
                              (e.g. class_kl_real = inf) is written as null
    evaluation/samples.png    the sample grid (one row per class for conditional models)
    evaluation/logs/eval/     TensorBoard: scalars quality/<name> and real_vs_real/<name>, the
                              markdown table (text quality/report), the grid (image
                              quality/samples); the run's HParams trial is written by the
                              pipeline (ganpipe.pipeline.trial) with Train's parameters
    blessing/blessing.json    {"blessed", "reasons", "checks", main metric, metrics, ...}; properties
                              blessed, main_metric, main_metric_value, feature_space_id, num_samples

Blessing: every configured threshold must pass and, with ``no_worse_than_last``, the main metric
must be no worse (within ``regression_tolerance``) than that of the ``baseline`` input: the newest
blessed Blessing of this pipeline measured the same way, which the pipeline resolves before the
cache key (``ganpipe/pipeline/resolvers.py``), so a new baseline makes Evaluate run again. The
baseline is used only if its ``feature_space_id`` (a hash of the feature model's weights) and
sample count match; models measured differently are not compared.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math

import keras
import numpy as np
import tensorflow as tf

from ganpipe.components import classifier as feature_models
from ganpipe.components import monitoring
from ganpipe.components import specs
from ganpipe.infra import storage
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext, Progress, absolute_path
from ganpipe.components.quality import FRECHET_NAMES
from ganpipe.components.reader import make_dataset
import ganpipe.ganmodels.families  # noqa: F401  registers the custom layers the .keras files name
from ganpipe.ganmodels import losses, metrics
from ganpipe.ganmodels.srgan import bicubic_upscale

SAMPLE_NOISE_SEED = 0x5EED_0E7A  # the noise of the fakes, offset from training's draws
GRID_COLUMNS, GRID_MAX_CLASSES = 8, 16
# (parameter, metric, kind): kind "below"/"above" compares with the limit, "within" |value - 0.5|.
THRESHOLDS = (
    ("fcd_below", "frechet", "below"),
    ("kid_below", "kid", "below"),
    ("precision_above", "precision", "above"),
    ("recall_above", "recall", "above"),
    ("coverage_above", "coverage", "above"),
    ("psnr_above", "psnr", "above"),
    ("d_accuracy_within", "d_accuracy", "within"),
)



def run(inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict, ctx: ExecutionContext) -> None:
    schema = inputs["schema"].read_json("schema.json")
    classifier = inputs["classifier"]
    evaluation, blessing_artifact = outputs["evaluation"], outputs["blessing"]
    report = evaluate_model(inputs["model"].uri, inputs["examples"].uri, schema, classifier.uri, evaluation.uri,
                            log=ctx.log, progress=ctx.progress, **params)
    blessing = decide_blessing(report, params, [inputs["baseline"]] if "baseline" in inputs else [])
    blessing_artifact.write_json("blessing.json", blessing)
    evaluation.properties.update(main_metric=report["main_metric"], feature_space=report["feature_space"],
                                 num_samples=report["num_samples"],
                                 **{name: m["value"] for name, m in report["metrics"].items()})
    blessing_artifact.properties.update({key: blessing[key] for key in BLESSING_PROPERTIES})
    ctx.log(("BLESSED: " if blessing["blessed"] else "NOT BLESSED: ") + "; ".join(blessing["reasons"]))


COMPONENT = specs.EVALUATE
BLESSING_PROPERTIES = ("blessed", "main_metric", "main_metric_value", "feature_space_id", "num_samples")


# ------------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class Split:
    """n examples of one split, as the model sees them: [-1, 1] images or standardised vectors."""

    x: np.ndarray
    labels: np.ndarray | None = None
    lowres: np.ndarray | None = None


def evaluate_model(model_dir: str, examples_uri: str, schema: dict, classifier_dir: str, output_dir: str, *,
                   log=print, progress=None, **params) -> dict:
    """Measures the model in ``model_dir`` and writes the report into ``output_dir``; returns it.

    ``params`` are this component's parameters (missing ones take their defaults). Pass the
    returned report to ``decide_blessing``.
    """
    params = COMPONENT.resolve_parameters(params, "evaluate")
    # tf.data's seeded shuffle also depends on the process-wide seed, which an earlier step in
    # this process (Train) may have set: fix it, so the examples measured depend only on params.
    keras.utils.set_random_seed(params["seed"])
    info = read_model_info(model_dir)
    generator, generator_file = load_generator(model_dir, params["use_ema"])
    discriminator = keras.saving.load_model(_existing(model_dir, "discriminator.keras"), compile=False)
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
        _check_finite(fakes, storage.join(model_dir, generator_file))
        values, baselines = feature_metrics(feature_model, feature_info, schema, reference.x, fakes, held_out.x,
                                            params, counted)
        threshold = losses.get(info.get("loss") or "non_saturating").threshold
        if threshold is not None:  # a Wasserstein critic's scores have no decision threshold
            values.update(held_out_discriminator_accuracy(discriminator, held_out, fakes, params["batch_size"],
                                                          counted, threshold))
    if superres:
        quality, bicubic = upscaling_quality(held_out, fakes, info)
        values.update(quality)
        baselines.update(bicubic)
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
    report["main_metric"] = main_metric(report, params["main_metric"], superres)
    write_report(report, output_dir, sample_grid(generator, held_out, info, fakes, params["seed"]), info)
    return report


def load_generator(model_dir: str, use_ema: bool) -> tuple[keras.Model, str]:
    """The EMA generator when present (and wanted), else the raw one; and its file name."""
    name = "generator_ema.keras" if use_ema and storage.exists(storage.join(model_dir, "generator_ema.keras")) \
        else "generator.keras"
    return keras.saving.load_model(_existing(model_dir, name), compile=False), name


def feature_space_id(feature_model: keras.Model, feature_space: str) -> str:
    """Names the feature space by its weights: metrics are comparable across runs exactly when
    this matches (a retrained classifier with identical weights, e.g. after a code change that
    re-ran the Classifier step, still matches; its artifact fingerprint would not)."""
    digest = hashlib.sha256(feature_space.encode())
    for weight in feature_model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value)).tobytes())
    return f"{feature_space}:{digest.hexdigest()[:16]}"


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


def feature_metrics(feature_model, feature_info, schema, reference, fakes, held_out, params, counted=None):
    """The feature-space (and, for vectors, tabular) metrics and their real-vs-real baselines."""
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
    return metrics.compute(names, real, fake, **options), metrics.real_vs_real(names, real, other, **options)


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


def _entry(key: str, value: float, baseline: float | None) -> dict:
    kind = None if baseline is None else "bicubic" if key in ("psnr", "ssim") else "real_vs_real"
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


# ----------------------------------------------------------------------------------- report


def sample_grid(generator, held_out: Split, info: dict, fakes: np.ndarray, seed: int) -> np.ndarray:
    """uint8 grid: 8 columns; one row per class for conditional models; for SRGAN the rows are
    bicubic, generated and real high-res images of the same 8 examples."""
    if held_out.lowres is not None:
        scale = fakes.shape[1] // held_out.lowres.shape[1]
        bicubic = keras.ops.convert_to_numpy(bicubic_upscale(held_out.lowres[:GRID_COLUMNS], scale))
        rows = np.concatenate([bicubic, fakes[:GRID_COLUMNS], held_out.x[:GRID_COLUMNS]])
        return monitoring.sample_grid(rows, GRID_COLUMNS)
    if len(generator.inputs) == 1:
        return monitoring.sample_grid(fakes[:GRID_COLUMNS * GRID_COLUMNS], GRID_COLUMNS)
    classes = min(int(info.get("num_classes") or held_out.labels.max() + 1), GRID_MAX_CLASSES)
    labels = np.repeat(np.arange(classes, dtype="int32"), GRID_COLUMNS)
    latent = np.random.default_rng([SAMPLE_NOISE_SEED, seed, 1]).standard_normal(
        (len(labels), generator.inputs[0].shape[-1])).astype("float32")
    return monitoring.sample_grid(batched_call(generator, [latent, labels], 256), GRID_COLUMNS)


def write_report(report: dict, output_dir: str, grid: np.ndarray, info: dict) -> None:
    evaluation = Artifact(type="Evaluation", uri=output_dir)
    evaluation.write_json("metrics.json", report)
    monitoring.write_png(grid, evaluation.path("samples.png"))
    writer = tf.summary.create_file_writer(evaluation.path("logs", "eval"))
    with writer.as_default(step=int(info.get("steps") or 0)):
        for name, entry in report["metrics"].items():
            if entry["value"] is not None:
                tf.summary.scalar(f"{monitoring.QUALITY}/{name}", entry["value"])
            if entry["baseline"] is not None:
                tf.summary.scalar(f"{monitoring.BASELINE}/{name}", entry["baseline"])
        tf.summary.text(f"{monitoring.QUALITY}/report", markdown_table(report))
        tf.summary.image(f"{monitoring.QUALITY}/samples", grid[np.newaxis])
    writer.close()


def markdown_table(report: dict) -> str:
    accuracy = report["classifier_eval_accuracy"]
    lines = [
        f"**{report['model']['generator']}** ({report['model'].get('family')}, {report['model'].get('steps')} steps), "
        f"{report['num_samples']} samples per set, {report['feature_space']} features"
        + (f" (classifier eval accuracy {accuracy:.3f})" if accuracy is not None else "") + ".",
        "",
        "Baseline: real train vs real eval examples (what a perfect generator would score), or bicubic "
        "upscaling for PSNR/SSIM.",
        "",
        "| metric | model | baseline | better |",
        "|---|---|---|---|",
    ]
    for name, entry in report["metrics"].items():
        baseline = _format(entry["baseline"]) + (" (bicubic)" if entry["baseline_kind"] == "bicubic" else "")
        marker = " **(main)**" if name == report["main_metric"] else ""
        lines.append(f"| {name}{marker} | {_format(entry['value'])} | {baseline if entry['baseline_kind'] else '-'} "
                     f"| {entry['better']} |")
    return "\n".join(lines)


def _format(value: float | None) -> str:
    return "inf / nan" if value is None else f"{value:.4g}"


# ---------------------------------------------------------------------------------- blessing


def decide_blessing(report: dict, params: dict, earlier_blessings: list[Artifact] = ()) -> dict:
    """Checks the thresholds in ``params`` and, with no_worse_than_last, compares the main metric
    with the newest blessed Blessing among ``earlier_blessings`` (newest first) measured in the
    same feature space with as many samples. Returns blessing.json's content."""
    params = COMPONENT.resolve_parameters(params, "evaluate")
    checks = [check for check in map(lambda t: _threshold_check(report, params, *t), THRESHOLDS) if check]
    main = report["main_metric"]
    main_value = report["metrics"][main]["value"]
    compared_with = None
    if params["no_worse_than_last"]:
        check, compared_with = _regression_check(report, params, earlier_blessings)
        checks.append(check)
    if main_value is None:
        checks.append({"check": "finite", "metric": main, "value": None, "limit": None, "passed": False,
                       "reason": f"{main} is not finite"})
    blessed = all(check["passed"] for check in checks)
    reasons = [check["reason"] for check in checks if not check["passed"]] if not blessed else \
        [check["reason"] for check in checks] or ["no thresholds configured"]
    return {
        "blessed": blessed, "reasons": reasons, "checks": checks, "main_metric": main, "main_metric_value": main_value,
        "feature_space": report["feature_space"], "feature_space_id": report["feature_space_id"],
        "num_samples": report["num_samples"], "compared_with": compared_with, "model": report["model"],
        "metrics": report["metrics"],
        # Export compares with the served model under the same rule (it may not have gone through this
        # Evaluate's baseline: under Kubeflow there is no metadata store to resolve one from).
        "regression_tolerance": params["regression_tolerance"] if params["no_worse_than_last"] else None,
    }


def _threshold_check(report: dict, params: dict, parameter: str, metric: str, kind: str) -> dict | None:
    limit = params[parameter]
    if limit is None:
        return None
    if metric == "frechet":
        metric = FRECHET_NAMES[report["feature_space"]]
    entry = report["metrics"].get(metric)
    value = None if entry is None else entry["value"]
    if value is None:
        missing = "was not computed for this model" if entry is None else "is not finite"
        return {"check": parameter, "metric": metric, "value": None, "limit": limit, "passed": False,
                "reason": f"{metric} {missing} ({parameter}={limit})"}
    if kind == "within":
        passed, shown = abs(value - 0.5) <= limit, f"|{metric} - 0.5| = {abs(value - 0.5):.4g}"
    else:
        passed, shown = (value < limit if kind == "below" else value > limit), f"{metric} {value:.4g}"
    return {"check": parameter, "metric": metric, "value": value, "limit": limit, "passed": bool(passed),
            "reason": f"{shown} is {'' if passed else 'not '}{kind} {limit} ({parameter})"}


def _regression_check(report: dict, params: dict, earlier_blessings) -> tuple[dict, dict | None]:
    last = next((artifact for artifact in earlier_blessings if comparable(artifact.properties, report)), None)
    if last is None:
        main = report["main_metric"]
        return {"check": "no_worse_than_last", "metric": main, "value": report["metrics"][main]["value"],
                "limit": None, "passed": True,
                "reason": "no earlier blessed model of this pipeline measured the same way"}, None
    # Named by fingerprint, not by id or path: blessing.json stays a function of its inputs.
    check = no_worse_check(report, params["regression_tolerance"], last.properties,
                           "the last blessed model", f"Blessing {last.fingerprint[:12] or last.uri}")
    return check, {"fingerprint": last.fingerprint, "main_metric_value": last.properties["main_metric_value"]}


def no_worse_check(report: dict, tolerance: float, baseline: dict, baseline_name: str, source: str) -> dict:
    """The ``no_worse_than_last`` check of ``report``'s (or a blessing's) main metric against
    ``baseline``'s ``main_metric_value``, allowing a relative ``tolerance``. Evaluate runs it against
    its baseline input, Export against the newest served version."""
    main = report["main_metric"]
    value, previous = report["metrics"][main]["value"], baseline["main_metric_value"]
    lower = report["metrics"][main]["better"] == "lower"
    slack = tolerance * abs(previous)
    limit = previous + slack if lower else previous - slack
    passed = value is not None and (value <= limit if lower else value >= limit)
    shown = "nan/inf" if value is None else f"{value:.4g}"
    reason = (f"{main} {shown} is {'no worse' if passed else 'worse'} than {previous:.4g} of {baseline_name} "
              f"(limit {limit:.4g} with {tolerance:.0%} tolerance; {source})")
    return {"check": "no_worse_than_last", "metric": main, "value": value, "limit": limit, "passed": bool(passed),
            "reason": reason}


def comparable(properties: dict, report: dict) -> bool:
    """Whether a blessing (its properties or blessing.json) is a baseline for ``report``: blessed,
    and measured the same way (main metric, feature space, sample count)."""
    return (properties.get("blessed") is True and properties.get("main_metric") == report["main_metric"]
            and properties.get("main_metric_value") is not None
            and properties.get("feature_space_id") == report["feature_space_id"]
            and properties.get("num_samples") == report["num_samples"])


# ---------------------------------------------------------------------------------- helpers


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _check_finite(samples: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(samples)
    if bad.any():
        raise ComponentError(f"{where}: the generator produced {int(bad.sum())} non-finite values (NaN/inf); "
                             "training diverged")


def _existing(directory: str, name: str) -> str:
    path = storage.join(directory, name)
    if not storage.exists(path):
        raise ComponentError(f"{path}: missing; is {directory} a Train Model artifact?")
    return path


def read_model_info(model_dir: str) -> dict:
    """A Train Model artifact's model.json, or a clear error when it is not one."""
    return storage.read_json(_existing(model_dir, "model.json"))
