"""Preprocess's schema (what Train and Evaluate read the examples as) and the statistics
summary as a TensorBoard text event file written without TensorFlow."""
from __future__ import annotations

import socket
import time

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.text.summary_v2 import text_pb

from ganpipe.infra import beamio, storage
from ganpipe.components.preprocess.decoders import ImageDecoder

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
