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

This module is the driver and the component; ``decoders`` (image and vector decoding and checks),
``transform`` (the Beam DoFn and composite), ``statistics`` (the combiners' maths) and ``schema``
(the schema and the TensorBoard summary) hold the rest.
"""
from __future__ import annotations

import collections

import apache_beam as beam
from PIL import Image

from ganpipe.components import ingest
from ganpipe.infra import beamio, storage, tfmd
from ganpipe.components import specs
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext
from ganpipe.components.preprocess.decoders import RESIZE_METHODS, ImageDecoder, VectorDecoder
from ganpipe.components.preprocess.schema import build_schema, channel_names, write_statistics_summary
from ganpipe.components.preprocess.statistics import empty_statistics
from ganpipe.components.preprocess.transform import PreprocessExamples

SPLITS = ingest.SPLITS
REJECTED_FILE = "rejected.jsonl"
SCHEMA_FILE = "schema.json"
STATISTICS_FILE = "statistics.json"


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
