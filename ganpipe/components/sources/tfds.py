"""``tfds:<name>``: a split of a prepared TensorFlow Datasets data set."""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from ganpipe.components.base import ComponentError
from ganpipe.infra.beamio import BATCH_SIZE
from ganpipe.components.sources.common import CountRead, RawRecord, Rejected, SourcePlan


def plan(name, params) -> SourcePlan:
    split = params["tfds_split"]
    builder = open_tfds_builder(name, params["tfds_data_dir"], params["tfds_download"], split)
    features = builder.info.features
    if params["image_feature"] not in features:
        raise ComponentError(
            f"ingest.image_feature: tfds:{name} has no feature {params['image_feature']!r}; "
            f"it has {', '.join(features.keys())}"
        )
    class_names = tfds_label_names(builder, params["label_feature"])
    read = ReadTFDS(builder, split, params["image_feature"], params["label_feature"], class_names)
    return SourcePlan(read, "image", None, params["label_names"] or class_names)


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


class _ToRecords(beam.DoFn):
    """A batch of TFDS examples (numpy) -> RawRecords: encoded image files are kept as they are
    stored (Preprocess decodes them), other image features become raw uint8 pixels."""

    def __init__(self, name, split, image_feature, label_feature, class_names):
        self.name, self.split, self.class_names = name, split, class_names
        self.image_feature, self.label_feature = image_feature, label_feature

    def process(self, examples):
        yield [self._record(example) for example in examples]

    def _record(self, example) -> RawRecord:
        key = example["tfds_id"].decode()
        record = RawRecord(key=key, name=key, path=f"tfds:{self.name}/{self.split}")
        record.label = self._label(example[self.label_feature]) if self.label_feature else None
        image = example[self.image_feature]
        if isinstance(image, bytes):
            record.image = image
            return record
        image = np.asarray(image)
        if image.dtype != np.uint8:
            return record.reject(Rejected("bad_shape", f"{key}: image dtype {image.dtype}, expected uint8"))
        record.image, record.image_shape = image.tobytes(), image.shape
        return record

    def _label(self, value):
        """A ClassLabel index becomes its class name; other values go to the label rule as they are."""
        value = np.asarray(value).item() if np.ndim(value) == 0 else value
        if self.class_names and isinstance(value, int) and 0 <= value < len(self.class_names):
            return self.class_names[value]
        return value


class ReadTFDS(beam.PTransform):
    """A split of a prepared TFDS data set through ``tfds.beam.ReadFromTFDS``: one read per
    shard of the data set, spread over the workers. An ``Image`` feature is read without
    decoding (``SkipDecoding``): the encoded PNG/JPEG bytes travel, not the pixels."""

    def __init__(self, builder, split, image_feature="image", label_feature="label", class_names=None):
        super().__init__()
        self.builder, self.split, self.image_feature = builder, split, image_feature
        has_label = bool(label_feature) and label_feature in builder.info.features
        self.convert = _ToRecords(builder.name, split, image_feature, label_feature if has_label else None, class_names)

    def expand(self, pipeline):
        import tensorflow_datasets as tfds

        encoded = isinstance(self.builder.info.features[self.image_feature], tfds.features.Image)
        decoders = {self.image_feature: tfds.decode.SkipDecoding()} if encoded else None
        return (
            pipeline
            | "ReadFromTFDS" >> tfds.beam.ReadFromTFDS(
                self.builder, self.split, read_config=tfds.ReadConfig(add_tfds_id=True), decoders=decoders
            )
            | "ToNumpy" >> beam.Map(tfds.as_numpy)
            | "Batch" >> beam.BatchElements(min_batch_size=BATCH_SIZE, max_batch_size=BATCH_SIZE)
            | "ToRecords" >> beam.ParDo(self.convert)
            | "CountRead" >> beam.ParDo(CountRead())
        )
