"""Preprocess statistics: what the original images were (format, mode, size, aspect) and the
per-channel moments and label counts, as Beam combiners (Chan's parallel variance)."""
from __future__ import annotations

import collections
import dataclasses

import apache_beam as beam
import numpy as np

# --------------------------------------------------------------------------- statistics
@dataclasses.dataclass(frozen=True)
class SourceImage:
    """What an image was before Preprocess: format (PNG, JPEG... or raw pixels), mode, size."""

    format: str
    mode: str
    width: int
    height: int


# Bucket edges of width / height: tall, portrait, near-square, landscape, wide.
ASPECT_EDGES = (0.5, 0.75, 0.9, 1 / 0.9, 4 / 3, 2.0)


def source_facts(images: list[SourceImage], size: int) -> dict:
    """Mergeable facts of a batch's original images (see ``merge_source_facts``)."""
    widths = np.array([i.width for i in images])
    heights = np.array([i.height for i in images])
    return {
        "width": [int(widths.min()), int(widths.max()), int(widths.sum())],
        "height": [int(heights.min()), int(heights.max()), int(heights.sum())],
        "aspect_ratio": np.bincount(np.searchsorted(ASPECT_EDGES, widths / heights, side="right"),
                                    minlength=len(ASPECT_EDGES) + 1),
        "formats": collections.Counter(i.format for i in images),
        "modes": collections.Counter(i.mode for i in images),
        # Enlarged along at least one axis to reach image_size: blurrier than the data suggests.
        "upscaled": int((np.minimum(widths, heights) < size).sum()),
    }


def merge_source_facts(a: dict, b: dict) -> dict:
    def extent(x, y):
        return [min(x[0], y[0]), max(x[1], y[1]), x[2] + y[2]]

    return {"width": extent(a["width"], b["width"]), "height": extent(a["height"], b["height"]),
            "aspect_ratio": a["aspect_ratio"] + b["aspect_ratio"], "formats": a["formats"] + b["formats"],
            "modes": a["modes"] + b["modes"], "upscaled": a["upscaled"] + b["upscaled"]}


def finalize_source_facts(facts: dict, count: int) -> dict:
    edges = (0.0, *ASPECT_EDGES, None)
    return {
        "width": {"min": facts["width"][0], "max": facts["width"][1], "mean": facts["width"][2] / count},
        "height": {"min": facts["height"][0], "max": facts["height"][1], "mean": facts["height"][2] / count},
        "aspect_ratio": [{"low": low, "high": high, "count": int(n)}
                         for low, high, n in zip(edges, edges[1:], facts["aspect_ratio"])],
        "formats": dict(sorted(facts["formats"].items())),
        "modes": dict(sorted(facts["modes"].items())),
        "upscaled": facts["upscaled"],
    }


def moments_from_histograms(histograms: np.ndarray) -> dict:
    """n, mean, m2 (sum of squared deviations), min, max per row of [K, 256] value counts."""
    values = np.arange(histograms.shape[1], dtype=np.float64)
    n = histograms.sum(axis=1)
    mean = histograms @ values / n
    present = histograms > 0
    return {
        "n": int(n[0]),
        "histogram": histograms,
        "mean": mean,
        "m2": (histograms * (values[None, :] - mean[:, None]) ** 2).sum(axis=1),
        "min": np.array([values[row].min() for row in present]),
        "max": np.array([values[row].max() for row in present]),
    }


def partial_statistics(moments: dict, labels: np.ndarray, num_classes: int) -> dict:
    """Mergeable statistics of one batch: its moments plus the label histogram."""
    return {
        **moments,
        "records": len(labels),
        "label_counts": np.bincount(labels[labels >= 0], minlength=num_classes),
        "unlabelled": int((labels < 0).sum()),
    }


def merge_statistics(a: dict, b: dict) -> dict:
    """Chan et al.'s pairwise update: exact and stable for any split of the data."""
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    images = {}  # image data only: pixel histograms and what the originals were
    if "histogram" in a:
        images = {"histogram": a["histogram"] + b["histogram"],
                  "source_images": merge_source_facts(a["source_images"], b["source_images"])}
    return {
        **images,
        "records": a["records"] + b["records"],
        "n": n,
        "mean": a["mean"] + delta * (b["n"] / n),
        "m2": a["m2"] + b["m2"] + delta**2 * (a["n"] * b["n"] / n),
        "min": np.minimum(a["min"], b["min"]),
        "max": np.maximum(a["max"], b["max"]),
        "label_counts": a["label_counts"] + b["label_counts"],
        "unlabelled": a["unlabelled"] + b["unlabelled"],
    }


class StatisticsCombineFn(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, accumulator, partial):
        return partial if accumulator is None else merge_statistics(accumulator, partial)

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is not None:
                merged = self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return None if accumulator is None else finalize_statistics(accumulator)


def finalize_statistics(accumulator: dict) -> dict:
    images = {}
    if "histogram" in accumulator:
        images = {"histogram": accumulator["histogram"].astype(int).tolist(),
                  "source_images": finalize_source_facts(accumulator["source_images"], accumulator["records"])}
    return {
        **images,
        "count": int(accumulator["records"]),
        "mean": accumulator["mean"].tolist(),
        "std": np.sqrt(accumulator["m2"] / accumulator["n"]).tolist(),
        "min": accumulator["min"].tolist(),
        "max": accumulator["max"].tolist(),
        "label_counts": accumulator["label_counts"].astype(int).tolist(),
        "unlabelled": int(accumulator["unlabelled"]),
    }


def empty_statistics(num_classes: int) -> dict:
    return {"count": 0, "mean": None, "std": None, "min": None, "max": None,
            "label_counts": [0] * num_classes, "unlabelled": 0}
