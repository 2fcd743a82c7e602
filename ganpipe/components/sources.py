"""Beam building blocks shared by Ingest and Preprocess: data sources and batched TFRecord I/O.

Every transform here moves *batches* (Python lists) rather than single records: on the
DirectRunner each element costs tens of microseconds of bookkeeping, more than building a
tf.Example, so per-record elements would make the pipeline 2-3x slower than a plain loop.

A source is a PTransform from a pipeline to a PCollection of ``list[RawRecord]``. A record that
cannot be read is not dropped: it carries an ``error`` and Preprocess lists it as rejected.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import struct
import uuid
from typing import Iterable, Iterator

import apache_beam as beam
import crcmod.predefined
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

# Imported once here, never inside a DoFn: importing TensorFlow takes ~10 s.
from tensorflow.core.example import example_pb2

from ganpipe.components.base import ComponentError

BATCH_SIZE = 256
METRICS_NAMESPACE = "ganpipe"
SOURCE_KINDS = ("digits", "photos", "images", "tfds", "tfrecord", "npz", "csv")
_BUILT_IN_KINDS = ("digits", "photos")  # take no argument


@dataclasses.dataclass(slots=True)
class RawRecord:
    """One sample as read from a source, before validation.

    ``image`` holds an encoded file (PNG, JPEG...) or, when ``image_shape`` is set, raw uint8
    pixels; ``features`` holds a vector. ``label`` is a label name or an integer index.
    ``split`` is set only by sources with a natural split (photos: held-out regions); otherwise
    the hash of ``key`` decides.
    """

    key: str
    image: bytes | None = None
    image_shape: tuple[int, ...] | None = None
    features: list[float] | None = None
    label: str | int | None = None
    error: str | None = None
    split: str | None = None


def parse_source(source: str) -> tuple[str, str]:
    """Splits ``kind:argument`` (``digits`` has no argument); unknown kinds fail at once."""
    kind, _, argument = source.partition(":")
    if kind not in SOURCE_KINDS:
        raise ComponentError(
            f"ingest.source: unknown source kind {kind!r} in {source!r}; "
            f"use one of digits, photos, images:<dir>, tfds:<name>, tfrecord:<glob>, npz:<file>, csv:<file>"
        )
    if kind in _BUILT_IN_KINDS and argument:
        raise ComponentError(f"ingest.source: {kind!r} takes no argument, got {source!r}")
    if kind not in _BUILT_IN_KINDS and not argument:
        raise ComponentError(f"ingest.source: {kind!r} needs a path or name: {kind}:<...>")
    return kind, argument


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


class _CountRead(beam.DoFn):
    """Counts records as they leave a source, for the read = written + rejected check."""

    def __init__(self):
        self.read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, batch):
        self.read.inc(len(batch))
        yield batch


# ------------------------------------------------------------------------------------ digits
def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, values 0..16 scaled to 0..255 uint8, shape [N, 8, 8, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


class _DigitsChunk(beam.DoFn):
    def setup(self):
        self.images, self.labels = load_digits_uint8()

    def process(self, bounds):
        start, stop = bounds
        yield [
            RawRecord(
                key=f"digits/{i:04d}",
                image=self.images[i].tobytes(),
                image_shape=self.images[i].shape,
                label=str(self.labels[i]),
            )
            for i in range(start, stop)
        ]


class ReadDigits(beam.PTransform):
    """scikit-learn's bundled handwritten digits (offline)."""

    COUNT = 1797
    LABEL_NAMES = [str(i) for i in range(10)]

    def expand(self, pipeline):
        return (
            pipeline
            | "Chunks" >> beam.Create(chunks(self.COUNT))
            | "LoadDigits" >> beam.ParDo(_DigitsChunk())
            | "CountRead" >> beam.ParDo(_CountRead())
        )


# ------------------------------------------------------------------------------------ photos
def load_sample_photos() -> list[tuple[str, np.ndarray]]:
    """scikit-learn's two bundled colour photographs, (name, uint8 [427, 640, 3]) sorted by name."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    names = (os.path.splitext(os.path.basename(path))[0] for path in photos.filenames)
    return sorted(zip(names, photos.images), key=lambda item: item[0])


@dataclasses.dataclass(frozen=True)
class Patch:
    """A ``size`` x ``size`` square of photo number ``photo`` with its top-left corner at
    (``top``, ``left``)."""

    photo: int
    top: int
    left: int
    size: int
    split: str


def eval_boundary(width: int, patch_size: int, eval_fraction: float) -> int:
    """The first column of the held-out eval strip on the right of a photo (``width``: none).

    The strip is ``eval_fraction`` of the width but at least one patch wide, so a small
    fraction still yields eval patches.
    """
    if eval_fraction <= 0:
        return width
    return width - max(patch_size, round(eval_fraction * width))


def photo_patches(shapes: list[tuple[int, ...]], patch_size: int, stride: int, eval_fraction: float) -> list[Patch]:
    """Patches on a ``stride`` grid, laid separately over each photo's train region (left) and
    eval strip (right): no eval patch shares a pixel with a train patch."""
    patches = []
    for photo, (height, width) in enumerate(shape[:2] for shape in shapes):
        boundary = eval_boundary(width, patch_size, eval_fraction)
        for split, start, stop in (("train", 0, boundary), ("eval", boundary, width)):
            patches += [
                Patch(photo, top, left, patch_size, split)
                for top in range(0, height - patch_size + 1, stride)
                for left in range(start, stop - patch_size + 1, stride)
            ]
    return patches


class _PhotoPatches(beam.DoFn):
    def setup(self):
        self.photos = load_sample_photos()

    def process(self, patches):
        yield [self._record(patch) for patch in patches]

    def _record(self, patch: Patch) -> RawRecord:
        name, pixels = self.photos[patch.photo]
        square = pixels[patch.top : patch.top + patch.size, patch.left : patch.left + patch.size]
        return RawRecord(
            key=f"photos/{name}/{patch.size}px/y{patch.top:03d}-x{patch.left:03d}",
            image=square.tobytes(),
            image_shape=square.shape,
            split=patch.split,
        )


class ReadPhotoPatches(beam.PTransform):
    """Square patches of scikit-learn's sample photographs (offline), unlabelled, for
    super-resolution demos and tests; each patch carries its split (see ``photo_patches``)."""

    def __init__(self, patches: list[Patch]):
        super().__init__()
        self.patches = patches

    def expand(self, pipeline):
        patch_chunks = [self.patches[start:stop] for start, stop in chunks(len(self.patches))]
        return (
            pipeline
            | "PatchChunks" >> beam.Create(patch_chunks)
            | "CutPatches" >> beam.ParDo(_PhotoPatches())
            | "CountRead" >> beam.ParDo(_CountRead())
        )


# ------------------------------------------------------------------------------ image folder
def list_image_files(root: str) -> list[str]:
    """All non-hidden files under ``root`` (any depth), sorted.

    Files are not filtered by extension: a stray non-image is rejected by Preprocess with a
    reason rather than skipped unseen.
    """
    root = root.rstrip("/")
    matches = FileSystems.match([root + "/**"])[0].metadata_list
    paths = (meta.path for meta in matches)
    return sorted(p for p in paths if not any(part.startswith(".") for part in p[len(root) + 1 :].split("/")))


def folder_label(root: str, path: str) -> str | None:
    """The first sub-folder under ``root`` names the label; files directly in root have none."""
    relative = path[len(root.rstrip("/")) + 1 :]
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else None


class _ReadFiles(beam.DoFn):
    def __init__(self, root: str):
        self.root = root

    def process(self, paths):
        yield [self._read(path) for path in paths]

    def _read(self, path: str) -> RawRecord:
        label = folder_label(self.root, path)
        try:
            with FileSystems.open(path, compression_type="uncompressed") as f:
                return RawRecord(key=path, image=f.read(), label=label)
        except OSError as e:
            return RawRecord(key=path, label=label, error=f"unreadable file: {e}")


class ReadImageFolder(beam.PTransform):
    """Image files under ``root``; labels from the first level of sub-folders, if any."""

    def __init__(self, root: str, paths: list[str]):
        super().__init__()
        self.root = root
        self.paths = paths

    def expand(self, pipeline):
        path_chunks = [self.paths[start:stop] for start, stop in chunks(len(self.paths))]
        return (
            pipeline
            | "PathChunks" >> beam.Create(path_chunks)
            | "ReadFiles" >> beam.ParDo(_ReadFiles(self.root))
            | "CountRead" >> beam.ParDo(_CountRead())
        )


# ------------------------------------------------------------------------ TensorFlow Datasets
def open_tfds_builder(name: str, data_dir: str | None, download: bool, split: str):
    """The tfds builder for ``name``, failing within about a second when the data is absent.

    tfds would otherwise retry the network for minutes; with ``download`` the data set is
    downloaded and prepared here, in the driver, once.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises its own error types for unknown names and versions
        raise ComponentError(f"ingest.source tfds:{name}: {str(e).splitlines()[0]}") from e
    if download:
        builder.download_and_prepare()
        return builder
    try:
        builder.as_dataset(split=split)
    except Exception as e:
        raise ComponentError(
            f"ingest.source tfds:{name}: no prepared data for split {split!r} in "
            f"{builder.data_dir} ({str(e).splitlines()[0]}). Point ingest.tfds_data_dir at an "
            f"existing tfds data directory, or set ingest.tfds_download: true (needs network)."
        ) from e
    return builder


def tfds_label_names(builder, label_feature: str | None) -> list[str] | None:
    features = builder.info.features
    feature = features[label_feature] if label_feature and label_feature in features else None
    return list(feature.names) if feature is not None and hasattr(feature, "names") else None


class _ReadTFDS(beam.DoFn):
    def __init__(self, name, data_dir, split, image_feature, label_feature):
        self.name, self.data_dir, self.split = name, data_dir, split
        self.image_feature, self.label_feature = image_feature, label_feature

    def process(self, _):
        import tensorflow_datasets as tfds

        builder = tfds.builder(self.name, data_dir=self.data_dir)
        has_label = bool(self.label_feature) and self.label_feature in builder.info.features
        dataset = builder.as_dataset(
            split=self.split, shuffle_files=False, read_config=tfds.ReadConfig(add_tfds_id=True)
        )
        records = (
            self._record(i, example, has_label) for i, example in enumerate(tfds.as_numpy(dataset))
        )
        yield from batched(records)

    def _record(self, index, example, has_label) -> RawRecord:
        key = example.get("tfds_id", f"{self.name}/{self.split}/{index}".encode()).decode()
        image = np.asarray(example[self.image_feature])
        label = int(example[self.label_feature]) if has_label else None
        if image.dtype != np.uint8:
            return RawRecord(key=key, label=label, error=f"image dtype {image.dtype}, expected uint8")
        return RawRecord(key=key, image=image.tobytes(), image_shape=image.shape, label=label)


class ReadTFDS(beam.PTransform):
    """A TensorFlow Datasets split; the builder must be prepared (see ``open_tfds_builder``)."""

    def __init__(self, name, data_dir, split, image_feature="image", label_feature="label"):
        super().__init__()
        self.read = _ReadTFDS(name, data_dir, split, image_feature, label_feature)

    def expand(self, pipeline):
        return (
            pipeline
            | "Start" >> beam.Create([None])
            | "ReadTFDS" >> beam.ParDo(self.read)
            | "Redistribute" >> beam.Reshuffle()
            | "CountRead" >> beam.ParDo(_CountRead())
        )


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
            lambda split, batch: ((split, _stable_hash(batch[0]) % num_shards[split]), batch)
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


def _stable_hash(data: bytes) -> int:
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


def peek_example(paths: list[str]) -> example_pb2.Example | None:
    for path in paths:
        for record in iter_tfrecords(path):
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

    def _record(self, path: str, serialized: bytes) -> RawRecord:
        # Content-addressed key: stable across runs and readers, and duplicates share a split.
        key = f"{path}#{_stable_hash(serialized):08x}"
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
                lambda path: ((path, batch) for batch in batched(iter_tfrecords(path)))
            )
            | "Redistribute" >> beam.Reshuffle()
            | "ParseExamples" >> beam.ParDo(self.parse)
            | "CountRead" >> beam.ParDo(_CountRead())
        )


# ------------------------------------------------------------------------------------- numpy
def load_npz_arrays(path: str, features_key: str, label_key: str | None):
    """The data array and optional label array of an ``.npz`` file, checked."""
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            archive = np.load(io.BytesIO(f.read()), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ComponentError(f"ingest.source npz:{path}: cannot read ({e})") from e
    for key in filter(None, (features_key, label_key)):
        if key not in archive:
            raise ComponentError(
                f"ingest.source npz:{path}: no array {key!r}; it has {', '.join(archive.files)}"
            )
    data = archive[features_key]
    labels = archive[label_key] if label_key else None
    if data.ndim not in (2, 3, 4):
        raise ComponentError(
            f"npz:{path}: array {features_key!r} has shape {data.shape}; expected [N, D] vectors "
            f"or [N, H, W] / [N, H, W, C] images"
        )
    if data.ndim > 2 and data.dtype != np.uint8:
        raise ComponentError(f"npz:{path}: image array {features_key!r} must be uint8, got {data.dtype}")
    if labels is not None and labels.shape != (len(data),):
        raise ComponentError(
            f"npz:{path}: label array {label_key!r} has shape {labels.shape}, expected ({len(data)},)"
        )
    return data, labels


class _NpzChunk(beam.DoFn):
    def __init__(self, path, features_key, label_key):
        self.path, self.features_key, self.label_key = path, features_key, label_key

    def setup(self):
        self.data, self.labels = load_npz_arrays(self.path, self.features_key, self.label_key)

    def process(self, bounds):
        yield [self._record(i) for i in range(*bounds)]

    def _record(self, i: int) -> RawRecord:
        label = None if self.labels is None else self.labels[i].item()
        key = f"{self.path}[{i}]"
        row = self.data[i]
        if row.ndim == 1:
            return RawRecord(key=key, features=row.astype(np.float64).tolist(), label=label)
        return RawRecord(key=key, image=row.tobytes(), image_shape=row.shape, label=label)


class ReadNpz(beam.PTransform):
    """Rows of an array in an ``.npz`` file: [N, D] vectors or [N, H, W(, C)] uint8 images."""

    def __init__(self, path: str, count: int, features_key: str, label_key: str | None):
        super().__init__()
        self.count = count
        self.read = _NpzChunk(path, features_key, label_key)

    def expand(self, pipeline):
        return (
            pipeline
            | "Chunks" >> beam.Create(chunks(self.count))
            | "ReadRows" >> beam.ParDo(self.read)
            | "CountRead" >> beam.ParDo(_CountRead())
        )


# --------------------------------------------------------------------------------------- CSV
def read_csv_header(path: str, delimiter: str) -> list[str]:
    """The column names; fails at once on a missing file, no header or no data row."""
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            rows = csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline=""), delimiter=delimiter)
            header = next(rows, None)
            first_row = next(rows, None)
    except OSError as e:
        raise ComponentError(f"ingest.source csv:{path}: cannot read ({e})") from e
    if not header:
        raise ComponentError(f"ingest.source csv:{path}: empty file (expected a header row)")
    if first_row is None:
        raise ComponentError(f"ingest.source csv:{path}: empty source, a header and no data rows")
    return [name.strip() for name in header]


def csv_feature_columns(header: list[str], label_column: str | None) -> list[str]:
    return [name for name in header if name != label_column]


class _ReadCsvRows(beam.DoFn):
    def __init__(self, delimiter: str, label_column: str | None):
        self.delimiter, self.label_column = delimiter, label_column

    def process(self, path):
        with FileSystems.open(path, compression_type="uncompressed") as f:
            rows = csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline=""), delimiter=self.delimiter)
            header = [name.strip() for name in next(rows)]
            records = (self._record(path, rows.line_num, header, cells) for cells in rows if cells)
            yield from batched(records)

    def _record(self, path, line, header, cells) -> RawRecord:
        key = f"{path}:{line}"
        if len(cells) != len(header):
            return RawRecord(key=key, error=f"line {line}: {len(cells)} cells, expected {len(header)}")
        row = dict(zip(header, (cell.strip() for cell in cells)))
        label = None
        if self.label_column:
            label = row.pop(self.label_column)
            if not label:
                return RawRecord(key=key, error=f"line {line}: missing label in column {self.label_column!r}")
        values = []
        for column, text in row.items():
            if not text:
                return RawRecord(key=key, label=label, error=f"line {line}: missing value in column {column!r}")
            try:
                values.append(float(text))
            except ValueError:
                return RawRecord(
                    key=key, label=label, error=f"line {line}: column {column!r}: {text!r} is not a number"
                )
        return RawRecord(key=key, features=values, label=label)


class ReadCsv(beam.PTransform):
    """Rows of a CSV file with a header; every column but the label column is a feature."""

    def __init__(self, path: str, delimiter: str = ",", label_column: str | None = None):
        super().__init__()
        self.path = path
        self.read = _ReadCsvRows(delimiter, label_column)

    def expand(self, pipeline):
        return (
            pipeline
            | "File" >> beam.Create([self.path])
            | "ReadRows" >> beam.ParDo(self.read)
            | "Redistribute" >> beam.Reshuffle()
            | "CountRead" >> beam.ParDo(_CountRead())
        )


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
