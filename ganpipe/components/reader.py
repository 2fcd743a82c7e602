"""The reading side: a ``tf.data`` pipeline for the trainer over Preprocess's shards.

Images come out float32 in [-1, 1] (the generator's tanh range); vectors standardised with the
schema's normalization. Records stay uint8 through cache and shuffle (4x less memory than
float32) and are scaled a whole batch at a time.
"""
from __future__ import annotations

import json
import math
import os

import tensorflow as tf

from ganpipe.infra import storage

SCHEMA_FILE = "schema.json"
CACHE_LIMIT_BYTES = 2 * 2**30  # cache decoded records in memory up to this size
SHUFFLE_BUFFER = 10_000
MAX_PARALLEL_FILES = 8


def load_schema(uri: str) -> dict:
    """The schema dict from ``uri``: a ``schema.json`` file or a directory holding one."""
    path = uri if uri.endswith(".json") else storage.join(uri, SCHEMA_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no schema at {path}")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def make_dataset(
    examples_uri: str,
    schema: dict | str,
    split: str = "train",
    batch_size: int = 64,
    shuffle: bool = True,
    seed: int | None = None,
    repeat: bool = False,
    with_labels: bool = False,
    with_lowres: bool = False,
    drop_remainder: bool = True,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batches of ``x``, ``(x, labels)`` (with_labels, int32) or ``(lowres, highres)``
    (with_lowres) from ``<examples_uri>/<split>/*.tfrecord``; ``schema`` is a dict or its path."""
    if isinstance(schema, (str, os.PathLike)):
        schema = load_schema(os.fspath(schema))
    if with_labels and with_lowres:
        raise ValueError("make_dataset: with_labels and with_lowres cannot be combined")
    if with_lowres and not schema.get("lowres_shape"):
        raise ValueError("make_dataset: with_lowres needs a schema with lowres_shape (preprocess.lowres_factor)")
    files = sorted(tf.io.gfile.glob(storage.join(examples_uri, split, "*.tfrecord")))
    if not files:
        raise FileNotFoundError(f"no *.tfrecord shards in {storage.join(examples_uri, split)}")

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), MAX_PARALLEL_FILES),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.map(_parser(schema, with_lowres), num_parallel_calls=tf.data.AUTOTUNE)
    count = schema["counts"].get(split, 0)
    if cache and count * _record_bytes(schema, with_lowres) <= CACHE_LIMIT_BYTES:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(max(1, min(count, SHUFFLE_BUFFER)), seed=seed)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(_scaler(schema, with_labels, with_lowres), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _record_bytes(schema: dict, with_lowres: bool) -> int:
    size = math.prod(schema["shape"]) * (1 if schema["kind"] == "image" else 4)
    return size + (math.prod(schema["lowres_shape"]) if with_lowres else 0)


def _parser(schema: dict, with_lowres: bool):
    spec = {"label": tf.io.FixedLenFeature([], tf.int64, default_value=-1)}
    if schema["kind"] == "vector":
        spec["features"] = tf.io.FixedLenFeature(schema["shape"], tf.float32)
    else:
        spec["image"] = tf.io.FixedLenFeature([], tf.string)
        if with_lowres:
            spec["image_lowres"] = tf.io.FixedLenFeature([], tf.string)

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        record = {"label": tf.cast(example["label"], tf.int32)}
        if schema["kind"] == "vector":
            record["x"] = example["features"]
            return record
        record["x"] = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), schema["shape"])
        if with_lowres:
            record["lowres"] = tf.reshape(tf.io.decode_raw(example["image_lowres"], tf.uint8), schema["lowres_shape"])
        return record

    return parse


def _scaler(schema: dict, with_labels: bool, with_lowres: bool):
    if schema["kind"] == "vector":
        mean = tf.constant(schema["normalization"]["mean"], tf.float32)
        std = tf.constant(schema["normalization"]["std"], tf.float32)
        scale = lambda x: (x - mean) / std  # noqa: E731
    else:
        scale = lambda x: tf.cast(x, tf.float32) / 127.5 - 1.0  # noqa: E731

    def to_model_inputs(batch):
        if with_lowres:
            return scale(batch["lowres"]), scale(batch["x"])
        if with_labels:
            return scale(batch["x"]), batch["label"]
        return scale(batch["x"])

    return to_model_inputs
