"""Evaluate's report: metrics.json, the sample grid, and the TensorBoard eval logs."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ganpipe.components import monitoring
from ganpipe.components.base import Artifact
from ganpipe.components.evaluate.samples import SAMPLE_NOISE_SEED, Split, batched_call
from ganpipe.ganmodels.srgan import bicubic_upscale

GRID_COLUMNS, GRID_MAX_CLASSES = 8, 16
STD_SUFFIX = "_std"  # quality/<metric>_std: the standard error beside quality/<metric>
SERVED = "served"  # served/<metric>: the served model measured in the same run


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


def write_report(report: dict, output_dir: str, grid: np.ndarray, info: dict,
                 closest_pairs: np.ndarray | None = None) -> None:
    """metrics.json, samples.png (and closest_pairs.png) and the eval logs: per metric the value,
    its std, the baseline and the served model's value as scalars; the table as text; the grids as
    images."""
    evaluation = Artifact(type="Evaluation", uri=output_dir)
    evaluation.write_json("metrics.json", report)
    monitoring.write_png(grid, evaluation.path("samples.png"))
    if closest_pairs is not None:
        monitoring.write_png(closest_pairs, evaluation.path("closest_pairs.png"))
    writer = tf.summary.create_file_writer(evaluation.path("logs", "eval"))
    with writer.as_default(step=int(info.get("steps") or 0)):
        for name, entry in report["metrics"].items():
            for tag, value in ((f"{monitoring.QUALITY}/{name}", entry["value"]),
                               (f"{monitoring.QUALITY}/{name}{STD_SUFFIX}", entry["std"]),
                               (f"{monitoring.BASELINE}/{name}", entry["baseline"]),
                               (f"{SERVED}/{name}", (entry.get("served") or {}).get("value"))):
                if value is not None:
                    tf.summary.scalar(tag, value)
        tf.summary.text(f"{monitoring.QUALITY}/report", markdown_table(report))
        tf.summary.image(f"{monitoring.QUALITY}/samples", grid[np.newaxis])
        if closest_pairs is not None:
            tf.summary.image(f"{monitoring.QUALITY}/closest_pairs", closest_pairs[np.newaxis])
    writer.close()


def markdown_table(report: dict) -> str:
    accuracy = report["classifier_eval_accuracy"]
    sizes = report["samples"]
    lines = [
        f"**{report['model']['generator']}** ({report['model'].get('family')}, {report['model'].get('steps')} steps): "
        f"{sizes['folds']} folds of {sizes['fold']} fakes against {sizes['reference']} train examples, "
        f"{report['feature_space']} features"
        + (f" (classifier eval accuracy {accuracy:.3f})" if accuracy is not None else "") + ".",
        "",
        "± is the standard error over the folds (the baseline's: over halves of the eval split). Baseline: "
        f"{sizes['held_out']} real eval examples in place of the fakes (what a perfect generator would score), "
        "or bicubic upscaling for PSNR/SSIM. " + served_sentence(report.get("served")),
        "",
        metrics_table(report["metrics"], report["main_metric"]),
    ]
    if report.get("cas_per_class"):
        lines += ["", "CAS per class (trained on generated / on real examples): " + ", ".join(
            f"{label}: {entry['cas']:.2f} / {entry['real']:.2f}" for label, entry in report["cas_per_class"].items())]
    return "\n".join(lines)


def served_sentence(served: dict | None) -> str:
    if not served:
        return "Served: no model is served under this model name, so there is no comparison."
    return (f"Served: version {served['version']} ({served['destination']}), measured on the same folds; "
            "difference = model - served.")


def metrics_table(entries: dict, main: str) -> str:
    """The Markdown table of report (or blessing) metrics; Export's model card shows the same."""
    served = any(entry.get("served") for entry in entries.values())
    lines = ["| metric | model | baseline | " + ("served | difference | " if served else "") + "better |",
             "|---|---|---|" + ("---|---|" if served else "") + "---|"]
    for name, entry in entries.items():
        baseline = "-" if not entry.get("baseline_kind") else \
            plus_minus(entry["baseline"], entry.get("baseline_std")) + \
            ("" if entry["baseline_kind"] == "real_vs_real" else f" ({entry['baseline_kind'].replace('_', '-')})")
        compared = entry.get("served") or {}
        served_cells = (f"{plus_minus(compared['value'], compared['std'])} | "
                        f"{plus_minus(compared['difference'], compared['difference_std'], signed=True)} | "
                        if compared else "- | - | ") if served else ""
        marker = " **(main)**" if name == main else ""
        lines.append(f"| {name}{marker} | {plus_minus(entry['value'], entry.get('std'))} | {baseline} | "
                     f"{served_cells}{entry['better']} |")
    return "\n".join(lines)


def plus_minus(value: float | None, std: float | None, signed: bool = False) -> str:
    if value is None:
        return "inf / nan"
    shown = f"{value:+.4g}" if signed else f"{value:.4g}"
    return shown if std is None else f"{shown} ± {std:.2g}"
