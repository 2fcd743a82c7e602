"""``ganpipe verify``: recompute the fingerprint of every live artifact and compare it with the
one recorded at publish time (with the scheme it was recorded with), and check that every served
version a PushedModel recorded is still there. Opens the store read-only and writes nothing.
Artifacts are read through ``storage``, so an artifact root may be any URI it serves."""
from __future__ import annotations

import dataclasses

from ganpipe.infra import storage
from ganpipe.infra.fingerprints import artifact_fingerprint
from ganpipe.pipeline.metadata import LIVE, MetadataStore
from ganpipe.pipeline.runner import run_is_alive


@dataclasses.dataclass
class Problem:
    artifact_id: int
    path: str
    problem: str  # "missing", "fingerprint mismatch" or "served version missing"


def verify(root: str) -> tuple[int, list[Problem]]:
    """(number of live artifacts checked, problems found)."""
    with MetadataStore(root, read_only=True, is_alive=run_is_alive(root)) as store:
        records = store.artifacts(state=LIVE)
    problems = []
    for record in records:
        artifact = record.artifact
        if not storage.directory_exists(artifact.uri):
            problems.append(Problem(artifact.id, artifact.uri, "missing"))
            continue
        if artifact_fingerprint(artifact.uri, record.scheme) != artifact.fingerprint:
            problems.append(Problem(artifact.id, artifact.uri, "fingerprint mismatch"))
        destination = artifact.properties.get("pushed_destination")
        if artifact.properties.get("pushed") and destination and not storage.directory_exists(destination):
            problems.append(Problem(artifact.id, destination, "served version missing"))
    return len(records), problems
