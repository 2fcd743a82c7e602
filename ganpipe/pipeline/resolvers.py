"""Resolvers: inputs picked from the metadata store before a step's cache key is computed.

``latest_blessed`` gives Evaluate its baseline, the Blessing that "no worse than the last blessed
model" compares with. Because it is resolved first and passed as an input, its fingerprint is in
Evaluate's cache key: when a better model is blessed, re-evaluating an older model is no cache
hit with a stale ``blessed: true``; it is compared with the new baseline (and refused if worse).
"""
from __future__ import annotations

from typing import Any

from ganpipe.components.base import Artifact
from ganpipe.pipeline.metadata import LIVE, MetadataStore


def latest_blessed(store: MetadataStore, pipeline: str, inputs: dict[str, Artifact],
                   parameters: dict[str, Any]) -> Artifact | None:
    """The newest live blessed Blessing of another model of ``pipeline`` measured the same way as
    this Evaluate will measure: produced from the same feature model and evaluation data (equal
    fingerprints) with the same ``num_samples`` and ``main_metric`` settings. The model's own
    earlier blessing is no baseline: comparing it with itself would only make every re-run of an
    unchanged pipeline evaluate again."""
    for record in store.artifacts(pipeline, "Blessing", LIVE):
        if record.artifact.properties.get("blessed") is not True:
            continue
        producer = store.execution(record.producer_id)
        used = store.execution_artifacts(record.producer_id, "input")
        if _same(used.get("model"), inputs.get("model")):
            continue
        if all(_same(used.get(name), inputs.get(name)) for name in ("classifier", "examples")) and all(
                producer.parameters.get(key) == parameters.get(key) for key in ("num_samples", "main_metric")):
            return record.artifact
    return None


def _same(used: Artifact | None, current: Artifact | None) -> bool:
    return used is not None and current is not None and used.fingerprint == current.fingerprint
