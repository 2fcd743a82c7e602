"""Evaluate: measures a trained generator beside the served one, reports both, and decides the blessing.

The executor is here; its concerns are modules: ``samples`` (real examples, fakes in folds from
the Keras generator or the served SavedModel), ``measure`` (the metrics, their noise and
baselines), ``report`` (metrics.json, the grid, TensorBoard) and ``blessing`` (thresholds and the
gate). docs/evaluation.md states the estimators and the rule.

Inputs: the Model, the examples and schema, the Classifier's feature space, and ``served``: the
PushedModel of the version served under ``export.model_name``, which the pipeline resolves before
the cache key (``ganpipe/pipeline/resolvers.py``; a compiled step finds it with ``ganpipe execute
--served-from``); absent when nothing is served.

Outputs::

    evaluation/metrics.json   the report: {"metrics": {name: {value, std, baseline, baseline_std,
                              baseline_kind, better, served: {value, std, difference,
                              difference_std}}}, feature space, sample sizes, served, model}; a
                              non-finite value is written as null
    evaluation/samples.png    the sample grid (one row per class for conditional models)
    evaluation/closest_pairs.png  the fakes closest to a train example above that example (copying;
                              ``synthetic.py``, which also adds CAS and the membership audit)
    evaluation/logs/eval/     TensorBoard: scalars quality/<name>, quality/<name>_std,
                              real_vs_real/<name>, served/<name>; the table (text quality/report),
                              the grid (image quality/samples)
    blessing/blessing.json    {"blessed", "reasons", "checks", main metric, metrics, served, ...};
                              properties blessed, main_metric, main_metric_value,
                              feature_space_id, num_samples
"""
from __future__ import annotations

from ganpipe.components import specs
from ganpipe.components.base import Artifact, ExecutionContext
from ganpipe.components.evaluate.blessing import GATE, THRESHOLDS, decide_blessing, gate_passes
from ganpipe.components.evaluate.measure import evaluate_model, rename
from ganpipe.components.evaluate.samples import batched_call, load_generator, read_model_info
from ganpipe.components.quality import FRECHET_NAMES
from ganpipe.infra import storage

COMPONENT = specs.EVALUATE
BLESSING_PROPERTIES = ("blessed", "main_metric", "main_metric_value", "feature_space_id", "num_samples")
__all__ = ["BLESSING_PROPERTIES", "COMPONENT", "FRECHET_NAMES", "GATE", "THRESHOLDS", "batched_call", "decide_blessing",
           "evaluate_model", "gate_passes", "load_generator", "read_model_info", "rename", "run", "what_is_served"]


def run(inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict, ctx: ExecutionContext) -> None:
    schema = inputs["schema"].read_json("schema.json")
    classifier = inputs["classifier"]
    evaluation, blessing_artifact = outputs["evaluation"], outputs["blessing"]
    report = evaluate_model(inputs["model"].uri, inputs["examples"].uri, schema, classifier.uri, evaluation.uri,
                            served=what_is_served(inputs.get("served")), log=ctx.log, progress=ctx.progress, **params)
    blessing = decide_blessing(report, params)
    blessing_artifact.write_json("blessing.json", blessing)
    evaluation.properties.update(main_metric=report["main_metric"], feature_space=report["feature_space"],
                                 num_samples=report["num_samples"],
                                 **{name: m["value"] for name, m in report["metrics"].items()})
    blessing_artifact.properties.update({key: blessing[key] for key in BLESSING_PROPERTIES})
    ctx.log(("BLESSED: " if blessing["blessed"] else "NOT BLESSED: ") + "; ".join(blessing["reasons"]))


def what_is_served(pushed: Artifact | None) -> dict | None:
    """What a PushedModel serves: its version, directory and the model fingerprint it records."""
    if pushed is None:
        return None
    result = pushed.read_json("pushed.json")
    destination = result["destination"]
    recorded = storage.read_json(storage.join(destination, specs.SERVED_EXTRA, "export.json"))
    return {"version": result["version"], "destination": destination,
            "model_fingerprint": recorded.get("model_fingerprint")}
