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
    evaluation = Artifact(type="Evaluation", uri=output_dir)
    evaluation.write_json("metrics.json", report)
    monitoring.write_png(grid, evaluation.path("samples.png"))
    if closest_pairs is not None:
        monitoring.write_png(closest_pairs, evaluation.path("closest_pairs.png"))
    writer = tf.summary.create_file_writer(evaluation.path("logs", "eval"))
    with writer.as_default(step=int(info.get("steps") or 0)):
        for name, entry in report["metrics"].items():
            if entry["value"] is not None:
                tf.summary.scalar(f"{monitoring.QUALITY}/{name}", entry["value"])
            if entry["baseline"] is not None:
                tf.summary.scalar(f"{monitoring.BASELINE}/{name}", entry["baseline"])
        tf.summary.text(f"{monitoring.QUALITY}/report", markdown_table(report))
        tf.summary.image(f"{monitoring.QUALITY}/samples", grid[np.newaxis])
        if closest_pairs is not None:
            tf.summary.image(f"{monitoring.QUALITY}/closest_pairs", closest_pairs[np.newaxis])
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
        baseline = _format(entry["baseline"]) + (f" ({entry['baseline_kind'].replace('_', ' ')})"
                                                 if entry["baseline_kind"] not in (None, "real_vs_real") else "")
        marker = " **(main)**" if name == report["main_metric"] else ""
        lines.append(f"| {name}{marker} | {_format(entry['value'])} | {baseline if entry['baseline_kind'] else '-'} "
                     f"| {entry['better']} |")
    if report.get("cas_per_class"):
        lines += ["", "CAS per class (trained on generated / on real examples): " + ", ".join(
            f"{label}: {entry['cas']:.2f} / {entry['real']:.2f}" for label, entry in report["cas_per_class"].items())]
    return "\n".join(lines)


def _format(value: float | None) -> str:
    return "inf / nan" if value is None else f"{value:.4g}"

