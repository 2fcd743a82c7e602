"""Evaluate's blessing policy: configured thresholds and the comparison with a baseline."""
from __future__ import annotations

from ganpipe.components import specs
from ganpipe.components.base import Artifact
from ganpipe.components.quality import FRECHET_NAMES


THRESHOLDS = (
    ("fcd_below", "frechet", "below"),
    ("kid_below", "kid", "below"),
    ("precision_above", "precision", "above"),
    ("recall_above", "recall", "above"),
    ("coverage_above", "coverage", "above"),
    ("psnr_above", "psnr", "above"),
    ("d_accuracy_within", "d_accuracy", "within"),
    ("max_copying", "copying_share", "below"),
)


def decide_blessing(report: dict, params: dict, earlier_blessings: list[Artifact] = ()) -> dict:
    """Checks the thresholds in ``params`` and, with no_worse_than_last, compares the main metric
    with the newest blessed Blessing among ``earlier_blessings`` (newest first) measured in the
    same feature space with as many samples. Returns blessing.json's content."""
    params = specs.EVALUATE.resolve_parameters(params, "evaluate")
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

