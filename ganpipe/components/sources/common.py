"""What every source kind shares: the record a reader emits, the plan the driver makes, and the
read counter.

A reader is a PTransform from a pipeline to a PCollection of ``list[RawRecord]`` (batches: see
``beamio``). A record that cannot be read is not dropped: it carries an ``error`` and Preprocess
lists it as rejected.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import unicodedata

import apache_beam as beam
from apache_beam.metrics import Metrics

from ganpipe.infra.beamio import METRICS_NAMESPACE


# Why a record is rejected: the ``reason`` class of each line in the rejected listing (the
# ``message`` beside it names the value and the place).
REASONS = {
    "unreadable": "the file or row could not be read (I/O error, file cut off)",
    "corrupt": "a TFRecord record failed its CRC check, or the framing is broken",
    "bad_record": "a TFRecord record is not a tf.train.Example",
    "bad_row": "a CSV row cannot be parsed (csv.Error, wrong number of cells)",
    "bad_encoding": "a CSV row is not valid in csv_encoding",
    "bad_value": "a value is missing, not a number, NaN or infinite",
    "bad_shape": "pixels or a vector of the wrong shape or channel count",
    "bad_label": "a label value the label rule refuses (1.5, NaN, non-UTF-8 bytes)",
    "unknown_label": "a label not in label_names",
    "unlabelled": "no label in a labelled data set (preprocess.unlabelled: reject)",
    "not_an_image": "a file that is not an image",
    "undecodable": "an image file that fails to decode (truncated, corrupt)",
    "bad_mode": "an image mode that cannot be converted (float values outside [0, 1]; preprocess.wide_modes)",
    "too_large": "an image over preprocess.max_image_pixels (decompression-bomb guard)",
    "too_small": "an image under preprocess.min_image_size",
}


class Rejected(Exception):
    """A record that cannot be used: ``reason`` is a class of ``REASONS``, ``message`` says what."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclasses.dataclass(slots=True)
class RawRecord:
    """One sample as read from a source, before validation.

    ``key`` names the record and where it is (``<file>:<line>``, ``<file>#<index>``, a path);
    ``path`` and ``index`` say the same for the rejected listing. ``name`` is the record's name
    relative to the source's root (``cat/a.png``, ``table.csv:5``): the split key under
    ``split_key: path``, the same wherever the data lives.

    ``image`` holds an encoded file (PNG, JPEG...) or, when ``image_shape`` is set, raw uint8
    pixels; ``features`` holds a vector. ``label`` is the raw label value (see ``labels``).
    ``split`` is set only by sources with a natural split (photos: held-out regions). A record
    the source could not read has ``reason`` and ``error`` (the message) and no data.
    """

    key: str
    name: str
    path: str = ""
    index: int | None = None
    image: bytes | None = None
    image_shape: tuple[int, ...] | None = None
    features: list[float] | None = None
    label: object = None
    error: str | None = None
    reason: str | None = None
    split: str | None = None

    def reject(self, rejected: Rejected) -> "RawRecord":
        self.reason, self.error = rejected.reason, rejected.message
        return self


@dataclasses.dataclass
class SourcePlan:
    """What the driver learned about a source before the pipeline runs."""

    read: beam.PTransform
    kind: str  # "image" or "vector"
    expected_count: int | None = None
    label_names: list[str] | None = None  # declared by the user or the source (digits, tfds)
    feature_names: list[str] | None = None


class CountRead(beam.DoFn):
    """Counts records as they leave a source, for the read = written + rejected check."""

    def __init__(self):
        self.read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, batch):
        self.read.inc(len(batch))
        yield batch


def relative_name(path: str, root: str) -> str:
    """``path`` relative to the source's ``root``, normalised (``./``, ``//``, absolute or relative
    spelling of a local root do not matter): the record's name wherever the data lives."""
    if "://" not in root:
        path, root = os.path.abspath(path), os.path.abspath(root)
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    if path.startswith(root.rstrip("/") + "/"):
        return unicodedata.normalize("NFC", path[len(root.rstrip("/")) + 1:])
    return unicodedata.normalize("NFC", posixpath.basename(path))
