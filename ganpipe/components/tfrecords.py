"""TFRecord files with batched framing: reading with every CRC checked, and a Beam file sink.

The framing is TFRecord's own (length, masked CRC-32C of the length, data, masked CRC-32C of
the data), so TensorFlow's ``TFRecordDataset`` reads these files and we read TensorFlow's. The
CRC is google-crc32c's hardware CRC (what Beam itself prefers): checking every record's data
costs ~0.3 us per 3 KB record, so it is never skipped.

Elements move in *batches* (lists of records): on the in-process runner each element costs
tens of microseconds of bookkeeping, more than the work on one small record.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Iterable, Iterator

import apache_beam as beam
import google_crc32c
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.value_provider import StaticValueProvider

from ganpipe.components import storage

BATCH_SIZE = 256
SHARD_PATTERN = "*.tfrecord"


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc(length)), data, struct.pack("<I", masked_crc(data))))


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


def iter_records(path: str) -> Iterator[bytes | Corrupt]:
    """The records of a TFRecord file, each data CRC checked: a record whose data CRC fails is
    yielded as ``Corrupt`` and reading goes on; a broken length (bad length CRC, cut-off file)
    ends the file with one ``Corrupt``, since the next record's start is unknown."""
    with FileSystems.open(path) as stream:
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


def batched(items: Iterable, size: int = BATCH_SIZE) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def shard_pattern(directory: str) -> str:
    return storage.join(directory, SHARD_PATTERN)


def shard_name(index: int, total: int) -> str:
    return f"data-{index:05d}-of-{total:05d}.tfrecord"


# ------------------------------------------------------------------------------------ reading
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


# ------------------------------------------------------------------------------------ writing
class TFRecordBatchSink(fileio.FileSink):
    """A ``fileio.WriteToFiles`` sink for ``(split, batch of serialized records)`` elements."""

    def open(self, fh):
        self._file = fh

    def write(self, split_and_batch):
        self._file.write(b"".join(frame(record) for record in split_and_batch[1]))

    def flush(self):
        self._file.flush()


def _split_shard_name(window, pane, shard_index, total_shards, compression, destination):
    return f"{destination}/{shard_name(shard_index, total_shards)}"


class WriteSplitShards(beam.PTransform):
    """Writes ``(split, batch)`` elements to ``<directory>/<split>/data-i-of-n.tfrecord`` with
    Beam's ``fileio.WriteToFiles`` (temporary files, moved into place inside the pipeline).

    ``num_shards`` 0 lets the runner decide (one file per bundle: no shuffle of the data, the
    fast path); N groups the records into at most N shards per split. ``splits``: every split
    gets at least one shard (an empty one when no record went there), so readers can tell an
    empty split from a missing one.
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
        present = (
            split_batches
            | "Splits" >> beam.Map(lambda split_and_batch: split_and_batch[0])
            | "DistinctSplits" >> beam.Distinct()
        )
        empty = split_batches.pipeline | "EmptySplits" >> beam.Create([None]) | "EmptyShard" >> beam.FlatMap(
            lambda _, present, splits: [(split, []) for split in splits if split not in present],
            present=beam.pvalue.AsList(present), splits=self.splits,
        )
        return (
            (split_batches, empty)
            | "WithEmptySplits" >> beam.Flatten()
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
