"""``digits``: scikit-learn's bundled 1,797 handwritten 8x8 digits (offline), labelled 0-9."""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from ganpipe.infra.beamio import chunks
from ganpipe.components.sources.common import CountRead, RawRecord, SourcePlan

COUNT = 1797
LABEL_NAMES = [str(i) for i in range(10)]


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, values 0..16 scaled to 0..255 uint8, shape [N, 8, 8, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


def plan(_, params) -> SourcePlan:
    return SourcePlan(ReadDigits(), "image", COUNT, params["label_names"] or LABEL_NAMES)


class _DigitsChunk(beam.DoFn):
    def setup(self):
        self.images, self.labels = load_digits_uint8()

    def process(self, bounds):
        start, stop = bounds
        yield [
            RawRecord(
                key=f"digits/{i:04d}",
                name=f"digits/{i:04d}",
                index=i,
                image=self.images[i].tobytes(),
                image_shape=self.images[i].shape,
                label=str(self.labels[i]),
            )
            for i in range(start, stop)
        ]


class ReadDigits(beam.PTransform):
    def expand(self, pipeline):
        return (
            pipeline
            | "Chunks" >> beam.Create(chunks(COUNT))
            | "LoadDigits" >> beam.ParDo(_DigitsChunk())
            | "CountRead" >> beam.ParDo(CountRead())
        )
