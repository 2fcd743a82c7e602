"""Evaluate: measures a trained generator's samples, reports them, and decides the blessing.

The executor is here; its concerns are modules: ``samples`` (the real examples and the fakes),
``measure`` (the metrics and their baselines), ``report`` (metrics.json, the grid, TensorBoard)
and ``blessing`` (thresholds and the comparison with a baseline).

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
    evaluation/closest_pairs.png  the fakes closest to a train example above that example (copying;
                              ``synthetic.py``, which also adds CAS and the membership audit)
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

from ganpipe.components import specs
from ganpipe.components.base import Artifact, ExecutionContext
from ganpipe.components.evaluate.blessing import THRESHOLDS, comparable, decide_blessing, no_worse_check
from ganpipe.components.evaluate.measure import evaluate_model, rename
from ganpipe.components.evaluate.samples import batched_call, load_generator, read_model_info
from ganpipe.components.quality import FRECHET_NAMES

COMPONENT = specs.EVALUATE
BLESSING_PROPERTIES = ("blessed", "main_metric", "main_metric_value", "feature_space_id", "num_samples")
__all__ = ["BLESSING_PROPERTIES", "COMPONENT", "FRECHET_NAMES", "THRESHOLDS", "batched_call", "comparable",
           "decide_blessing", "evaluate_model", "load_generator", "no_worse_check", "read_model_info", "rename", "run"]


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
