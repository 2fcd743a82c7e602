"""Resolvers: inputs picked from the metadata store before a step's cache key is computed.

``served_model`` gives Evaluate the model it must be no worse than: the version served under
``export.model_name`` (the newest version directory, what TF Serving serves), as the PushedModel
artifact that pushed it, whichever pipeline of this store that was. Resolved first and passed as
an input, it is in Evaluate's cache key: a newly served version makes Evaluate measure the
candidate beside it again, so no change of data, classifier or settings skips the comparison.
"""
from __future__ import annotations

from typing import Any, Mapping

from ganpipe.components import specs
from ganpipe.components.base import Artifact
from ganpipe.infra import storage
from ganpipe.pipeline.metadata import LIVE, ArtifactRecord, MetadataStore


def served_model(store: MetadataStore, pipeline: str, inputs: dict[str, Artifact], parameters: dict[str, Any], *,
                 root: str, sections: Mapping[str, dict]) -> Artifact | None:
    """The PushedModel of the newest version under this pipeline's export model directory, or
    None when nothing is served or no run of this store pushed it.

    The candidate's own served version is skipped for the one served before it, the comparison
    that let it be pushed: re-running an unchanged pipeline after its push is a cache hit, not a
    measurement of the model beside itself. Of several PushedModels naming a version, the one
    that pushed it (not a later run that found it already served), so the input stays the same
    while the served version does.
    """
    from ganpipe.components.export import newest_first  # TensorFlow: when run

    directory = served_directory(root, sections, pipeline)
    pushes = [record for record in reversed(store.artifacts(type="PushedModel", state=LIVE))
              if record.artifact.properties.get("pushed")]
    candidate = inputs.get("model")
    for version in newest_first(directory):
        destination = storage.normalize(storage.join(directory, str(version)))
        named = [record for record in pushes
                 if storage.normalize(record.artifact.properties.get("pushed_destination") or "") == destination]
        pusher = next((r for r in named if not r.artifact.properties.get("already_served")), named[0] if named else None)
        if pusher is None or candidate is None or _pushed_model(store, pusher) != candidate.fingerprint:
            return None if pusher is None else pusher.artifact
    return None


def served_directory(root: str, sections: Mapping[str, dict], pipeline: str) -> str:
    """Where the versions served under the pipeline's ``export.model_name`` live."""
    from ganpipe.components.export import export_base, versions_directory  # TensorFlow: when run

    export = sections.get("export") or specs.EXPORT.resolve_parameters({}, "export")
    return versions_directory(export_base(root, export["export_base"]), export["model_name"] or pipeline)


def served_version(directory: str, candidate_fingerprint: str) -> tuple[int, str] | None:
    """Without a metadata store (a compiled step): ``served_model``'s version, read from the
    versions themselves: the newest under ``directory``, the candidate's own skipped for the one
    served before it (each version's ``export.json`` names the model it serves); (version, its
    directory), or None when nothing else is served."""
    from ganpipe.components.export import newest_first, read_extra  # TensorFlow: when run

    for version in newest_first(directory):
        destination = storage.join(directory, str(version))
        if read_extra(destination, "export.json").get("model_fingerprint") != candidate_fingerprint:
            return version, destination
    return None


def _pushed_model(store: MetadataStore, pusher: ArtifactRecord) -> str | None:
    model = store.execution_artifacts(pusher.producer_id, "input").get("model")
    return None if model is None else model.fingerprint
