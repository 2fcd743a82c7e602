"""Ingest (ExampleGen-style): a Beam pipeline from a source to raw tf.Example TFRecord shards.

Output layout (``output_dir``): ``train/data-*.tfrecord``, ``eval/data-*.tfrecord`` and
``metadata.json`` (kind, label vocabulary, feature names, counts). Raw example features:
``key`` (bytes, stable id), ``image`` (encoded file, or raw uint8 pixels when ``image_shape``
[H, W(, C)] is set) or ``features`` (float list), ``label`` (bytes: the canonical label name,
``sources.labels``), ``source_path`` and ``source_index`` (where the record came from) and, for a
record that cannot be used, ``reason`` and ``error`` (its class and message; Preprocess lists it
as rejected).

The split is stable (``sources.splits``): a 128-bit hash of the record's name relative to the
source root, or of its content, against ``eval_fraction``; identical records share a split; the
rule and salt are recorded in ``metadata.json``. The ``photos`` source splits by region instead:
overlapping patches hashed at random would put the same pixels in both splits, so a strip on
the right of each photo (``eval_fraction`` of its width, at least one patch wide) is held out and
eval patches never overlap train patches.
"""
from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam.metrics import Metrics

from ganpipe.components import sources
from ganpipe.infra import beamio, storage
from ganpipe.components.sources import labels
from ganpipe.components.sources.common import RawRecord, Rejected, SourcePlan
from ganpipe.components.sources.splits import DuplicateGroups, Splitter
from ganpipe.components import specs
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext, check_keys

SPLITS = ("train", "eval")
METADATA_FILE = "metadata.json"


# --------------------------------------------------------------------------- split + encode
def serialize_raw(record: RawRecord) -> bytes:
    return beamio.serialize_example(
        bytes_features=[
            ("key", [record.key.encode("utf-8")]),
            ("image", None if record.image is None else [record.image]),
            ("label", None if record.label is None else [record.label.encode("utf-8")]),
            ("error", None if record.error is None else [record.error.encode("utf-8")]),
            ("reason", None if record.reason is None else [record.reason.encode("utf-8")]),
            ("source_path", [record.path.encode("utf-8")]),
        ],
        int_features=[("image_shape", record.image_shape),
                      ("source_index", None if record.index is None else [record.index])],
        float_features=[("features", record.features)],
    )


class _Encode(beam.DoFn):
    """A batch of RawRecord -> a batch of encoded records ``(key hash, content hash or None,
    natural split or None, serialized tf.Example)`` (bytes and strings: Beam encodes them
    without pickling when the batch waits for the duplicate groups), and a tally."""

    def __init__(self, splitter: Splitter, label_names: list[str] | None):
        self.splitter = splitter
        self.declared = None if label_names is None else frozenset(label_names)
        self.errors = Metrics.counter(beamio.METRICS_NAMESPACE, "records_with_error")

    def process(self, batch):
        tally = collections.Counter(read=len(batch))
        encoded = []
        for record in batch:
            if not record.error:
                self._apply_label_rule(record)
            if record.error:
                self.errors.inc()
                tally["with_error"] += 1
            elif record.label is not None:
                tally[f"label:{record.label}"] += 1
            encoded.append((*self.splitter.digests(record), record.split, serialize_raw(record)))
        yield encoded
        yield beam.pvalue.TaggedOutput("tally", tally)

    def _apply_label_rule(self, record: RawRecord) -> None:
        """The label as a canonical name (``sources.labels``), or the record rejected."""
        raw, record.label = record.label, None
        try:
            name = labels.canonical_label(raw)
        except labels.BadLabel as e:
            record.reject(Rejected("bad_label", str(e)))
            return
        if name is not None and self.declared is not None and name not in self.declared:
            record.reject(Rejected("unknown_label", f"label {name!r} is not in label_names"))
            return
        record.label = name


class _AssignSplits(beam.DoFn):
    """A batch of encoded records -> (split, batch of serialized tf.Examples) per split and a
    tally of what each split got. A record in a duplicate group takes the group's key hash."""

    def __init__(self, splitter: Splitter):
        self.splitter = splitter

    def process(self, encoded, duplicates=None):
        by_split = {split: [] for split in SPLITS}
        for key_hash, content_hash, natural_split, data in encoded:
            if duplicates and content_hash is not None:
                key_hash = duplicates.get(content_hash, key_hash)
            by_split[natural_split or self.splitter.split_of_hash(key_hash)].append(data)
        tally = collections.Counter()
        for split, records in by_split.items():
            if records:
                tally[f"written:{split}"] = len(records)
                yield split, records
        yield beam.pvalue.TaggedOutput("tally", tally)


class SplitAndEncode(beam.PTransform):
    """Batches of RawRecord -> {'examples': (split, batch of serialized tf.Examples),
    'tallies': PCollections of Counters of records read, sent to each split (``written:<split>``), carrying a
    source error and per label name (``label:<name>``)}."""

    def __init__(self, splitter: Splitter, label_names: list[str] | None = None):
        super().__init__()
        self.splitter, self.label_names = splitter, label_names

    def expand(self, batches):
        encoded = batches | "Encode" >> beam.ParDo(_Encode(self.splitter, self.label_names)).with_outputs(
            "tally", main="encoded")
        side_inputs = {}
        if self.splitter.split_key == "path":
            duplicates = encoded.encoded | "DuplicateGroups" >> DuplicateGroups()
            side_inputs["duplicates"] = beam.pvalue.AsDict(duplicates)
        assigned = encoded.encoded | "AssignSplits" >> beam.ParDo(
            _AssignSplits(self.splitter), **side_inputs).with_outputs("tally", main="examples")
        return {"examples": assigned.examples, "tallies": (encoded.tally, assigned.tally)}


# ------------------------------------------------------------------------------- the driver
def _check_output_empty(output_dir: str) -> None:
    for split in SPLITS:
        if beamio.shard_paths(storage.join(output_dir, split)):
            raise ComponentError(f"{output_dir}/{split} already holds shards; write to an empty directory")


def run_ingest(source: str = "digits", output_dir: str = "", *, beam_args=(), log=print, **params) -> dict:
    """Reads ``source`` into raw tf.Example shards under ``output_dir`` (a path or URI); returns
    the metadata. ``params`` are Ingest's parameters (``specs.INGEST``, each source kind's own
    included), their defaults from the spec. The Beam job writes everything, ``metadata.json``
    included; the driver only checks the counts in it."""
    if not output_dir:
        raise ComponentError("run_ingest: output_dir is required")
    try:
        check_keys(params, specs.INGEST.defaults(), "ingest")
    except ValueError as error:
        raise ComponentError(str(error)) from None
    params = {**specs.INGEST.defaults(), **params, "source": source}
    params["label_names"] = labels.declared_label_names(params["label_names"])
    plan = sources.plan_source(source, params)
    eval_fraction, num_shards = params["eval_fraction"], params["num_shards"]
    splitter = Splitter(eval_fraction, params["split_key"], params["split_salt"])
    pipeline = beamio.make_pipeline(beam_args)
    _check_output_empty(output_dir)
    log(f"Ingest: {source} ({plan.kind}) -> {output_dir}, shards per split: {num_shards or 'runner decides'}")

    writer = beamio.WriteSplitShards(output_dir, SPLITS, num_shards)
    records = pipeline | "Read" >> plan.read
    encoded = records | "SplitAndEncode" >> SplitAndEncode(splitter, plan.label_names)
    files = encoded["examples"] | "WriteShards" >> writer
    shard_tally = files | "CountShards" >> beam.Map(lambda file: collections.Counter({f"shards:{file.destination}": 1}))
    tally = (*encoded["tallies"], shard_tally) | "Tallies" >> beam.Flatten() | "SumTallies" >> beamio.SumTallies()
    static = {"source": source, "kind": plan.kind, "label_names": plan.label_names,
              "feature_names": plan.feature_names, "eval_fraction": eval_fraction, "split": splitter.rule()}
    tally | "WriteMetadata" >> beamio.Finalize(
        lambda tally: storage.write_json(storage.join(output_dir, METADATA_FILE), build_metadata(static, tally))
    )
    beamio.run(pipeline, "Ingest")
    storage.delete([writer.temp_directory])

    metadata = load_metadata(output_dir)
    _check_conservation(source, plan, metadata)
    _check_train_split(source, metadata)
    counts = metadata["counts"]
    log(f"Ingest: wrote {counts['train']} train + {counts['eval']} eval records"
        f" ({metadata['records_with_error']} unreadable, to be rejected by Preprocess)")
    return metadata


def build_metadata(static: dict, tally: collections.Counter) -> dict:
    """metadata.json from what the driver knew (``static``) and the job's summed tally."""
    label_counts = {key[len("label:"):]: n for key, n in sorted(tally.items()) if key.startswith("label:")}
    return {
        **static,
        "label_names": static["label_names"] or labels.vocabulary(label_counts),
        "labels_declared": static["label_names"] is not None,
        "label_counts": label_counts,
        "counts": {split: tally[f"written:{split}"] for split in SPLITS},
        "num_shards": {split: tally[f"shards:{split}"] for split in SPLITS},
        "read": tally["read"],
        "records_with_error": tally["with_error"],
    }


def _check_conservation(source: str, plan: SourcePlan, metadata: dict) -> None:
    read, written = metadata["read"], sum(metadata["counts"].values())
    if plan.expected_count is not None and read != plan.expected_count:
        raise ComponentError(f"Ingest {source}: listed {plan.expected_count} records but read {read}")
    if read != written:
        raise ComponentError(f"Ingest {source}: read {read} records but wrote {written}; records were lost")
    if written == 0:
        raise ComponentError(f"Ingest {source}: empty source, no records read")


def _check_train_split(source: str, metadata: dict) -> None:
    if metadata["counts"]["train"] == 0:
        split = metadata["split"]
        raise ComponentError(
            f"Ingest {source}: the train split is empty: all {metadata['counts']['eval']} records went to eval "
            f"under the split rule ({split['rule']}; key: {split['key']}, eval_fraction {split['eval_fraction']}, "
            f"salt {split['salt']!r}); lower ingest.eval_fraction or change ingest.split_salt"
        )


def load_metadata(examples_dir: str) -> dict:
    path = storage.join(examples_dir, METADATA_FILE)
    if not storage.exists(path):
        raise ComponentError(f"{examples_dir}: no {METADATA_FILE}; is this the output of Ingest?")
    return storage.read_json(path)


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
