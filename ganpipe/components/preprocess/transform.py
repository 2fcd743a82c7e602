"""Preprocess's Beam transform: decode and validate each raw example, list the rejected ones with
where they came from, and combine the statistics (``PreprocessExamples``)."""
from __future__ import annotations

import collections

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from ganpipe.infra import beamio
from ganpipe.components.preprocess.statistics import StatisticsCombineFn, partial_statistics
from ganpipe.components.sources.common import Rejected
from ganpipe.infra.example_proto import Example

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
