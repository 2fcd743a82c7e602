"""``photos``: square patches of scikit-learn's two sample photographs (offline), unlabelled, for
super-resolution demos and tests. Each patch carries its split: a strip on the right of each
photo is held out for eval (see ``photo_patches``).
"""
from __future__ import annotations

import dataclasses
import os

import apache_beam as beam
import numpy as np

from ganpipe.components.base import ComponentError
from ganpipe.infra.beamio import chunks
from ganpipe.components.sources.common import CountRead, RawRecord, SourcePlan


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




def plan(_, params) -> SourcePlan:
    shapes = [pixels.shape for _, pixels in load_sample_photos()]
    size, eval_fraction = params["patch_size"], params["eval_fraction"]
    height, width = min(shape[0] for shape in shapes), min(shape[1] for shape in shapes)
    if size > height:
        raise ComponentError(f"ingest.patch_size: {size} does not fit the {height}x{width} sample photos")
    train_width = eval_boundary(width, size, eval_fraction)
    if train_width < size:
        raise ComponentError(
            f"ingest.eval_fraction: {eval_fraction} holds out {width - train_width} of the {width} px "
            f"photo width for eval, leaving less than patch_size {size} px for train"
        )
    patches = photo_patches(shapes, size, params["patch_stride"], eval_fraction)
    return SourcePlan(ReadPhotoPatches(patches), "image", len(patches), params["label_names"])


class _PhotoPatches(beam.DoFn):
    def setup(self):
        self.photos = load_sample_photos()

    def process(self, patches):
        yield [self._record(patch) for patch in patches]

    def _record(self, patch: Patch) -> RawRecord:
        name, pixels = self.photos[patch.photo]
        square = pixels[patch.top : patch.top + patch.size, patch.left : patch.left + patch.size]
        key = f"photos/{name}/{patch.size}px/y{patch.top:03d}-x{patch.left:03d}"
        return RawRecord(
            key=key,
            name=key,
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
            | "CountRead" >> beam.ParDo(CountRead())
        )

