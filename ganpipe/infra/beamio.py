"""Generic Beam I/O for Ingest and Preprocess: batching, TFRecord files (framing, CRC-checked
reading, a shard sink), tf.Example serialisation, the runner, tallies and small outputs.

Elements move in *batches* (Python lists) rather than single records: on the in-process runner
each element costs tens of microseconds of bookkeeping, more than building a tf.Example.

TFRecord framing is TFRecord's own (length, masked CRC-32C of the length, data, masked CRC-32C
of the data), so TensorFlow reads our files and we read TensorFlow's. The CRC is google-crc32c's
hardware CRC (what Beam itself prefers): checking every record's data costs well under a
microsecond per 3 KB record, so it is never skipped.

The local runner is named explicitly: Beam 2.77's ``DirectRunner`` tries the ``PrismRunner``
first (a binary it downloads) and falls back to the ``FnApiRunner`` only offline, so the runner
a user got would depend on their network. Without ``--runner`` ganpipe runs the ``FnApiRunner``
(in-process; ``--direct_running_mode=multi_processing --direct_num_workers=N`` for worker
processes). Any other runner is the user's choice through ``beam.args``.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import struct
from typing import Iterable, Iterator

import apache_beam as beam
import google_crc32c
from apache_beam.io import fileio
from apache_beam.io.filesystems import CompressionTypes, FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.options.value_provider import StaticValueProvider

from ganpipe.infra import storage
from ganpipe.infra.example_proto import Example  # not TensorFlow's: workers never import TF
from ganpipe.infra import tf_filesystem  # noqa: F401  registers ram:// with Beam's FileSystems
from ganpipe.infra.errors import ComponentError

BATCH_SIZE = 256
METRICS_NAMESPACE = "ganpipe"  # Beam counters: for monitoring only, never for checks


def chunks(count: int, size: int = BATCH_SIZE) -> list[tuple[int, int]]:
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def batched(items: Iterable, size: int = BATCH_SIZE) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch



def serialize_example(*, bytes_features=(), int_features=(), float_features=()) -> bytes:
    """A serialized tf.train.Example from (name, values) pairs; None values are left out."""
    example = Example()
    feature = example.features.feature
    for name, values in bytes_features:
        if values is not None:
            feature[name].bytes_list.value.extend(values)
    for name, values in int_features:
        if values is not None:
            feature[name].int64_list.value.extend(values)
    for name, values in float_features:
        if values is not None:
            feature[name].float_list.value.extend(values)
    # Deterministic: map order otherwise differs between processes, and shards (and the cache
    # fingerprints over them) must not depend on which worker wrote them.
    return example.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------- TFRecord framing
SHARD_PATTERN = "*.tfrecord"


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc(length)), data, struct.pack("<I", masked_crc(data))))


def write_tfrecords(stream, records: Iterable[bytes]) -> None:
    """Writes ``records`` framed, one write call per batch (a write per record costs more)."""
    stream.write(b"".join(map(frame, records)))


@dataclasses.dataclass(frozen=True)
class Corrupt:
    """A record that failed its CRC or was cut off: where it is and why."""

    path: str
    index: int
    problem: str

    @property
    def key(self) -> str:
        return f"{self.path}#{self.index}"

    @property
    def message(self) -> str:
        return f"{self.problem} in record {self.index} of {self.path}"


def iter_records(path: str, compression_type: str = CompressionTypes.AUTO) -> Iterator[bytes | Corrupt]:
    """The records of a TFRecord file, each data CRC checked: a record whose data CRC fails is
    yielded as ``Corrupt`` and reading goes on; a broken length (bad length CRC, cut-off file)
    ends the file with one ``Corrupt``, since the next record's start is unknown."""
    with FileSystems.open(path, compression_type=compression_type) as stream:
        index = 0
        while header := stream.read(12):
            (length,) = struct.unpack("<Q", header[:8]) if len(header) == 12 else (None,)
            if length is None or struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
                yield Corrupt(path, index, "bad length CRC (the rest of the file is unreadable)")
                return
            body = stream.read(length + 4)
            if len(body) < length + 4:
                yield Corrupt(path, index, "truncated record (file cut off)")
                return
            data = body[:length]
            if struct.unpack("<I", body[length:])[0] != masked_crc(data):
                yield Corrupt(path, index, "bad data CRC")
            else:
                yield data
            index += 1


def shard_pattern(directory: str) -> str:
    return storage.join(directory, SHARD_PATTERN)


def shard_name(index: int, total: int) -> str:
    return f"data-{index:05d}-of-{total:05d}.tfrecord"


def shard_paths(directory: str) -> list[str]:
    return storage.glob(shard_pattern(directory))


# ---------------------------------------------------------------------------- reading shards
class ReadTFRecordBatches(beam.PTransform):
    """``{split: file pattern}`` -> ``(split, batch)`` where a batch holds serialized records and
    ``Corrupt`` entries. Patterns are matched on the workers (the job graph holds patterns, not
    file lists) and files are redistributed, so parallelism does not follow the file count."""

    def __init__(self, patterns: dict[str, str]):
        super().__init__()
        self.patterns = patterns

    def expand(self, pipeline):
        return (
            pipeline
            | "Patterns" >> beam.Create(sorted(self.patterns.items()))
            | "Match" >> beam.FlatMapTuple(lambda split, pattern: ((split, path) for path in storage.glob(pattern)))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadBatches" >> beam.FlatMapTuple(
                lambda split, path: ((split, batch) for batch in batched(iter_records(path)))
            )
        )


# ---------------------------------------------------------------------------- writing shards
class TFRecordBatchSink(fileio.FileSink):
    """A ``fileio.WriteToFiles`` sink for ``(split, batch of serialized records)`` elements."""

    def open(self, fh):
        self._file = fh

    def write(self, split_and_batch):
        write_tfrecords(self._file, split_and_batch[1])

    def flush(self):
        self._file.flush()


def _split_shard_name(window, pane, shard_index, total_shards, compression, destination):
    return f"{destination}/{shard_name(shard_index, total_shards)}"


class WriteSplitShards(beam.PTransform):
    """Writes ``(split, batch)`` elements to ``<directory>/<split>/data-i-of-n.tfrecord`` with
    Beam's ``fileio.WriteToFiles`` (temporary files, moved into place inside the pipeline).

    ``num_shards`` 0 lets the runner decide (one file per bundle: no shuffle of the data, the
    fast path, and a split without records gets no file); N writes exactly N shards per split,
    empty ones too (Beam's round-robin over batches).
    Outputs the written files as ``fileio.FileResult``.
    """

    def __init__(self, directory: str, splits: Iterable[str], num_shards: int = 0):
        super().__init__()
        self.directory, self.splits, self.num_shards = directory, tuple(splits), num_shards
        # Beam leaves its (empty, or holding a failed attempt's files) temporary folder behind:
        # the caller deletes it once the pipeline has finished.
        self.temp_directory = storage.join(directory, ".incomplete")

    def expand(self, split_batches):
        for split in self.splits:  # local renames need the parent; object stores ignore this
            storage.makedirs(storage.join(self.directory, split))
        if self.num_shards:
            # N empty batches per split, emitted together, take N consecutive shard numbers of
            # Beam's round-robin: every shard is written, empty or not.
            markers = [(split, []) for split in self.splits for _ in range(self.num_shards)]
            empty = (split_batches.pipeline | "EmptyShards" >> beam.Create([None])
                     | "Markers" >> beam.FlatMap(lambda _: markers))
            split_batches = (split_batches, empty) | "WithEmptyShards" >> beam.Flatten()
        return (
            split_batches
            | "WriteFiles" >> fileio.WriteToFiles(
                self.directory,
                file_naming=_split_shard_name,
                destination=lambda split_and_batch: split_and_batch[0],
                temp_directory=StaticValueProvider(str, self.temp_directory),
                sink=lambda destination: TFRecordBatchSink(),
                shards=self.num_shards or None,
                # 0 writers per bundle sends every element to the fixed shards.
                max_writers_per_bundle=0 if self.num_shards else fileio.WriteToFiles.MAX_NUM_WRITERS_PER_BUNDLE,
            )
        )


# ------------------------------------------------------------------------------- the runner
LOCAL_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
# Beam 2.77's DaskRunner, read from its source (runners/dask/transform_evaluator.py) and tried:
DASK_UNSUPPORTED = (
    "--runner=DaskRunner cannot run ganpipe's Beam jobs on Beam 2.77: its ParDo collects a bundle's "
    "outputs before calling finish_bundle, so outputs emitted there are dropped (Beam's own "
    "fileio.WriteToFiles reports its written files that way, so no shard would be published); "
    "all outputs of a multi-output ParDo land in one bag (with_outputs tags are not kept apart); "
    "and PipelineResult.metrics() raises NotImplementedError. Use the default FnApiRunner "
    "(--direct_running_mode=multi_processing for worker processes) or a portable runner "
    "(--runner=PortableRunner with a Flink or Spark job service)."
)


def pipeline_options(beam_args) -> PipelineOptions:
    """Options from ``beam_args`` with the local runner named when none is given."""
    options = PipelineOptions(list(beam_args))
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return PipelineOptions([*beam_args, f"--runner={LOCAL_RUNNER}"])
    if "dask" in str(runner).lower():
        raise ComponentError(DASK_UNSUPPORTED)
    return options


def make_pipeline(beam_args) -> beam.Pipeline:
    return beam.Pipeline(options=pipeline_options(beam_args))


def run(pipeline: beam.Pipeline, name: str) -> None:
    """Runs ``pipeline`` to completion; a job that ends in any state but DONE is an error."""
    result = pipeline.run()
    state = result.wait_until_finish()
    if state != beam.runners.runner.PipelineState.DONE:
        raise ComponentError(f"{name}: the Beam job ended in state {state}")


# ------------------------------------------------------------------------------- tallies
def add_tallies(tallies: Iterable[collections.Counter]) -> collections.Counter:
    """Sums ``Counter``s: the combine behind every count the conservation checks use. Each is
    a count of elements in the data (what a step read, wrote, rejected), so a retried bundle is
    counted once, whatever metrics the runner does or does not report."""
    total = collections.Counter()
    for tally in tallies:
        total.update(tally)
    return total


class SumTallies(beam.PTransform):
    """``Counter`` elements -> one ``Counter`` (nothing when there are none)."""

    def expand(self, tallies):
        return tallies | "Sum" >> beam.CombineGlobally(add_tallies).without_defaults()


class Finalize(beam.PTransform):
    """Applied to a one-element PCollection (a summed tally): runs ``function(element,
    **side_inputs)`` once, on a worker, after every side input is complete. This is how a job
    writes its own summary files (metadata, schema, statistics) from combined values, instead
    of the driver gathering worker outputs after the job."""

    def __init__(self, function, **side_inputs):
        super().__init__()
        self.function, self.inputs = function, side_inputs

    def expand(self, single):
        return single | "Write" >> beam.Map(self.function, **self.inputs)


class WriteJsonLines(beam.PTransform):
    """Dicts -> one JSON-lines file at ``path`` (empty when there are none), through Beam's
    text sink: the elements stream to one writer, never gathered into a list."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, elements):
        return (
            elements
            | "ToJson" >> beam.Map(lambda element: json.dumps(element, sort_keys=True))
            | "Write" >> beam.io.WriteToText(self.path, num_shards=1, shard_name_template="")
        )
