"""``tfrecord:<glob>``: existing tf.Example TFRecord files; the image feature holds one encoded
image (bytes) or a vector (float/int list)."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from ganpipe.components.base import ComponentError
from ganpipe.components.beamio import Corrupt, batched, example_pb2, iter_records, stable_hash
from ganpipe.components.sources.common import CountRead, RawRecord, SourcePlan


def plan(pattern, params) -> SourcePlan:
    metadata = FileSystems.match([pattern])[0].metadata_list
    if not metadata:
        raise ComponentError(f"ingest.source tfrecord:{pattern}: no files match")
    paths = sorted(meta.path for meta in metadata)
    first = peek_example(paths)
    if first is None:
        raise ComponentError(f"ingest.source tfrecord:{pattern}: empty source, the files hold no records")
    feature = params["image_feature"]
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
    read = ReadTFExampleFiles(paths, feature, params["label_feature"])
    return SourcePlan(read, kind, None, params["label_names"], feature_names)


def peek_example(paths: list[str]) -> example_pb2.Example | None:
    for path in paths:
        for record in iter_records(path):
            if not isinstance(record, Corrupt):
                return example_pb2.Example.FromString(record)
    return None


def feature_kind(example: example_pb2.Example, name: str) -> str | None:
    """``bytes_list``, ``float_list``, ``int64_list`` or None when the feature is absent."""
    if name not in example.features.feature:
        return None
    return example.features.feature[name].WhichOneof("kind")


class _ParseExamples(beam.DoFn):
    def __init__(self, image_feature: str, label_feature: str | None):
        self.image_feature, self.label_feature = image_feature, label_feature

    def process(self, path_and_batch):
        path, batch = path_and_batch
        yield [self._record(path, record) for record in batch]

    def _record(self, path: str, serialized: bytes | Corrupt) -> RawRecord:
        if isinstance(serialized, Corrupt):
            return RawRecord(key=serialized.key, error=serialized.message)
        # Content-addressed key: stable across runs and readers, and duplicates share a split.
        key = f"{path}#{stable_hash(serialized):08x}"
        features = example_pb2.Example.FromString(serialized).features.feature
        label = _example_label(features, self.label_feature)
        if self.image_feature not in features:
            return RawRecord(key=key, label=label, error=f"no feature {self.image_feature!r}")
        value = features[self.image_feature]
        kind = value.WhichOneof("kind")
        if kind == "bytes_list" and len(value.bytes_list.value) == 1:
            shape_name = f"{self.image_feature}_shape"
            shape = tuple(features[shape_name].int64_list.value) if shape_name in features else None
            return RawRecord(key=key, image=value.bytes_list.value[0], image_shape=shape, label=label)
        if kind in ("float_list", "int64_list"):
            return RawRecord(key=key, features=list(getattr(value, kind).value), label=label)
        return RawRecord(key=key, label=label, error=f"feature {self.image_feature!r} is not one image or vector")


def _example_label(features, label_feature: str | None) -> str | int | None:
    if not label_feature or label_feature not in features:
        return None
    value = features[label_feature]
    if value.int64_list.value:
        label = int(value.int64_list.value[0])
        return None if label == -1 else label
    if value.bytes_list.value:
        return value.bytes_list.value[0].decode("utf-8", errors="replace")
    return None


class ReadTFExampleFiles(beam.PTransform):
    """Existing tf.Example TFRecord files; image (bytes) or vector (float/int list) feature."""

    def __init__(self, paths: list[str], image_feature: str, label_feature: str | None):
        super().__init__()
        self.paths = paths
        self.parse = _ParseExamples(image_feature, label_feature)

    def expand(self, pipeline):
        return (
            pipeline
            | "Files" >> beam.Create(self.paths)
            | "ReadBatches" >> beam.FlatMap(
                lambda path: ((path, batch) for batch in batched(iter_records(path)))
            )
            | "Redistribute" >> beam.Reshuffle()
            | "ParseExamples" >> beam.ParDo(self.parse)
            | "CountRead" >> beam.ParDo(CountRead())
        )

