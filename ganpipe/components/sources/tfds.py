"""``tfds:<name>``: a split of a prepared TensorFlow Datasets data set."""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from ganpipe.components.base import ComponentError
from ganpipe.components.beamio import batched
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
    read = ReadTFDS(name, params["tfds_data_dir"], split, params["image_feature"], params["label_feature"], class_names)
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


class _ReadTFDS(beam.DoFn):
    def __init__(self, name, data_dir, split, image_feature, label_feature, class_names):
        self.name, self.data_dir, self.split = name, data_dir, split
        self.image_feature, self.label_feature, self.class_names = image_feature, label_feature, class_names

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
        record = RawRecord(key=key, name=key, path=f"tfds:{self.name}/{self.split}", index=index)
        record.label = self._label(example[self.label_feature]) if has_label else None
        image = np.asarray(example[self.image_feature])
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
    """A TensorFlow Datasets split; the builder must be prepared (see ``open_tfds_builder``)."""

    def __init__(self, name, data_dir, split, image_feature="image", label_feature="label", class_names=None):
        super().__init__()
        self.read = _ReadTFDS(name, data_dir, split, image_feature, label_feature, class_names)

    def expand(self, pipeline):
        return (
            pipeline
            | "Start" >> beam.Create([None])
            | "ReadTFDS" >> beam.ParDo(self.read)
            | "Redistribute" >> beam.Reshuffle()
            | "CountRead" >> beam.ParDo(CountRead())
        )

