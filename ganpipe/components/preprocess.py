"""Preprocess: a Beam pipeline that decodes, validates and normalises Ingest's raw examples.

Images become ``image`` (raw uint8 H*W*C, row-major) at ``image_size`` x ``image_size`` with
``channels`` channels, plus ``image_lowres`` when ``lowres_factor`` is set; vectors become
``features`` (float32 list, raw values). Every record gets ``label`` (int64, -1 if unlabelled)
and keeps its ``key``. Bad records are listed in ``rejected.jsonl`` (key, split, path, index,
reason class, message), never silently dropped; the run fails when more than
``max_rejected_fraction`` of them are bad, and always when none is usable or train is empty.

Outputs: processed shards ``<examples>/{train,eval}/*.tfrecord`` and ``rejected.jsonl``,
``<schema>/schema.json`` + ``schema.pbtxt`` (TFMD Schema), ``<statistics>/statistics.json`` +
``statistics.pb`` (TFMD DatasetFeatureStatisticsList) and a TensorBoard text summary in
``<statistics>/logs``. The Beam job writes all of them itself (sinks, and a final step over the
combined statistics); statistics are Beam combiners (Chan's parallel variance); the counts of
the conservation check (read = written + rejected) are combines over the data, not metrics.
Every record's data CRC is checked on read: a corrupt record is rejected with its shard and index.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import math
import struct
import warnings
import socket
import time

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from PIL import Image, ImageOps, UnidentifiedImageError
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.text.summary_v2 import text_pb

from ganpipe.components import ingest
from ganpipe.infra import beamio, storage, tfmd
from ganpipe.components import specs
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext
from ganpipe.components.sources.common import Rejected
from ganpipe.infra.example_proto import Example

SPLITS = ingest.SPLITS
REJECTED_FILE = "rejected.jsonl"
SCHEMA_FILE = "schema.json"
STATISTICS_FILE = "statistics.json"
RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
}
_PIXEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # by channel count


WIDE_MODES = ("rescale", "reject")
_WIDE_MODES = {"F": "32-bit float", "I": "32-bit integer", "I;16": "16-bit", "I;16B": "16-bit",
               "I;16L": "16-bit", "I;16N": "16-bit"}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageDecoder:
    """Raw image feature -> uint8 [S, S, C] (and the low-resolution copy), or ``Rejected``.

    Files are turned upright by their EXIF orientation; transparency is composited over
    ``background`` (a grey level or [R, G, B]); 16-bit and 32-bit integer images are scaled to
    8 bits (values above 65535 are refused) and float images in [0, 1] are scaled by 255 (other
    ranges refused), or all of these are refused with ``wide_modes: reject``.
    ``max_image_pixels`` refuses images that would decode to more pixels (a decompression
    bomb); ``min_image_size`` refuses images whose shorter side is smaller.
    """

    def __init__(self, image_size, channels, resize_method, center_crop, lowres_factor,
                 background=255, wide_modes="rescale", max_image_pixels=Image.MAX_IMAGE_PIXELS,
                 min_image_size=0):
        self.size = image_size
        self.mode = "L" if channels == 1 else "RGB"
        self.channels = channels
        self.resample = RESIZE_METHODS[resize_method]
        self.center_crop = center_crop
        self.lowres_size = image_size // lowres_factor if lowres_factor else 0
        try:
            self.background = specs.background_rgb(background)
        except ValueError as e:
            raise ComponentError(str(e)) from None
        if wide_modes not in WIDE_MODES:
            raise ComponentError(f"preprocess.wide_modes: {wide_modes!r} is not one of {', '.join(WIDE_MODES)}")
        self.wide_modes = wide_modes
        self.max_pixels, self.min_size = max_image_pixels, min_image_size

    def decode(self, feature) -> dict[str, bytes]:
        """Raw pixel bytes (row-major [S, S, C]) of ``image`` and optional ``image_lowres``."""
        if "image" not in feature:
            raise Rejected("bad_shape", "no image in the record")
        data = feature["image"].bytes_list.value[0]
        if "image_shape" in feature:
            image = _from_pixels(data, tuple(feature["image_shape"].int64_list.value))
        else:
            image = self._from_file(data)
        source = SourceImage(image.format or "raw", image.mode, *image.size)
        image = self._to_mode(image)
        if self.center_crop:
            image = _crop_to_square(image)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), self.resample)
        pixels = {"image": image.tobytes(), "source": source}
        if self.lowres_size:
            small = image.resize((self.lowres_size, self.lowres_size), Image.Resampling.BICUBIC)
            pixels["image_lowres"] = small.tobytes()
        return pixels

    def _from_file(self, data: bytes) -> Image.Image:
        if not data:
            raise Rejected("not_an_image", "zero-byte file")
        # Pillow refuses files over twice its own (process-wide) limit before _check_size sees them:
        # raise that limit for a larger max_image_pixels, never lower it for other code in the process.
        if self.max_pixels > (Image.MAX_IMAGE_PIXELS or math.inf):
            Image.MAX_IMAGE_PIXELS = self.max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
                image = Image.open(io.BytesIO(data))
            self._check_size(image)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of every upright image
        except UnidentifiedImageError:
            raise Rejected("not_an_image", "not an image (unrecognised format)") from None
        except Image.DecompressionBombError as e:
            raise Rejected("too_large", f"{e}; raise preprocess.max_image_pixels if the image is genuine") from None
        except (OSError, SyntaxError, ValueError, EOFError, KeyError, struct.error) as e:
            raise Rejected("undecodable", f"undecodable image: {e}") from None
        return image

    def _check_size(self, image: Image.Image) -> None:
        width, height = image.size
        if self.max_pixels and width * height > self.max_pixels:
            raise Rejected("too_large", f"{width}x{height} image: {width * height} pixels is over "
                           f"preprocess.max_image_pixels {self.max_pixels} (decompression-bomb guard)")
        if min(width, height) < self.min_size:
            raise Rejected("too_small", f"{width}x{height} image: smaller than preprocess.min_image_size "
                           f"{self.min_size}")

    def _to_mode(self, image: Image.Image) -> Image.Image:
        """``image`` in the output mode: wide modes scaled to 8 bits, transparency composited."""
        if image.mode in _WIDE_MODES:
            image = self._to_8_bits(image)
        if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            backdrop = Image.new("RGBA", rgba.size, self.background + (255,))
            image = Image.alpha_composite(backdrop, rgba).convert("RGB")
        return image if image.mode == self.mode else image.convert(self.mode)

    def _to_8_bits(self, image: Image.Image) -> Image.Image:
        if self.wide_modes == "reject":
            raise Rejected("bad_mode", f"{_WIDE_MODES[image.mode]} image (mode {image.mode}); "
                           f"set preprocess.wide_modes: rescale to scale it to 8 bits")
        values = np.asarray(image)
        if image.mode == "F":
            finite = bool(np.isfinite(values).all())
            low, high = (float(values.min()), float(values.max())) if finite else (math.nan, math.nan)
            if not 0.0 <= low <= high <= 1.0:
                raise Rejected("bad_mode", f"float image with values in [{low:.4g}, {high:.4g}]; only [0, 1] "
                               f"is scaled to 8 bits")
            return Image.fromarray(np.round(values * 255.0).astype(np.uint8))
        if values.min() < 0 or values.max() > 65535:
            raise Rejected("bad_mode", f"32-bit integer image with values in [{values.min()}, {values.max()}]; "
                           f"only 0..65535 (16-bit) is scaled to 8 bits")
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8))

    def moments(self, decoded: list[dict]) -> dict:
        """Per-channel moments of a batch's pixels, from 256-bin histograms (exact, and much
        faster than float arithmetic on every pixel)."""
        pixels = np.frombuffer(b"".join(d["image"] for d in decoded), np.uint8).reshape(-1, self.channels)
        histograms = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(self.channels)])
        return {**moments_from_histograms(histograms),
                "source_images": source_facts([d["source"] for d in decoded], self.size)}

    @staticmethod
    def encode(decoded: dict) -> tuple[list, list]:
        return [(name, [data]) for name, data in decoded.items() if name != "source"], []


def _from_pixels(data: bytes, shape: tuple[int, ...]) -> Image.Image:
    """Raw uint8 pixels of shape [H, W] or [H, W, C] with C in 1, 3, 4."""
    channels = shape[2] if len(shape) == 3 else 1
    if len(shape) not in (2, 3) or channels not in _PIXEL_MODES or math.prod(shape) != len(data):
        raise Rejected("bad_shape", f"{len(data)} bytes of pixels for shape {list(shape)}; expected "
                       f"[H, W] or [H, W, C] with C = 1, 3 or 4")
    pixels = np.frombuffer(data, np.uint8).reshape(shape[:2] if channels == 1 else shape)
    return Image.fromarray(pixels, _PIXEL_MODES[channels])


def _crop_to_square(image: Image.Image) -> Image.Image:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


class VectorDecoder:
    """Raw ``features`` -> float32 [D], or ``Rejected`` for a wrong length or NaN/inf values."""

    def __init__(self, feature_names: list[str]):
        self.feature_names = feature_names

    def decode(self, feature) -> dict[str, np.ndarray]:
        values = np.asarray(feature["features"].float_list.value, np.float32) if "features" in feature else None
        if values is None or len(values) != len(self.feature_names):
            got = 0 if values is None else len(values)
            raise Rejected("bad_shape", f"{got} values, expected {len(self.feature_names)}")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise Rejected("bad_value", f"NaN or infinite value in column {self.feature_names[bad[0]]!r}")
        return {"features": values}

    @staticmethod
    def moments(arrays: list[dict]) -> dict:
        values = np.stack([a["features"] for a in arrays]).astype(np.float64)
        mean = values.mean(axis=0)
        return {"n": len(values), "mean": mean, "m2": ((values - mean) ** 2).sum(axis=0),
                "min": values.min(axis=0), "max": values.max(axis=0)}

    @staticmethod
    def encode(arrays: dict) -> tuple[list, list]:
        return [], [("features", arrays["features"].tolist())]


# ------------------------------------------------------------------------------- the DoFn
class _Preprocess(beam.DoFn):
    """(split, batch of raw examples) -> (split, processed examples), rejections and partial
    statistics keyed by split."""

    def __init__(self, decoder, label_names: list[str], unlabelled: str = "reject"):
        self.decoder = decoder
        self.unlabelled = unlabelled
        self.label_index = {name: i for i, name in enumerate(label_names)}
        self.num_classes = len(label_names)
        self.read = Metrics.counter(beamio.METRICS_NAMESPACE, "records_read")

    def process(self, split_and_batch):
        split, batch = split_and_batch
        self.read.inc(len(batch))
        processed, kept, labels = [], [], []
        for serialized in batch:
            if isinstance(serialized, beamio.Corrupt):
                yield beam.pvalue.TaggedOutput("rejected", corrupt_rejection(serialized, split))
                continue
            feature = Example.FromString(serialized).features.feature
            key = feature["key"].bytes_list.value[0] if "key" in feature else b""
            try:
                _raise_ingest_error(feature)
                arrays = self.decoder.decode(feature)
                label = self._label(feature)
            except Rejected as rejected:
                yield beam.pvalue.TaggedOutput("rejected", rejection(feature, split, rejected))
                continue
            bytes_features, float_features = self.decoder.encode(arrays)
            processed.append(beamio.serialize_example(
                bytes_features=[("key", [key])] + bytes_features,
                int_features=[("label", [label])],
                float_features=float_features,
            ))
            kept.append(arrays)
            labels.append(label)
        # What this batch read and wrote: the conservation check's counts (rejected ones are
        # the difference, checked against the listing's own count).
        yield beam.pvalue.TaggedOutput("tally", collections.Counter({"read": len(batch), f"written:{split}": len(processed)}))
        if processed:
            yield split, processed
            partial = partial_statistics(self.decoder.moments(kept), np.asarray(labels), self.num_classes)
            yield beam.pvalue.TaggedOutput("statistics", (split, partial))

    def _label(self, feature) -> int:
        if "label" not in feature:
            if self.label_index and self.unlabelled == "reject":
                raise Rejected("unlabelled", f"no label in a labelled data set ({len(self.label_index)} classes; an "
                               f"image directly in the root of a folder tree has none); set "
                               f"preprocess.unlabelled: keep to keep such records as label -1")
            return -1
        name = feature["label"].bytes_list.value[0].decode("utf-8", "replace")
        if name not in self.label_index:
            raise Rejected("unknown_label", f"label {name!r} is not in the vocabulary")
        return self.label_index[name]


def _raise_ingest_error(feature) -> None:
    """A record the source could not read (Ingest recorded why) is rejected with that reason."""
    if "error" in feature:
        reason = feature["reason"].bytes_list.value[0].decode() if "reason" in feature else "unreadable"
        raise Rejected(reason, feature["error"].bytes_list.value[0].decode("utf-8", "replace"))


def rejection(feature, split: str, rejected: Rejected) -> dict:
    """A line of the rejected listing: what (reason class, message) and where (source file and
    line or record index, as Ingest recorded them)."""
    def text(name):
        return feature[name].bytes_list.value[0].decode("utf-8", "replace") if name in feature else ""

    index = list(feature["source_index"].int64_list.value) if "source_index" in feature else []
    return {"key": text("key"), "split": split, "path": text("source_path"), "index": index[0] if index else None,
            "reason": rejected.reason, "message": rejected.message}


def corrupt_rejection(corrupt: beamio.Corrupt, split: str) -> dict:
    return {"key": corrupt.key, "split": split, "path": corrupt.path, "index": corrupt.index,
            "reason": "corrupt", "message": corrupt.message}


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


# -------------------------------------------------------------------------- composite
class PreprocessExamples(beam.PTransform):
    """(split, batch of raw examples) -> {'examples': (split, batch of processed examples),
    'rejected': dicts (key, split, reason...), 'statistics': (split, statistics dict),
    'tally': Counters of records read and written per split}.

    All splits go through one branch: every transform has a fixed cost on the DirectRunner,
    so a branch per split would double it."""

    def __init__(self, decoder, label_names: list[str], unlabelled: str = "reject"):
        super().__init__()
        self.process = _Preprocess(decoder, label_names, unlabelled)

    def expand(self, batches):
        outputs = batches | "DecodeAndValidate" >> beam.ParDo(self.process).with_outputs(
            "rejected", "statistics", "tally", main="examples"
        )
        statistics = outputs.statistics | "CombineStatistics" >> beam.CombinePerKey(StatisticsCombineFn())
        return {"examples": outputs.examples, "rejected": outputs.rejected, "statistics": statistics,
                "tally": outputs.tally}


# ----------------------------------------------------------------------------- the driver
def run_preprocess(
    examples_dir: str,
    output_dir: str,
    *,
    schema_dir: str | None = None,
    statistics_dir: str | None = None,
    image_size: int = 32,
    channels: int = 1,
    resize_method: str = "bilinear",
    center_crop: bool = False,
    lowres_factor: int = 0,
    max_rejected_fraction: float = 0.01,
    num_shards: int = 0,
    unlabelled: str = "reject",
    background: int | list[int] = 255,
    wide_modes: str = "rescale",
    max_image_pixels: int = Image.MAX_IMAGE_PIXELS,
    min_image_size: int = 0,
    beam_args=(),
    log=print,
) -> dict:
    """Processes Ingest's ``examples_dir`` into ``output_dir``; schema and statistics go to
    their own directories (default ``output_dir``). Returns {schema, statistics, rejected_path}."""
    schema_dir = schema_dir or output_dir
    statistics_dir = statistics_dir or output_dir
    metadata = ingest.load_metadata(examples_dir)
    kind, label_names = metadata["kind"], metadata["label_names"]
    if kind == "image":
        if resize_method not in RESIZE_METHODS:
            raise ComponentError(f"preprocess.resize_method: {resize_method!r} is not one of {', '.join(RESIZE_METHODS)}")
        if lowres_factor and image_size % lowres_factor:
            raise ComponentError(
                f"preprocess.lowres_factor: {lowres_factor} does not divide image_size {image_size}"
            )
        decoder = ImageDecoder(image_size, channels, resize_method, center_crop, lowres_factor,
                               background, wide_modes, max_image_pixels, min_image_size)
    else:
        decoder = VectorDecoder(metadata["feature_names"])
    pipeline = beamio.make_pipeline(beam_args)
    for split in SPLITS:
        if beamio.shard_paths(storage.join(output_dir, split)):
            raise ComponentError(f"{output_dir}/{split} already holds shards; write to an empty directory")
    log(f"Preprocess: {examples_dir} ({kind}) -> {output_dir}")

    rejected_path = storage.join(output_dir, REJECTED_FILE)
    patterns = {split: beamio.shard_pattern(storage.join(examples_dir, split)) for split in SPLITS}
    raw = pipeline | "ReadShards" >> beamio.ReadTFRecordBatches(patterns)
    outputs = raw | "Preprocess" >> PreprocessExamples(decoder, label_names, unlabelled)
    writer = beamio.WriteSplitShards(output_dir, SPLITS, num_shards)
    outputs["examples"] | "WriteShards" >> writer
    outputs["rejected"] | "WriteRejected" >> beamio.WriteJsonLines(rejected_path)
    rejected_tally = outputs["rejected"] | "CountRejected" >> beam.Map(lambda _: collections.Counter(rejected=1))
    tally = (outputs["tally"], rejected_tally) | "Tallies" >> beam.Flatten() | "SumTallies" >> beamio.SumTallies()
    summary = Summary(metadata, decoder, channels, schema_dir, statistics_dir)
    tally | "WriteSchemaAndStatistics" >> beamio.Finalize(
        summary.write, statistics=beam.pvalue.AsDict(outputs["statistics"])
    )
    beamio.run(pipeline, "Preprocess")
    storage.delete([writer.temp_directory])

    schema = storage.read_json(storage.join(schema_dir, SCHEMA_FILE))
    statistics_doc = storage.read_json(storage.join(statistics_dir, STATISTICS_FILE))
    records = statistics_doc["records"]
    _check_conservation(metadata, records, rejected_path)
    _check_usable(metadata, schema["counts"], records, rejected_path)
    log(f"Preprocess: wrote {records['written']} records ({schema['counts']}), rejected {records['rejected']}")
    _check_rejected_fraction(records, max_rejected_fraction, rejected_path)
    return {"schema": schema, "statistics": statistics_doc, "rejected_path": rejected_path}


class Summary:
    """Writes the job's summary files from its combined values, on a worker, at the end of the
    job: schema.json + schema.pbtxt, statistics.json + statistics.pb and a TensorBoard text
    summary of the statistics (``<statistics>/logs``)."""

    def __init__(self, metadata: dict, decoder, channels: int, schema_dir: str, statistics_dir: str):
        self.metadata, self.decoder, self.channels = metadata, decoder, channels
        self.schema_dir, self.statistics_dir = schema_dir, statistics_dir

    def write(self, tally, statistics) -> None:
        label_names = self.metadata["label_names"]
        split_statistics = {split: empty_statistics(len(label_names)) for split in SPLITS}
        split_statistics.update(statistics)
        counts = {split: tally[f"written:{split}"] for split in SPLITS}
        records = {"read": tally["read"], "written": sum(counts.values()), "rejected": tally["rejected"]}
        schema = build_schema(self.metadata, self.decoder, counts, split_statistics)
        kind = self.metadata["kind"]
        statistics_doc = {
            "kind": kind,
            "names": self.metadata["feature_names"] if kind == "vector" else channel_names(self.channels),
            "label_names": label_names,
            "records": records,
            "splits": split_statistics,
        }
        storage.write_json(storage.join(self.schema_dir, SCHEMA_FILE), schema)
        storage.write_bytes(storage.join(self.schema_dir, tfmd.SCHEMA_PROTO_FILE), tfmd.schema_text(schema))
        storage.write_json(storage.join(self.statistics_dir, STATISTICS_FILE), statistics_doc)
        storage.write_bytes(storage.join(self.statistics_dir, tfmd.STATISTICS_PROTO_FILE),
                            tfmd.statistics_bytes(statistics_doc))
        write_statistics_summary(statistics_doc, storage.join(self.statistics_dir, "logs"))


def _check_conservation(metadata: dict, records: dict, rejected_path: str) -> None:
    """Counts from the data: Ingest's records = read here = written + rejected."""
    expected, read = sum(metadata["counts"].values()), records["read"]
    written, rejected = records["written"], records["rejected"]
    if read != expected:
        raise ComponentError(f"Preprocess: Ingest wrote {expected} records but {read} were read "
                             f"(a shard is cut off or unreadable: see {rejected_path})")
    if read != written + rejected:
        raise ComponentError(
            f"Preprocess: read {read} records but wrote {written} and rejected {rejected} "
            f"({rejected_path}); {read - written - rejected} were lost"
        )


def _check_usable(metadata: dict, counts: dict, records: dict, rejected_path: str) -> None:
    """Zero good records, or none in train, can never be right, whatever max_rejected_fraction says."""
    if records["written"] == 0:
        raise ComponentError(f"Preprocess: all {records['read']} records were rejected, none is usable; "
                             f"see {rejected_path}")
    if counts["train"] == 0:
        rule = metadata.get("split", {})
        raise ComponentError(
            f"Preprocess: the train split is empty ({counts['eval']} eval records kept) under the split rule "
            f"{rule.get('rule', 'of Ingest')} (key: {rule.get('key')}, eval_fraction {metadata.get('eval_fraction')}); "
            f"see {rejected_path} for the rejected train records, or lower ingest.eval_fraction"
        )


def _check_rejected_fraction(records: dict, max_fraction: float, rejected_path: str) -> None:
    fraction = records["rejected"] / records["read"]
    if fraction > max_fraction:
        raise ComponentError(
            f"Preprocess: rejected {records['rejected']} of {records['read']} records "
            f"({fraction:.1%} > max_rejected_fraction {max_fraction:.1%}); see {rejected_path}"
        )


def channel_names(channels: int) -> list[str]:
    return ["gray"] if channels == 1 else ["red", "green", "blue"]


def build_schema(metadata: dict, decoder, counts: dict, split_statistics: dict) -> dict:
    label_names = metadata["label_names"]
    schema = {
        "kind": metadata["kind"],
        "num_classes": len(label_names),
        "label_names": label_names,
        "counts": counts,
        "lowres_shape": None,
        "feature_names": None,
        "normalization": None,
    }
    if isinstance(decoder, ImageDecoder):
        schema.update(shape=[decoder.size, decoder.size, decoder.channels], dtype="uint8", channels=decoder.channels)
        if decoder.lowres_size:
            schema["lowres_shape"] = [decoder.lowres_size, decoder.lowres_size, decoder.channels]
        return schema
    train = split_statistics["train"]
    schema.update(
        shape=[len(decoder.feature_names)],
        dtype="float32",
        channels=None,
        feature_names=decoder.feature_names,
    )
    if train["count"]:  # else the driver fails: no normalization without train records
        # A constant feature gets std 1 so standardising never divides by zero.
        schema["normalization"] = {"mean": train["mean"], "std": [s if s > 0 else 1.0 for s in train["std"]]}
    return schema


def write_statistics_summary(statistics: dict, logdir: str) -> None:
    """The statistics as a Markdown table, a TensorBoard text summary (tag ``statistics``),
    written as an event file through the filesystem layer (any scheme, no TensorFlow needed)."""
    lines = [f"records: {statistics['records']}", ""]
    for split, stats in statistics["splits"].items():
        lines += [f"**{split}**: {stats['count']} records, {stats['unlabelled']} unlabelled", "",
                  "| name | mean | std | min | max |", "|---|---|---|---|---|"]
        if stats["count"]:
            for row in zip(statistics["names"], stats["mean"], stats["std"], stats["min"], stats["max"]):
                lines.append("| {} | {:.4g} | {:.4g} | {:.4g} | {:.4g} |".format(*row))
        histogram = ", ".join(f"{name}: {count}" for name, count in zip(statistics["label_names"], stats["label_counts"]))
        lines += ["", f"labels: {histogram or 'none'}", ""]
    events = [event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"),
              event_pb2.Event(wall_time=time.time(), step=0, summary=text_pb("statistics", "\n".join(lines)))]
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.ganpipe"
    storage.write_bytes(storage.join(logdir, name), b"".join(beamio.frame(e.SerializeToString()) for e in events))


# ------------------------------------------------------------------------------ component


def run(inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict, ctx: ExecutionContext) -> None:
    result = run_preprocess(
        inputs["examples"].uri,
        outputs["examples"].uri,
        schema_dir=outputs["schema"].uri,
        statistics_dir=outputs["statistics"].uri,
        beam_args=ctx.beam_args,
        log=ctx.log,
        **params,
    )
    records = result["statistics"]["records"]
    outputs["examples"].properties.update(
        train_count=result["schema"]["counts"]["train"],
        eval_count=result["schema"]["counts"]["eval"],
        rejected=records["rejected"],
    )
    outputs["schema"].properties.update(kind=result["schema"]["kind"], shape=result["schema"]["shape"])
    outputs["statistics"].properties.update(records=records)


COMPONENT = specs.PREPROCESS
