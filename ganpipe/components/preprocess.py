"""Preprocess: a Beam pipeline that decodes, validates and normalises Ingest's raw examples.

Images become ``image`` (raw uint8 H*W*C, row-major) at ``image_size`` x ``image_size`` with
``channels`` channels, plus ``image_lowres`` when ``lowres_factor`` is set; vectors become
``features`` (float32 list, raw values). Every record gets ``label`` (int64, -1 if unlabelled)
and keeps its ``key``. Bad records are listed in ``rejected.jsonl`` (key, split, reason), never
silently dropped; the run fails when more than ``max_rejected_fraction`` of them are bad.

Outputs: processed shards ``<examples>/{train,eval}/*.tfrecord`` and ``rejected.jsonl``,
``<schema>/schema.json``, ``<statistics>/statistics.json`` (+ a TensorBoard text summary in
``<statistics>/logs``). Statistics are computed with Beam combiners (Chan's parallel variance).
"""
from __future__ import annotations

import io
import math
import os

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image, UnidentifiedImageError

from ganpipe.components import beamio, ingest
from ganpipe.components import specs
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext
from ganpipe.components.beamio import example_pb2

SPLITS = ingest.SPLITS
REJECTED_FILE = "rejected.jsonl"
SCHEMA_FILE = "schema.json"
STATISTICS_FILE = "statistics.json"
_SUMMARY_FILE = ".summary.jsonl"  # the pipeline's small outputs, read by the driver
RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
}
_PIXEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # by channel count


class Rejected(Exception):
    """A record that fails validation; the message is the reason written to the listing."""


# ----------------------------------------------------------------------------- decoding
class ImageDecoder:
    """Raw image feature -> uint8 [S, S, C] (and the low-resolution copy), or ``Rejected``."""

    def __init__(self, image_size, channels, resize_method, center_crop, lowres_factor):
        self.size = image_size
        self.mode = "L" if channels == 1 else "RGB"
        self.channels = channels
        self.resample = RESIZE_METHODS[resize_method]
        self.center_crop = center_crop
        self.lowres_size = image_size // lowres_factor if lowres_factor else 0

    def decode(self, feature) -> dict[str, bytes]:
        """Raw pixel bytes (row-major [S, S, C]) of ``image`` and optional ``image_lowres``."""
        if "image" not in feature:
            raise Rejected("no image in the record")
        data = feature["image"].bytes_list.value[0]
        if "image_shape" in feature:
            image = _from_pixels(data, tuple(feature["image_shape"].int64_list.value))
        else:
            image = _from_file(data)
        if image.mode != self.mode:
            image = image.convert(self.mode)
        if self.center_crop:
            image = _crop_to_square(image)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), self.resample)
        pixels = {"image": image.tobytes()}
        if self.lowres_size:
            small = image.resize((self.lowres_size, self.lowres_size), Image.Resampling.BICUBIC)
            pixels["image_lowres"] = small.tobytes()
        return pixels

    def moments(self, decoded: list[dict]) -> dict:
        """Per-channel moments of a batch's pixels, from 256-bin histograms (exact, and much
        faster than float arithmetic on every pixel)."""
        pixels = np.frombuffer(b"".join(d["image"] for d in decoded), np.uint8).reshape(-1, self.channels)
        histograms = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(self.channels)])
        return moments_from_histograms(histograms)

    @staticmethod
    def encode(decoded: dict) -> tuple[list, list]:
        return [(name, [data]) for name, data in decoded.items()], []


def _from_file(data: bytes) -> Image.Image:
    if not data:
        raise Rejected("zero-byte file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise Rejected("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise Rejected(f"undecodable image: {e}") from None
    if image.mode.startswith("I;16"):  # 16-bit greyscale: keep the high byte
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    return image


def _from_pixels(data: bytes, shape: tuple[int, ...]) -> Image.Image:
    """Raw uint8 pixels of shape [H, W] or [H, W, C] with C in 1, 3, 4."""
    channels = shape[2] if len(shape) == 3 else 1
    if len(shape) not in (2, 3) or channels not in _PIXEL_MODES or math.prod(shape) != len(data):
        raise Rejected(f"wrongly shaped: {len(data)} bytes of pixels for shape {list(shape)}")
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
            raise Rejected(f"wrongly shaped: {got} values, expected {len(self.feature_names)}")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise Rejected(f"NaN or infinite value in column {self.feature_names[bad[0]]!r}")
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

    def __init__(self, decoder, label_names: list[str]):
        self.decoder = decoder
        self.label_index = {name: i for i, name in enumerate(label_names)}
        self.num_classes = len(label_names)
        self.read = Metrics.counter(beamio.METRICS_NAMESPACE, "records_read")

    def process(self, split_and_batch):
        split, batch = split_and_batch
        self.read.inc(len(batch))
        processed, kept, labels = [], [], []
        for serialized in batch:
            feature = example_pb2.Example.FromString(serialized).features.feature
            key = feature["key"].bytes_list.value[0] if "key" in feature else b""
            try:
                label = self._label(feature)
                arrays = self.decoder.decode(feature)
            except Rejected as reason:
                yield beam.pvalue.TaggedOutput(
                    "rejected", {"key": key.decode("utf-8", "replace"), "split": split, "reason": str(reason)}
                )
                continue
            bytes_features, float_features = self.decoder.encode(arrays)
            processed.append(beamio.serialize_example(
                bytes_features=[("key", [key])] + bytes_features,
                int_features=[("label", [label])],
                float_features=float_features,
            ))
            kept.append(arrays)
            labels.append(label)
        if processed:
            yield split, processed
            partial = partial_statistics(self.decoder.moments(kept), np.asarray(labels), self.num_classes)
            yield beam.pvalue.TaggedOutput("statistics", (split, partial))

    def _label(self, feature) -> int:
        if "error" in feature:
            raise Rejected(feature["error"].bytes_list.value[0].decode("utf-8", "replace"))
        if "label" not in feature:
            return -1
        name = feature["label"].bytes_list.value[0].decode("utf-8", "replace")
        if name not in self.label_index:
            raise Rejected(f"unknown label {name!r}")
        return self.label_index[name]


# --------------------------------------------------------------------------- statistics
def moments_from_histograms(histograms: np.ndarray) -> dict:
    """n, mean, m2 (sum of squared deviations), min, max per row of [K, 256] value counts."""
    values = np.arange(histograms.shape[1], dtype=np.float64)
    n = histograms.sum(axis=1)
    mean = histograms @ values / n
    present = histograms > 0
    return {
        "n": int(n[0]),
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
    return {
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
    return {
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
    'rejected': dicts (key, split, reason), 'statistics': (split, statistics dict)}.

    All splits go through one branch: every transform has a fixed cost on the DirectRunner,
    so a branch per split would double it."""

    def __init__(self, decoder, label_names: list[str]):
        super().__init__()
        self.process = _Preprocess(decoder, label_names)

    def expand(self, batches):
        outputs = batches | "DecodeAndValidate" >> beam.ParDo(self.process).with_outputs(
            "rejected", "statistics", main="examples"
        )
        statistics = outputs.statistics | "CombineStatistics" >> beam.CombinePerKey(StatisticsCombineFn())
        return {"examples": outputs.examples, "rejected": outputs.rejected, "statistics": statistics}


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
        decoder = ImageDecoder(image_size, channels, resize_method, center_crop, lowres_factor)
    else:
        decoder = VectorDecoder(metadata["feature_names"])
    for split in SPLITS:
        if beamio.shard_paths(os.path.join(output_dir, split)):
            raise ComponentError(f"{output_dir}/{split} already holds shards; write to an empty directory")
    log(f"Preprocess: {examples_dir} ({kind}) -> {output_dir}")

    rejected_path = os.path.join(output_dir, REJECTED_FILE)
    summary_path = os.path.join(output_dir, _SUMMARY_FILE)
    pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    # Ingest's shards come from our own writer: the length CRCs still guard the framing; the
    # data CRCs (half of this pipeline's CRC work, ~7 us per 3 KB record) are not checked.
    patterns = {split: os.path.join(examples_dir, split, "*.tfrecord") for split in SPLITS}
    raw = pipeline | "ReadShards" >> beamio.ReadTFRecordShards(patterns, verify_data=False)
    outputs = raw | "Preprocess" >> PreprocessExamples(decoder, label_names)
    writer = beamio.WriteTFRecordShards(
        {split: os.path.join(output_dir, split) for split in SPLITS}, {split: num_shards for split in SPLITS}
    )
    files = outputs["examples"] | "WriteShards" >> writer
    small_outputs = {"files": files, "rejected": outputs["rejected"], "statistics": outputs["statistics"]}
    small_outputs | "WriteSummary" >> beamio.WriteTaggedJsonLines(summary_path)
    result = beamio.run_pipeline(pipeline)

    summary = beamio.read_tagged_json_lines(summary_path, small_outputs)
    FileSystems.delete([summary_path])
    writer.publish(summary["files"])
    beamio.write_json_lines(summary["rejected"], rejected_path)
    counts = {s: beamio.count_tfrecords(beamio.shard_paths(os.path.join(output_dir, s))) for s in SPLITS}
    records = _check_conservation(metadata, result, counts, len(summary["rejected"]), rejected_path)
    split_statistics = {split: empty_statistics(len(label_names)) for split in SPLITS}
    split_statistics.update(dict(summary["statistics"]))

    schema = build_schema(metadata, decoder, counts, split_statistics)
    statistics_doc = {
        "kind": kind,
        "names": metadata["feature_names"] if kind == "vector" else channel_names(channels),
        "label_names": label_names,
        "records": records,
        "splits": split_statistics,
    }
    Artifact("Schema", schema_dir).write_json(SCHEMA_FILE, schema)
    Artifact("Statistics", statistics_dir).write_json(STATISTICS_FILE, statistics_doc)
    write_statistics_summary(statistics_doc, os.path.join(statistics_dir, "logs"))
    log(f"Preprocess: wrote {counts['train']} train + {counts['eval']} eval, rejected {records['rejected']}")
    _check_rejected_fraction(records, max_rejected_fraction, rejected_path)
    return {"schema": schema, "statistics": statistics_doc, "rejected_path": rejected_path}


def _check_conservation(metadata, result, counts, rejected: int, rejected_path: str) -> dict:
    written = sum(counts.values())
    expected = sum(metadata["counts"].values())
    read = beamio.counter_value(result, "records_read")
    if read is not None and read != expected:
        raise ComponentError(f"Preprocess: Ingest wrote {expected} records but {read} were read")
    if expected != written + rejected:
        raise ComponentError(
            f"Preprocess: read {expected} records but wrote {written} and rejected {rejected} "
            f"({rejected_path}); {expected - written - rejected} were lost"
        )
    return {"read": expected, "written": written, "rejected": rejected}


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
    if train["count"] == 0:
        raise ComponentError("Preprocess: no valid train records, cannot compute the normalization")
    schema.update(
        shape=[len(decoder.feature_names)],
        dtype="float32",
        channels=None,
        feature_names=decoder.feature_names,
        # A constant feature gets std 1 so standardising never divides by zero.
        normalization={"mean": train["mean"], "std": [s if s > 0 else 1.0 for s in train["std"]]},
    )
    return schema


def write_statistics_summary(statistics: dict, logdir: str) -> None:
    """The statistics as a Markdown table, a TensorBoard text summary (tag ``statistics``)."""
    import tensorflow as tf

    lines = [f"records: {statistics['records']}", ""]
    for split, stats in statistics["splits"].items():
        lines += [f"**{split}**: {stats['count']} records, {stats['unlabelled']} unlabelled", "",
                  "| name | mean | std | min | max |", "|---|---|---|---|---|"]
        if stats["count"]:
            for row in zip(statistics["names"], stats["mean"], stats["std"], stats["min"], stats["max"]):
                lines.append("| {} | {:.4g} | {:.4g} | {:.4g} | {:.4g} |".format(*row))
        histogram = ", ".join(f"{name}: {count}" for name, count in zip(statistics["label_names"], stats["label_counts"]))
        lines += ["", f"labels: {histogram or 'none'}", ""]
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        tf.summary.text("statistics", "\n".join(lines), step=0)
    writer.close()


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
