"""Ingest (ExampleGen-style): a Beam pipeline from a source to raw tf.Example TFRecord shards.

Output layout (``output_dir``): ``train/data-*.tfrecord``, ``eval/data-*.tfrecord`` and
``metadata.json`` (kind, label vocabulary, feature names, counts). Raw example features:
``key`` (bytes, stable id), ``image`` (encoded file, or raw uint8 pixels when ``image_shape``
[H, W(, C)] is set) or ``features`` (float list), ``label`` (bytes: label name) and ``error``
(bytes: why the source could not read the record; Preprocess lists it as rejected).

The split is deterministic: a record goes to eval when the hash of its key falls below
``eval_fraction``, so re-running on the same source gives the same split. The ``photos`` source
splits by region instead: overlapping patches hashed at random would put the same pixels in
both splits, so a strip on the right of each photo (``eval_fraction`` of its width, at least one
patch wide) is held out and eval patches never overlap train patches.
"""
from __future__ import annotations

import collections
import hashlib
import math
import os
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from ganpipe.components import beamio, sources
from ganpipe.components.sources.common import RawRecord, SourcePlan
from ganpipe.components import specs
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext

SPLITS = ("train", "eval")
METADATA_FILE = "metadata.json"
_SUMMARY_FILE = ".summary.jsonl"  # the pipeline's small outputs, read by the driver


# --------------------------------------------------------------------------- split + encode
def is_eval(key: str, eval_fraction: float) -> bool:
    """Deterministic split: the first 8 bytes of md5(key) as a fraction of 2**64."""
    digest = hashlib.md5(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < eval_fraction * 2**64


def resolve_label(label: Any, label_names: list[str] | None) -> tuple[str | None, str | None]:
    """(label name or None, error or None). Integers index ``label_names`` when it is given."""
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if label is None or label == -1:
        return None, None
    if isinstance(label, int):
        if label < 0:
            return None, f"unknown label {label}: negative (-1 means unlabelled)"
        if label_names is None:
            return str(label), None
        if label >= len(label_names):
            return None, f"unknown label {label}: label_names has {len(label_names)} entries"
        return label_names[label], None
    label = str(label)
    if label_names is not None and label not in label_names:
        return None, f"unknown label {label!r}: not in label_names"
    return label, None


def serialize_raw(record: RawRecord) -> bytes:
    return beamio.serialize_example(
        bytes_features=[
            ("key", [record.key.encode("utf-8")]),
            ("image", None if record.image is None else [record.image]),
            ("label", None if record.label is None else [record.label.encode("utf-8")]),
            ("error", None if record.error is None else [record.error.encode("utf-8")]),
        ],
        int_features=[("image_shape", record.image_shape)],
        float_features=[("features", record.features)],
    )


class _SplitAndEncode(beam.DoFn):
    def __init__(self, eval_fraction: float, label_names: list[str] | None):
        self.eval_fraction = eval_fraction
        self.label_names = label_names
        self.errors = Metrics.counter(beamio.METRICS_NAMESPACE, "records_with_error")

    def process(self, batch):
        by_split = {split: [] for split in SPLITS}
        label_counts = collections.Counter()
        for record in batch:
            record.label, error = resolve_label(record.label, self.label_names)
            record.error = record.error or error
            if record.error:
                self.errors.inc()
            elif record.label is not None:
                label_counts[record.label] += 1
            split = record.split or ("eval" if is_eval(record.key, self.eval_fraction) else "train")
            by_split[split].append(serialize_raw(record))
        for split, records in by_split.items():
            if records:
                yield split, records
        if label_counts:
            yield beam.pvalue.TaggedOutput("label_counts", label_counts)


class SplitAndEncode(beam.PTransform):
    """Batches of RawRecord -> {'examples': (split, batch of serialized tf.Examples),
    'label_counts': a Counter of label names per batch (sum them; a global combine here would
    add nine transforms, each with a fixed cost on the DirectRunner)}."""

    def __init__(self, eval_fraction: float, label_names: list[str] | None = None):
        super().__init__()
        self.split = _SplitAndEncode(eval_fraction, label_names)

    def expand(self, batches):
        outputs = batches | "Encode" >> beam.ParDo(self.split).with_outputs("label_counts", main="examples")
        return {"examples": outputs.examples, "label_counts": outputs.label_counts}


# ------------------------------------------------------------------------------- the driver
def discovered_vocabulary(label_counts: dict[str, int]) -> list[str]:
    """Label names seen in the data: 0..max when all are integers (so the index is the value),
    else sorted."""
    names = list(label_counts)
    if names and all(name.isdigit() for name in names):
        return [str(i) for i in range(max(int(name) for name in names) + 1)]
    return sorted(names)


def shard_counts(eval_fraction: float, num_shards: int) -> dict[str, int]:
    """``num_shards`` train shards and eval in proportion (at least one); 0: the runner decides."""
    if not num_shards:
        return {"train": 0, "eval": 0}
    return {"train": num_shards, "eval": max(1, math.ceil(num_shards * eval_fraction))}


def _check_output_empty(output_dir: str) -> None:
    for split in SPLITS:
        if beamio.shard_paths(os.path.join(output_dir, split)):
            raise ComponentError(f"{output_dir}/{split} already holds shards; write to an empty directory")


def run_ingest(
    source: str = "digits",
    output_dir: str = "",
    *,
    eval_fraction: float = 0.1,
    num_shards: int = 0,
    tfds_data_dir: str | None = None,
    tfds_download: bool = False,
    tfds_split: str = "train",
    image_feature: str = "image",
    label_feature: str | None = "label",
    label_column: str | None = None,
    features_key: str = "x",
    label_names: list[str] | None = None,
    csv_delimiter: str = ",",
    patch_size: int = 64,
    patch_stride: int = 32,
    beam_args=(),
    log=print,
) -> dict:
    """Reads ``source`` into raw tf.Example shards under ``output_dir``; returns the metadata."""
    if not output_dir:
        raise ComponentError("run_ingest: output_dir is required")
    params = dict(locals())
    plan = sources.plan_source(source, params)
    _check_output_empty(output_dir)
    shards = shard_counts(eval_fraction, num_shards)
    log(f"Ingest: {source} ({plan.kind}) -> {output_dir}, shards {shards}")

    summary_path = os.path.join(output_dir, _SUMMARY_FILE)
    writer = beamio.WriteTFRecordShards({split: os.path.join(output_dir, split) for split in SPLITS}, shards)
    pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    records = pipeline | "Read" >> plan.read
    encoded = records | "SplitAndEncode" >> SplitAndEncode(eval_fraction, plan.label_names)
    files = encoded["examples"] | "WriteShards" >> writer
    {"files": files, "label_counts": encoded["label_counts"]} | "WriteSummary" >> beamio.WriteTaggedJsonLines(
        summary_path
    )
    result = beamio.run_pipeline(pipeline)

    summary = beamio.read_tagged_json_lines(summary_path, ("files", "label_counts"))
    FileSystems.delete([summary_path])
    writer.publish(summary["files"])
    shard_files = {split: beamio.shard_paths(os.path.join(output_dir, split)) for split in SPLITS}
    counts = {split: beamio.count_tfrecords(paths) for split, paths in shard_files.items()}
    _check_conservation(source, plan, result, counts)
    label_counts = _sum_counts(summary["label_counts"])
    metadata = {
        "source": source,
        "kind": plan.kind,
        "label_names": plan.label_names or discovered_vocabulary(label_counts),
        "labels_declared": plan.label_names is not None,
        "label_counts": label_counts,
        "feature_names": plan.feature_names,
        "counts": counts,
        "num_shards": {split: len(paths) for split, paths in shard_files.items()},
        "eval_fraction": eval_fraction,
        "records_with_error": beamio.counter_value(result, "records_with_error") or 0,
    }
    Artifact("Examples", output_dir).write_json(METADATA_FILE, metadata)
    log(f"Ingest: wrote {counts['train']} train + {counts['eval']} eval records"
        f" ({metadata['records_with_error']} unreadable, to be rejected by Preprocess)")
    return metadata


def _sum_counts(counters: list[dict[str, int]]) -> dict[str, int]:
    total = sum(map(collections.Counter, counters), collections.Counter())
    return dict(sorted(total.items()))


def _check_conservation(source: str, plan: SourcePlan, result, counts: dict[str, int]) -> None:
    written = sum(counts.values())
    read = beamio.counter_value(result, "records_read")
    if read is None:  # the runner reports no metrics: the driver's own count must do
        read = plan.expected_count if plan.expected_count is not None else written
    if plan.expected_count is not None and read != plan.expected_count:
        raise ComponentError(f"Ingest {source}: listed {plan.expected_count} records but read {read}")
    if read != written:
        raise ComponentError(
            f"Ingest {source}: read {read} records but the shards hold {written}; records were lost "
            f"(seen with --direct_running_mode=multi_threading on Beam 2.77)"
        )
    if written == 0:
        raise ComponentError(f"Ingest {source}: empty source, no records read")


def load_metadata(examples_dir: str) -> dict:
    path = os.path.join(examples_dir, METADATA_FILE)
    if not FileSystems.exists(path):
        raise ComponentError(f"{examples_dir}: no {METADATA_FILE}; is this the output of Ingest?")
    return Artifact("Examples", examples_dir).read_json(METADATA_FILE)


# ------------------------------------------------------------------------------ component


def run(inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict, ctx: ExecutionContext) -> None:
    examples = outputs["examples"]
    metadata = run_ingest(output_dir=examples.uri, beam_args=ctx.beam_args, log=ctx.log, **params)
    examples.properties.update(
        kind=metadata["kind"],
        num_classes=len(metadata["label_names"]),
        train_count=metadata["counts"]["train"],
        eval_count=metadata["counts"]["eval"],
    )


COMPONENT = specs.INGEST
