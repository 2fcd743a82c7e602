"""Preprocess's schema and statistics as TensorFlow Metadata protos, readable without ganpipe.

``schema.pbtxt`` is a TFMD ``Schema`` (text format) and ``statistics.pb`` a binary
``DatasetFeatureStatisticsList`` with one dataset per split, the files TFDV
(``tfdv.load_schema_text``, ``tfdv.load_stats_binary``) and Facets read. Images are described per
channel (``image/<channel>``: pixel mean, std, min, max and a 16-bucket histogram of the 0..255
values) plus what the original images were (``source/width``, ``source/height``,
``source/aspect_ratio`` histogram, ``source/format``, ``source/mode``, and the ``upscaled`` count
as a custom statistic of ``source/width``); vectors per column (mean, std, min, max); labels as
a categorical feature whose rank histogram holds the count of every label name.
"""
from __future__ import annotations

import numpy as np
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

SCHEMA_PROTO_FILE = "schema.pbtxt"
STATISTICS_PROTO_FILE = "statistics.pb"
PIXEL_BUCKETS = 16


def schema_proto(schema: dict) -> schema_pb2.Schema:
    """The processed examples' features: key, label and image(s) or the feature vector."""
    proto = schema_pb2.Schema()
    _feature(proto, "key", schema_pb2.BYTES, 1)
    label = _feature(proto, "label", schema_pb2.INT, 1)
    label.int_domain.min, label.int_domain.max = -1, max(schema["num_classes"] - 1, -1)
    label.int_domain.is_categorical = True
    if schema["kind"] == "vector":
        _feature(proto, "features", schema_pb2.FLOAT, schema["shape"][0])
        return proto
    _feature(proto, "image", schema_pb2.BYTES, 1).annotation.tag.append(_pixels_tag(schema["shape"]))
    if schema.get("lowres_shape"):
        lowres = _feature(proto, "image_lowres", schema_pb2.BYTES, 1)
        lowres.annotation.tag.append(_pixels_tag(schema["lowres_shape"]))
    return proto


def _feature(proto, name: str, feature_type, values: int):
    feature = proto.feature.add(name=name, type=feature_type)
    feature.presence.min_fraction = 1.0
    feature.shape.dim.add(size=values)
    return feature


def _pixels_tag(shape: list[int]) -> str:
    return "raw uint8 pixels, row-major [" + ", ".join(map(str, shape)) + "]"


def statistics_proto(statistics: dict) -> statistics_pb2.DatasetFeatureStatisticsList:
    """One ``DatasetFeatureStatistics`` per split from Preprocess's statistics document."""
    proto = statistics_pb2.DatasetFeatureStatisticsList()
    prefix = "image/" if statistics["kind"] == "image" else ""
    for split, stats in statistics["splits"].items():
        dataset = proto.datasets.add(name=split, num_examples=stats["count"])
        _label_statistics(dataset, stats, statistics["label_names"])
        if not stats["count"]:
            continue
        for column, name in enumerate(statistics["names"]):
            feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.FLOAT)
            feature.path.step.append(prefix + name)
            numbers = feature.num_stats
            numbers.common_stats.num_non_missing = stats["count"]
            numbers.common_stats.min_num_values = numbers.common_stats.max_num_values = 1
            numbers.mean, numbers.std_dev = stats["mean"][column], stats["std"][column]
            numbers.min, numbers.max = stats["min"][column], stats["max"][column]
            if stats.get("histogram"):
                _pixel_histogram(numbers.histograms.add(), stats["histogram"][column])
        if stats.get("source_images"):
            _source_image_statistics(dataset, stats["source_images"], stats["count"])
    return proto


def _source_image_statistics(dataset, facts: dict, count: int) -> None:
    """The originals before Preprocess: sizes, aspect ratios, formats, modes, how many up-scaled."""
    for name in ("width", "height"):
        numbers = _numeric_feature(dataset, f"source/{name}", count)
        numbers.min, numbers.max, numbers.mean = facts[name]["min"], facts[name]["max"], facts[name]["mean"]
        if name == "width":  # one place for the count of images enlarged to image_size
            dataset.features[-1].custom_stats.add(name="upscaled", num=facts["upscaled"])
    ratio = _numeric_feature(dataset, "source/aspect_ratio", count).histograms.add()
    ratio.type = statistics_pb2.Histogram.STANDARD
    for bucket in facts["aspect_ratio"]:
        high = bucket["high"] if bucket["high"] is not None else float("inf")
        ratio.buckets.add(low_value=bucket["low"], high_value=high, sample_count=bucket["count"])
    for name in ("formats", "modes"):
        feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
        feature.path.step.append(f"source/{name[:-1]}")
        strings = feature.string_stats
        strings.common_stats.num_non_missing = count
        strings.unique = len(facts[name])
        for value, frequency in sorted(facts[name].items(), key=lambda item: -item[1]):
            strings.top_values.add(value=value, frequency=frequency)


def _numeric_feature(dataset, path: str, count: int):
    feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.INT)
    feature.path.step.append(path)
    feature.num_stats.common_stats.num_non_missing = count
    return feature.num_stats


def _label_statistics(dataset, stats: dict, label_names: list[str]) -> None:
    feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.INT)
    feature.path.step.append("label")
    strings = feature.string_stats
    strings.common_stats.num_non_missing = stats["count"] - stats["unlabelled"]
    strings.common_stats.num_missing = stats["unlabelled"]
    strings.unique = sum(1 for count in stats["label_counts"] if count)
    for rank, (name, count) in enumerate(zip(label_names, stats["label_counts"])):
        strings.rank_histogram.buckets.add(low_rank=rank, high_rank=rank, label=name, sample_count=count)
    for name, count in sorted(zip(label_names, stats["label_counts"]), key=lambda item: -item[1]):
        if count:
            strings.top_values.add(value=name, frequency=count)


def _pixel_histogram(histogram, counts: list[int]) -> None:
    histogram.type = statistics_pb2.Histogram.STANDARD
    width = 256 // PIXEL_BUCKETS
    for start, count in zip(range(0, 256, width), np.asarray(counts).reshape(PIXEL_BUCKETS, width).sum(axis=1)):
        histogram.buckets.add(low_value=start, high_value=start + width - 1, sample_count=float(count))


def schema_text(schema: dict) -> bytes:
    return text_format.MessageToString(schema_proto(schema)).encode("utf-8")


def statistics_bytes(statistics: dict) -> bytes:
    return statistics_proto(statistics).SerializeToString(deterministic=True)
