"""Generic Beam I/O for Ingest and Preprocess: batching, TFRecord framing, shard writers and
readers, tf.Example serialisation, small JSON-lines outputs and running a pipeline.

Every transform here moves *batches* (Python lists) rather than single records: on the
DirectRunner each element costs tens of microseconds of bookkeeping, more than building a
tf.Example, so per-record elements would make the pipeline 2-3x slower than a plain loop.
"""
from __future__ import annotations

import json
import os
import struct
import uuid
from typing import Iterable, Iterator

import apache_beam as beam
import crcmod.predefined
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

# Imported once here, never inside a DoFn: importing TensorFlow takes ~10 s.
from tensorflow.core.example import example_pb2

from ganpipe.components.base import ComponentError

BATCH_SIZE = 256
METRICS_NAMESPACE = "ganpipe"


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


# ------------------------------------------------------------------------- TFRecord framing
_crc32c = crcmod.predefined.mkPredefinedCrcFun("crc-32c")


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_tfrecords(stream, records: Iterable[bytes]) -> int:
    """Writes records in TFRecord framing (length, masked CRC32C of length, data, CRC)."""
    count = 0
    for data in records:
        length = struct.pack("<Q", len(data))
        stream.write(length + struct.pack("<I", _masked_crc(length)))
        stream.write(data + struct.pack("<I", _masked_crc(data)))
        count += 1
    return count


def iter_tfrecords(path: str, verify_data: bool = True) -> Iterator[bytes]:
    """Records of a TFRecord file (``.gz`` and other extensions decompress by name).

    The length CRC is always checked (it guards the framing and costs little); the data CRC
    (~7 us per 3 KB record with crcmod) can be skipped with ``verify_data=False``.
    """
    with FileSystems.open(path) as stream:
        while header := stream.read(12):
            if len(header) < 12:
                raise ComponentError(f"{path}: truncated TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]):
                raise ComponentError(f"{path}: not a TFRecord file, or corrupted (bad length CRC)")
            body = stream.read(length + 4)
            if len(body) < length + 4:
                raise ComponentError(f"{path}: truncated TFRecord (record of {length} bytes cut off)")
            if verify_data and struct.unpack("<I", body[length:])[0] != _masked_crc(body[:length]):
                raise ComponentError(f"{path}: corrupted TFRecord (bad data CRC)")
            yield body[:length]


def count_tfrecords(paths: Iterable[str]) -> int:
    return sum(1 for path in paths for _ in iter_tfrecords(path, verify_data=False))


def match_files(pattern: str) -> list[str]:
    return sorted(meta.path for meta in FileSystems.match([pattern])[0].metadata_list)


def shard_paths(directory: str) -> list[str]:
    return match_files(os.path.join(directory, "*.tfrecord"))


def _shard_name(index: int, total: int) -> str:
    return f"data-{index:05d}-of-{total:05d}.tfrecord"


class _WriteShard(beam.DoFn):
    """Writes one whole shard (after a GroupByKey) to a temporary name, then renames it, so a
    retried bundle never leaves a half shard behind."""

    def __init__(self, directories: dict[str, str], num_shards: dict[str, int]):
        self.directories, self.num_shards = directories, num_shards

    def process(self, shard_and_batches):
        (split, shard), batches = shard_and_batches
        directory = self.directories[split]
        final = os.path.join(directory, _shard_name(shard, self.num_shards[split]))
        temporary = os.path.join(directory, f".{uuid.uuid4().hex}.incomplete")
        with FileSystems.create(temporary) as stream:
            write_tfrecords(stream, (record for batch in batches for record in batch))
        FileSystems.rename([temporary], [final])
        yield split, final


class _WriteBundleFiles(beam.DoFn):
    """Writes all batches of a bundle to one temporary file per split (Beam's runner-chosen
    sharding): no shuffle of the data, which costs more than the work itself on the
    DirectRunner. Only committed bundles emit their (split, path), so files of failed attempts
    are never published."""

    def __init__(self, temporary_dirs: dict[str, str]):
        self.temporary_dirs = temporary_dirs

    def start_bundle(self):
        self.files = {}  # split -> (path, stream)

    def process(self, split_and_batch):
        split, batch = split_and_batch
        if split not in self.files:
            path = os.path.join(self.temporary_dirs[split], uuid.uuid4().hex)
            self.files[split] = (path, FileSystems.create(path))
        write_tfrecords(self.files[split][1], batch)

    def finish_bundle(self):
        for split, (path, stream) in self.files.items():
            stream.close()
            yield WindowedValue((split, path), MIN_TIMESTAMP, [GlobalWindow()])


class WriteTFRecordShards(beam.PTransform):
    """Writes ``(split, batch of serialized records)`` elements as TFRecord files in
    ``directories[split]``: exactly ``num_shards[split]`` files ``data-i-of-n.tfrecord`` (at
    least one, empty ones too), or when no count is given one file per bundle as the runner
    chose (the fast path: no data shuffle). One writer serves every split.

    Outputs the committed files as ``(split, path)``. Bundle files get their final names from
    ``publish(committed)`` once the pipeline has finished, in the driver: gathering the paths
    inside the pipeline would add a global combine (nine transforms, each with a fixed cost on
    the DirectRunner), and the caller already gathers its small outputs once.
    """

    def __init__(self, directories: dict[str, str], num_shards: dict[str, int] | None = None):
        super().__init__()
        self.directories = directories
        fixed = num_shards and any(num_shards.values())
        self.num_shards = {split: max(1, num_shards.get(split, 0)) for split in directories} if fixed else None
        self.temporary_dirs = {
            split: os.path.join(directory, f".incomplete-{uuid.uuid4().hex}")
            for split, directory in directories.items()
        }

    def expand(self, split_batches):
        if self.num_shards is None:
            return split_batches | "WriteBundleFiles" >> beam.ParDo(_WriteBundleFiles(self.temporary_dirs))
        num_shards = self.num_shards
        keyed = split_batches | "AssignShard" >> beam.MapTuple(
            lambda split, batch: ((split, stable_hash(batch[0]) % num_shards[split]), batch)
        )
        every_shard = split_batches.pipeline | "EveryShard" >> beam.Create(
            [((split, i), []) for split, n in num_shards.items() for i in range(n)]
        )
        return (
            (keyed, every_shard)
            | "Merge" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self.directories, num_shards))
        )

    def publish(self, committed: Iterable[tuple[str, str]]) -> None:
        """Renames the committed bundle files (the transform's output, gathered) to
        ``data-i-of-n`` (one empty shard for a split without any) and drops files of failed
        bundle attempts. Fixed shard counts were written under their final names already."""
        if self.num_shards is not None:
            return
        committed = list(committed)
        for split, directory in self.directories.items():
            paths = sorted(path for path_split, path in committed if path_split == split)
            if paths:
                names = [os.path.join(directory, _shard_name(i, len(paths))) for i in range(len(paths))]
                FileSystems.rename(paths, names)
            else:
                FileSystems.create(os.path.join(directory, _shard_name(0, 1))).close()
            if FileSystems.exists(self.temporary_dirs[split]):
                FileSystems.delete([self.temporary_dirs[split]])


def stable_hash(data: bytes) -> int:
    return _crc32c(data)


class ReadTFRecordShards(beam.PTransform):
    """``(split, batch of serialized records)`` from the files matching ``patterns[split]``,
    one reader per file. ``verify_data=False`` skips the data CRCs (see ``iter_tfrecords``).

    Files are matched when the pipeline is built and ``Create`` spreads them over the workers.
    """

    def __init__(self, patterns: dict[str, str], verify_data: bool = True):
        super().__init__()
        self.patterns, self.verify_data = patterns, verify_data

    def expand(self, pipeline):
        files = [(split, path) for split, pattern in self.patterns.items() for path in match_files(pattern)]
        verify_data = self.verify_data
        return (
            pipeline
            | "MatchFiles" >> beam.Create(files)
            | "ReadBatches" >> beam.FlatMapTuple(
                lambda split, path: ((split, batch) for batch in batched(iter_tfrecords(path, verify_data)))
            )
        )

# ------------------------------------------------------------------- tf.Example TFRecord files
def serialize_example(
    *, bytes_features=(), int_features=(), float_features=()
) -> bytes:
    """A serialized tf.train.Example from (name, values) pairs; None values are left out."""
    example = example_pb2.Example()
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
    return example.SerializeToString()



# ------------------------------------------------------------------------- running pipelines
def run_pipeline(pipeline: beam.Pipeline):
    """Runs ``pipeline`` to completion and returns its result (for metrics)."""
    result = pipeline.run()
    result.wait_until_finish()
    return result


def counter_value(result, name: str) -> int | None:
    """A Beam metrics counter of this package, or None when the runner reports no metrics."""
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))
    values = [c.committed if c.committed is not None else c.attempted for c in query["counters"]]
    return sum(values) if values else None


def write_json_lines(values: list, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write("".join(json.dumps(value, sort_keys=True) + "\n" for value in values).encode("utf-8"))


class WriteJsonLines(beam.PTransform):
    """Writes JSON-able elements to one file, one document a line, gathered on one worker: for
    small outputs (summaries, rejection listings); much lighter than ``WriteToText``."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, elements):
        return (
            elements
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.Map(write_json_lines, self.path)
        )


def read_json_lines(path: str) -> list:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]


class WriteTaggedJsonLines(beam.PTransform):
    """Writes a dict of small PCollections to one JSON-lines file as ``[tag, element]`` lines:
    one gather for all of a pipeline's small outputs (each gather is a global combine of nine
    transforms with a fixed cost). Read it back with ``read_tagged_json_lines``."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, pcollections: dict):
        tagged = [
            pcollection | f"Tag{tag.title()}" >> beam.Map(lambda element, tag=tag: [tag, element])
            for tag, pcollection in pcollections.items()
        ]
        return tagged | "Merge" >> beam.Flatten() | "Write" >> WriteJsonLines(self.path)


def read_tagged_json_lines(path: str, tags: Iterable[str]) -> dict[str, list]:
    """{tag: elements} from a ``WriteTaggedJsonLines`` file; every tag in ``tags`` is present."""
    elements = {tag: [] for tag in tags}
    for tag, element in read_json_lines(path):
        elements[tag].append(element)
    return elements
