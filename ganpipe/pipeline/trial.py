"""One TensorBoard HParams trial per pipeline run: the full parameters of the step that trained the
Model and the metrics of the step that evaluated it, side by side, so the HParams dashboard's
table and parallel-coordinates view answer "which settings give the best FCD" across runs.

The trial is its own TensorBoard run, ``tensorboard/run-<id>/hparams/``: the dashboard infers a
session's metrics from the scalars of its run and the runs below it, so keeping it apart from
``train/`` and ``eval/`` makes the metric columns exactly the evaluation metrics. Written with
TensorBoard's own protos and record framing (no TensorFlow import: its EventFileWriter loads
TensorFlow for gfile, which would cost a cached run ten seconds). No experiment config is
written: TensorBoard takes one per logdir, and a logdir may hold many pipeline runs.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from ganpipe.components.base import Artifact

TRIAL_RUN = "hparams"
# The trial's metric tags: a group that sorts after the training curves ("gan/") on TensorBoard's
# Time Series page, so the final numbers do not open it.
METRIC_GROUP = "metrics"


def write_trial(view: str, trial_id: str, parameters: dict[str, Any], metrics: dict[str, float],
                step: int = 0) -> str:
    """Writes the session (``parameters`` flattened: ``network.width``) and one scalar per metric
    (``metrics/<name>``) into ``<view>/hparams/``; returns that directory."""
    logdir = os.path.join(view, TRIAL_RUN)
    os.makedirs(logdir, exist_ok=True)
    now = time.time()
    events = [event_pb2.Event(wall_time=now, file_version="brain.Event:2"),
              event_pb2.Event(wall_time=now, step=step, summary=hparams_summary.hparams_pb(
                  hparams_values(parameters), trial_id=trial_id, start_time_secs=now))]
    events += [event_pb2.Event(wall_time=now, step=step, summary=scalar_summary.scalar_pb(f"{METRIC_GROUP}/{name}", value))
               for name, value in sorted(metrics.items())]
    name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.ganpipe"
    with open(os.path.join(logdir, name), "wb") as f:
        writer = RecordWriter(f)
        for event in events:
            writer.write(event.SerializeToString())
    return logdir


def hparams_values(parameters: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Values the hparams plugin takes: nested mappings flattened with dots, lists and None as text."""
    values = {}
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            values.update(hparams_values(value, prefix=f"{name}."))
        else:
            values[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def write_run_trial(view: str, pipeline: str, run_id: int, steps, parameters: dict[str, dict[str, Any]]) -> str | None:
    """The trial of a finished run from its steps (``StepResult``s): the parameters of the section
    whose step output a Model, completed by what it resolved (steps), and the Evaluation's metrics
    (from its metrics.json). None when the run has no evaluated model."""
    model = _output_of(steps, "Model")
    evaluation = _output_of(steps, "Evaluation")
    if model is None or evaluation is None:
        return None
    component, artifact = model
    resolved = {key: artifact.properties[key] for key in ("family", "steps") if key in artifact.properties}
    report = evaluation[1].read_json("metrics.json")
    metrics = {name: entry["value"] for name, entry in report["metrics"].items() if entry.get("value") is not None}
    return write_trial(view, f"{pipeline}/run-{run_id}", {**parameters.get(component.lower(), {}), **resolved},
                       metrics, step=int(artifact.properties.get("steps") or 0))


def _output_of(steps, artifact_type: str) -> tuple[str, Artifact] | None:
    return next(((step.component, a) for step in steps for a in step.outputs.values() if a.type == artifact_type),
                None)
