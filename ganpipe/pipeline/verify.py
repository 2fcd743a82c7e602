"""``ganpipe verify``: check every live artifact against what was recorded at publish time: its
files against its manifest (names and sizes), then its fingerprint recomputed (with the scheme it
was recorded with), and that every served version a PushedModel recorded is still there. Opens
the store read-only and writes nothing. Artifacts are read through ``storage``, so an artifact
root may be any URI it serves."""
from __future__ import annotations

import dataclasses

from ganpipe.infra import storage
from ganpipe.infra.fingerprints import artifact_fingerprint
from ganpipe.pipeline.layout import run_is_alive
from ganpipe.pipeline.metadata import LIVE, MetadataStore
from ganpipe.pipeline.publish import manifest_problems


@dataclasses.dataclass
class Problem:
    artifact_id: int
    path: str
    problem: str  # "missing", "files changed (...)", "fingerprint mismatch" or "served version missing"


def verify(root: str) -> tuple[int, list[Problem]]:
    """(number of live artifacts checked, problems found)."""
    with MetadataStore(root, read_only=True, is_alive=run_is_alive(root)) as store:
        records = [(record, store.manifest(record.artifact.id)) for record in store.artifacts(state=LIVE)]
    problems = []
    for record, manifest in records:
        artifact = record.artifact
        if not storage.directory_exists(artifact.uri):
            problems.append(Problem(artifact.id, artifact.uri, "missing"))
            continue
        changed = manifest_problems(artifact.uri, manifest) if manifest is not None else []
        if changed:
            problems.append(Problem(artifact.id, artifact.uri, f"files changed ({', '.join(changed)})"))
        elif artifact_fingerprint(artifact.uri, record.scheme) != artifact.fingerprint:
            problems.append(Problem(artifact.id, artifact.uri, "fingerprint mismatch"))
        destination = artifact.properties.get("pushed_destination")
        if artifact.properties.get("pushed") and destination and not storage.directory_exists(destination):
            problems.append(Problem(artifact.id, destination, "served version missing"))
    return len(records), problems
