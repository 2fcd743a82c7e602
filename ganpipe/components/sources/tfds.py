"""``tfds:<name>``: a split of a prepared TensorFlow Datasets data set."""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from ganpipe.components.base import ComponentError
from ganpipe.components.beamio import batched
from ganpipe.components.sources.common import CountRead, RawRecord, SourcePlan


def plan(name, params) -> SourcePlan:
    split = params["tfds_split"]
    builder = open_tfds_builder(name, params["tfds_data_dir"], params["tfds_download"], split)
    features = builder.info.features
    if params["image_feature"] not in features:
        raise ComponentError(
            f"ingest.image_feature: tfds:{name} has no feature {params['image_feature']!r}; "
            f"it has {', '.join(features.keys())}"
        )
    read = ReadTFDS(name, params["tfds_data_dir"], split, params["image_feature"], params["label_feature"])
    names = params["label_names"] or tfds_label_names(builder, params["label_feature"])
    return SourcePlan(read, "image", None, names)


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
            | "CountRead" >> beam.ParDo(CountRead())
        )

