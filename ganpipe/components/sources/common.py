"""What every source kind shares: the record a reader emits, the plan the driver makes, and the
read counter.

A reader is a PTransform from a pipeline to a PCollection of ``list[RawRecord]`` (batches: see
``beamio``). A record that cannot be read is not dropped: it carries an ``error`` and Preprocess
lists it as rejected.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from ganpipe.components.beamio import METRICS_NAMESPACE


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


@dataclasses.dataclass
class SourcePlan:
    """What the driver learned about a source before the pipeline runs."""

    read: beam.PTransform
    kind: str  # "image" or "vector"
    expected_count: int | None = None
    label_names: list[str] | None = None
    feature_names: list[str] | None = None


class CountRead(beam.DoFn):
    """Counts records as they leave a source, for the read = written + rejected check."""

    def __init__(self):
        self.read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, batch):
        self.read.inc(len(batch))
        yield batch
