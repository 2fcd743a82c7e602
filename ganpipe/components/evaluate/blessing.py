"""Evaluate's blessing policy: configured thresholds, and "no worse than served" decided with the noise.

The gate (``no_worse_than_served``): the candidate and the served model are measured on the same
folds (``measure``), so their main metric's paired difference d (candidate - served, signed so
that positive is worse) has a standard error s over the folds. The candidate is refused when
d > z * s, z the (1 - no_worse_level) quantile of the standard normal: a one-sided test at level
``no_worse_level`` (0.05: z = 1.645) of "the candidate is worse". Export applies the same rule
(``gate_passes``) to the numbers recorded in the blessing.
"""
from __future__ import annotations

from statistics import NormalDist

from ganpipe.components import specs
from ganpipe.components.quality import FRECHET_NAMES

GATE = "no_worse_than_served"
# (parameter, metric, kind): kind "below"/"above" compares with the limit, "within" |value - 0.5|,
# "below_ratio" compares with the limit times the metric's real-vs-real baseline.
THRESHOLDS = (
    ("fcd_below", "frechet", "below"),
    ("fcd_below_ratio", "frechet", "below_ratio"),
    ("kid_below", "kid", "below"),
    ("precision_above", "precision", "above"),
    ("recall_above", "recall", "above"),
    ("coverage_above", "coverage", "above"),
    ("psnr_above", "psnr", "above"),
    ("d_accuracy_within", "d_accuracy", "within"),
    ("max_copying", "copying_share", "below"),
)


def decide_blessing(report: dict, params: dict) -> dict:
    """Checks the thresholds in ``params`` and, with no_worse_than_served, the main metric
    against the served model measured in the same run (``report["served"]``). Returns
    blessing.json's content."""
    params = specs.EVALUATE.resolve_parameters(params, "evaluate")
    checks = [check for check in (_threshold_check(report, params, *t) for t in THRESHOLDS) if check]
    main = report["main_metric"]
    main_value = report["metrics"][main]["value"]
    if params[GATE]:
        checks.append(served_check(report, params["no_worse_level"]))
    if main_value is None:
        checks.append({"check": "finite", "metric": main, "value": None, "limit": None, "passed": False,
                       "reason": f"{main} is not finite"})
    blessed = all(check["passed"] for check in checks)
    reasons = [check["reason"] for check in checks if not check["passed"]] if not blessed else \
        [check["reason"] for check in checks] or ["no thresholds configured"]
    return {
        "blessed": blessed, "reasons": reasons, "checks": checks, "main_metric": main, "main_metric_value": main_value,
        "main_metric_std": report["metrics"][main]["std"], "feature_space": report["feature_space"],
        "feature_space_id": report["feature_space_id"], "num_samples": report["num_samples"],
        "samples": report["samples"], "served": report.get("served"), "model": report["model"],
        "metrics": report["metrics"],
    }


def served_check(report: dict, level: float) -> dict:
    """The gate's check: passed when nothing is served, else by ``gate_passes``."""
    main = report["main_metric"]
    entry, served = report["metrics"][main], report.get("served")
    check = {"check": GATE, "metric": main, "value": entry["value"], "level": level, "better": entry["better"],
             "served": served}
    if not served:
        return {**check, "passed": True, "reason": "no model is served under this model name: nothing to compare with"}
    compared = entry.get("served") or {}
    check.update(served_value=compared.get("value"), difference=compared.get("difference"),
                 difference_std=compared.get("difference_std"))
    passed = gate_passes(check)
    if check["difference"] is None or check["difference_std"] is None:
        shown = f"{main} of the served version {served['version']} or the difference is not finite"
    else:
        shown = (f"{main} {_number(entry['value'])} vs {_number(compared['value'])} of served version "
                 f"{served['version']}: difference {check['difference']:+.4g} ± {check['difference_std']:.2g}, "
                 f"{'not ' if passed else ''}worse by more than {z_value(level):.3g} std")
    rule = f"one-sided test at level {level:g}, paired over {report['samples']['folds']} folds"
    return {**check, "passed": passed, "reason": f"{shown} ({rule})"}


def gate_passes(check: dict) -> bool:
    """The rule, from a gate check's recorded numbers (Evaluate and Export both decide with it):
    refused when the difference is worse than z(level) standard errors, or not finite."""
    difference, std = check.get("difference"), check.get("difference_std")
    if difference is None or std is None:
        return False
    worse_by = difference if check["better"] == "lower" else -difference
    return worse_by <= z_value(check["level"]) * std


def z_value(level: float) -> float:
    return NormalDist().inv_cdf(1.0 - level)


def _threshold_check(report: dict, params: dict, parameter: str, metric: str, kind: str) -> dict | None:
    limit = params[parameter]
    if limit is None:
        return None
    if metric == "frechet":
        metric = FRECHET_NAMES[report["feature_space"]]
    entry = report["metrics"].get(metric)
    value = None if entry is None else entry["value"]
    if kind == "below_ratio":
        baseline = None if entry is None else entry["baseline"]
        value = None if value is None or not baseline else value / baseline
        metric = f"{metric} / real-vs-real"
    if value is None:
        missing = "was not computed for this model" if entry is None else "is not finite"
        return {"check": parameter, "metric": metric, "value": None, "limit": limit, "passed": False,
                "reason": f"{metric} {missing} ({parameter}={limit})"}
    if kind == "within":
        passed, shown = abs(value - 0.5) <= limit, f"|{metric} - 0.5| = {abs(value - 0.5):.4g}"
    else:
        passed, shown = (value > limit if kind == "above" else value < limit), f"{metric} {value:.4g}"
    wanted = "above" if kind == "above" else "within" if kind == "within" else "below"
    return {"check": parameter, "metric": metric, "value": value, "limit": limit, "passed": bool(passed),
            "reason": f"{shown} is {'' if passed else 'not '}{wanted} {limit} ({parameter})"}


def _number(value: float | None) -> str:
    return "nan/inf" if value is None else f"{value:.4g}"
