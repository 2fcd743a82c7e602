"""``tfrecord:<glob>``: existing tf.Example TFRecord files; the image feature holds one encoded
image (bytes) or a vector (float/int list), the label feature a name or a whole number.

The pattern is listed on the workers by the source's listing (``infra.listing``: Beam's pattern
rule, links followed; the one the cache key fingerprints; the job graph holds the pattern, not the
file list) and files are spread with a Reshuffle, so parallelism does not follow the upstream shard count.
Every record's CRCs are checked: a corrupt record, a record that is not a tf.Example and a
record without a usable image or vector are rejected records naming file and record index; a
dangling link or an unreadable entry the listing found is a rejected record naming the path.
"""
from __future__ import annotations

import posixpath
import re

import apache_beam as beam
from apache_beam.io.filesystems import CompressionTypes, FileSystems
from google.protobuf.message import DecodeError

from ganpipe.components import sources
from ganpipe.components.base import ComponentError
from ganpipe.infra.beamio import Corrupt, batched, iter_records
from ganpipe.infra.example_proto import Example
from ganpipe.infra.listing import Entry
from ganpipe.components.sources.common import CountRead, RawRecord, Rejected, SourcePlan, relative_name

COMPRESSIONS = {"auto": CompressionTypes.AUTO, "none": CompressionTypes.UNCOMPRESSED, "gzip": CompressionTypes.GZIP}
GZIP_MAGIC = b"\x1f\x8b"
_PEEK_RECORDS = 100  # records tried at planning for the first tf.Example


def plan(pattern, params) -> SourcePlan:
    paths = [entry.path for entry in sources.KINDS["tfrecord"].listing(pattern).files]
    if not paths:
        raise ComponentError(f"ingest.source tfrecord:{pattern}: no files match")
    compression = COMPRESSIONS[params["compression"]]
    check_compression(paths[0], compression)
    first = peek_example(paths, compression)
    if first is None:
        raise ComponentError(f"ingest.source tfrecord:{pattern}: empty source, the files hold no records")
    feature, label_feature = params["image_feature"], params["label_feature"]
    value_kind = feature_kind(first, feature)
    if value_kind is None:
        raise ComponentError(
            f"ingest.image_feature: the first record of {paths[0]} has no feature {feature!r}; "
            f"it has {', '.join(sorted(first.features.feature))}"
        )
    kind = "image" if value_kind == "bytes_list" else "vector"
    feature_names = None
    if kind == "vector":
        width = len(getattr(first.features.feature[feature], value_kind).value)
        feature_names = [f"{feature}[{i}]" for i in range(width)]
    read = ReadTFExampleFiles(pattern, compression, _ParseExamples(feature, label_feature))
    return SourcePlan(read, kind, None, params["label_names"], feature_names)


def _resolved(path: str, compression: str) -> str:
    if compression == CompressionTypes.AUTO:
        return CompressionTypes.detect_compression_type(path)
    return compression


def check_compression(path: str, compression: str) -> None:
    """A GZIP file read as uncompressed (or the other way round) fails here, naming the fix."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        is_gzip = f.read(2) == GZIP_MAGIC
    resolved = _resolved(path, compression)
    if is_gzip and resolved == CompressionTypes.UNCOMPRESSED:
        raise ComponentError(
            f"ingest.source: {path} is GZIP-compressed but is read as uncompressed; set ingest.compression: gzip"
        )
    if not is_gzip and resolved == CompressionTypes.GZIP:
        raise ComponentError(f"ingest.source: {path} is not GZIP-compressed; set ingest.compression: none")


def peek_example(paths: list[str], compression: str) -> Example | None:
    """The first record that parses as a tf.Example (within the first few records)."""
    for path in paths:
        for index, record in enumerate(iter_records(path, _resolved(path, compression))):
            if index == _PEEK_RECORDS:
                break
            if not isinstance(record, Corrupt):
                try:
                    return Example.FromString(record)
                except DecodeError:
                    continue
    return None


def feature_kind(example: Example, name: str) -> str | None:
    """``bytes_list``, ``float_list``, ``int64_list`` or None when the feature is absent."""
    if name not in example.features.feature:
        return None
    return example.features.feature[name].WhichOneof("kind")


def pattern_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: records are named relative to it."""
    prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return prefix if prefix.endswith("/") else posixpath.dirname(prefix)


class _ParseExamples(beam.DoFn):
    def __init__(self, image_feature: str, label_feature: str | None):
        self.image_feature, self.label_feature = image_feature, label_feature

    def process(self, file_and_batch, root: str):
        path, start, batch = file_and_batch
        name = relative_name(path, root)
        yield [self._record(path, name, start + i, serialized) for i, serialized in enumerate(batch)]

    def _record(self, path: str, name: str, index: int, serialized: bytes | Corrupt | Entry) -> RawRecord:
        record = RawRecord(key=f"{path}#{index}", name=f"{name}#{index}", path=path, index=index)
        try:
            if isinstance(serialized, Entry):  # what the listing could not use
                raise Rejected("unreadable", serialized.problem)
            if isinstance(serialized, Corrupt):
                raise Rejected("corrupt", serialized.message)
            self._parse(record, serialized)
        except Rejected as rejected:
            record.reject(rejected)
        return record

    def _parse(self, record: RawRecord, serialized: bytes) -> None:
        where = f"record {record.index} of {record.path}"
        try:
            features = Example.FromString(serialized).features.feature
        except DecodeError as e:
            raise Rejected("bad_record", f"{where} is not a tf.train.Example ({e})") from None
        record.label = self._label(features, where)
        if self.image_feature not in features:
            raise Rejected("bad_record", f"{where} has no feature {self.image_feature!r}")
        value = features[self.image_feature]
        kind = value.WhichOneof("kind")
        if kind == "bytes_list" and len(value.bytes_list.value) == 1:
            shape_name = f"{self.image_feature}_shape"
            record.image = value.bytes_list.value[0]
            record.image_shape = tuple(features[shape_name].int64_list.value) if shape_name in features else None
        elif kind in ("float_list", "int64_list"):
            record.features = list(getattr(value, kind).value)
        else:
            raise Rejected("bad_shape", f"{where}: feature {self.image_feature!r} is not one image or a vector")

    def _label(self, features, where: str):
        """The raw label value (the label rule canonicalises it); a list of several is refused."""
        if not self.label_feature or self.label_feature not in features:
            return None
        value = features[self.label_feature]
        kind = value.WhichOneof("kind")
        values = getattr(value, kind).value if kind else []
        if len(values) > 1:
            raise Rejected("bad_label", f"{where}: label feature {self.label_feature!r} holds {len(values)} values")
        return values[0] if values else None


def _list_entries(pattern: str):
    return sources.KINDS["tfrecord"].listing(pattern).entries()


def _read_file(entry, compression: str):
    """(path, index of the first record, batch) for a listed file's records; one rejected record
    for an entry the listing could not use."""
    path = entry.path
    if entry.problem:
        yield path, 0, [entry]
        return
    start = 0
    for batch in batched(iter_records(path, _resolved(path, compression))):
        if start == 0 and isinstance(batch[0], Corrupt) and batch[0].index == 0:
            batch[0] = _with_compression_hint(batch[0])
        yield path, start, batch
        start += len(batch)


def _with_compression_hint(corrupt: Corrupt) -> Corrupt:
    with FileSystems.open(corrupt.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        if f.read(2) != GZIP_MAGIC:
            return corrupt
    return Corrupt(corrupt.path, corrupt.index, f"{corrupt.problem}; the file is GZIP-compressed: set ingest.compression: gzip")


class ReadTFExampleFiles(beam.PTransform):
    def __init__(self, pattern: str, compression: str, parse: _ParseExamples):
        super().__init__()
        self.pattern, self.compression, self.parse = pattern, compression, parse

    def expand(self, pipeline):
        root = pattern_root(self.pattern)
        return (
            pipeline
            | "Pattern" >> beam.Create([self.pattern])
            | "ListFiles" >> beam.FlatMap(_list_entries)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadBatches" >> beam.FlatMap(_read_file, self.compression)
            | "Redistribute" >> beam.Reshuffle()
            | "ParseExamples" >> beam.ParDo(self.parse, root)
            | "CountRead" >> beam.ParDo(CountRead())
        )
