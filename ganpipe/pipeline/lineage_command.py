"""``ganpipe lineage``: where an artifact came from and what used it."""
from __future__ import annotations

import click

from ganpipe.pipeline.cli_common import UsageFailure, open_store, root_option
from ganpipe.pipeline.console import echo
from ganpipe.pipeline.metadata import CACHED, ArtifactRecord, MetadataStore


@click.command()
@click.argument("target")
@root_option
def lineage(target, root, metadata) -> None:
    """Where an artifact came from and what used it. TARGET is an artifact id or a path inside one."""
    with open_store(root, metadata) as store:
        record = store.artifact(int(target)) if target.isdigit() else store.artifact_at(target)
        if record is None:
            raise UsageFailure(f"{target}: not an artifact recorded in {store.path}")
        echo(_artifact_line(record))
        echo(f"  fingerprint {record.artifact.fingerprint}")
        echo("Upstream:")
        _print_upstream(store, record, depth=1, seen=set())
        echo("Downstream:")
        _print_downstream(store, record, depth=1, seen=set())


def _artifact_line(record: ArtifactRecord) -> str:
    deleted = "  [deleted by gc]" if record.state != "LIVE" else ""
    return f"artifact {record.artifact.id} {record.artifact.type} {record.artifact.uri}{deleted}"


def _print_upstream(store: MetadataStore, record: ArtifactRecord, depth: int, seen: set[int]) -> None:
    producer = store.execution(record.producer_id)
    indent = "  " * depth
    echo(f"{indent}<- {producer.component} execution {producer.id} (run {producer.run_id}, {producer.state})")
    if producer.id in seen:
        return
    seen.add(producer.id)
    for name, artifact in store.execution_artifacts(producer.id, "input").items():
        upstream = store.artifact(artifact.id)
        echo(f"{indent}   {name}: {_artifact_line(upstream)}")
        _print_upstream(store, upstream, depth + 2, seen)


def _print_downstream(store: MetadataStore, record: ArtifactRecord, depth: int, seen: set[int]) -> None:
    indent = "  " * depth
    consumers = store.consumers(record.artifact.id)
    reused_in = sorted({c.run_id for c in consumers if c.state == CACHED})
    if not consumers and depth == 1:
        echo(f"{indent}(not used by any execution yet)")
    for consumer in (c for c in consumers if c.state != CACHED):
        echo(f"{indent}-> {consumer.component} execution {consumer.id} (run {consumer.run_id}, {consumer.state})")
        if consumer.id in seen:
            continue
        seen.add(consumer.id)
        for name, artifact in store.execution_artifacts(consumer.id, "output").items():
            downstream = store.artifact(artifact.id)
            echo(f"{indent}   {name}: {_artifact_line(downstream)}")
            _print_downstream(store, downstream, depth + 2, seen)
    if reused_in:
        echo(f"{indent}(also consumed by cache hits in runs {', '.join(map(str, reused_in))})")
