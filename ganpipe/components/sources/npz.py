"""``npz:<file>``: rows of an array in an ``.npz`` file, [N, D] vectors or [N, H, W(, C)] uint8
images, with an optional label array."""
from __future__ import annotations

import io

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from ganpipe.components.base import ComponentError
from ganpipe.components.beamio import chunks
from ganpipe.components.sources.common import CountRead, RawRecord, SourcePlan


def plan(path, params) -> SourcePlan:
    if not FileSystems.exists(path):
        raise ComponentError(f"ingest.source npz:{path}: file does not exist")
    data, _ = load_npz_arrays(path, params["features_key"], params["label_column"])
    if len(data) == 0:
        raise ComponentError(f"ingest.source npz:{path}: empty source, array {params['features_key']!r} has no rows")
    kind = "vector" if data.ndim == 2 else "image"
    feature_names = [f"{params['features_key']}[{i}]" for i in range(data.shape[1])] if kind == "vector" else None
    read = ReadNpz(path, len(data), params["features_key"], params["label_column"])
    return SourcePlan(read, kind, len(data), params["label_names"], feature_names)


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
            | "CountRead" >> beam.ParDo(CountRead())
        )

