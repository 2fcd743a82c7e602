"""The metadata store's records: what a row of its runs, executions and artifacts reads as, and the
queries that read them (an artifact with the execution that computed it)."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from ganpipe.infra import fingerprints
from ganpipe.components.base import Artifact


@dataclasses.dataclass
class RunRecord:
    id: int
    pipeline: str
    state: str
    config: dict[str, Any]
    lock: str
    started: float
    ended: float | None
    error: str | None


@dataclasses.dataclass
class ExecutionRecord:
    id: int
    run_id: int
    pipeline: str
    component: str
    state: str
    parameters: dict[str, Any]
    cache_key: str
    code_fingerprint: str
    cached_from: int | None
    started: float
    ended: float | None
    error: str | None


@dataclasses.dataclass
class ArtifactRecord:
    """A stored artifact plus where it came from (the execution that computed it)."""

    artifact: Artifact
    state: str
    pipeline: str
    component: str
    output: str
    producer_id: int
    scheme: int = fingerprints.SCHEME  # how ``artifact.fingerprint`` was computed


@dataclasses.dataclass
class CacheLookup:
    """What a cache lookup found: the execution to reuse (None: none is whole) with its outputs,
    the CACHED execution recorded for a claimed hit, and the damage that ruled out newer ones."""

    source: ExecutionRecord | None
    outputs: dict[str, Artifact]
    damaged: list[str]
    execution_id: int | None = None


RUN_QUERY = ("SELECT runs.*, pipelines.name AS pipeline FROM runs"
             " JOIN pipelines ON pipelines.id = runs.pipeline_id")
EXECUTION_QUERY = ("SELECT executions.*, pipelines.name AS pipeline FROM executions"
                   " JOIN runs ON runs.id = executions.run_id JOIN pipelines ON pipelines.id = runs.pipeline_id")
# An artifact's origin is the output event of the execution that computed it (not a cache hit's).
ARTIFACT_QUERY = (
    "SELECT artifacts.*, events.name AS output, executions.id AS producer_id,"
    " executions.component AS component, pipelines.name AS pipeline FROM artifacts"
    " JOIN events ON events.artifact_id = artifacts.id AND events.kind = 'output'"
    " JOIN executions ON executions.id = events.execution_id AND executions.cached_from IS NULL"
    " JOIN runs ON runs.id = executions.run_id JOIN pipelines ON pipelines.id = runs.pipeline_id")


def run_record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(id=row["id"], pipeline=row["pipeline"], state=row["state"], config=json.loads(row["config"]),
                     lock=row["lock"], started=row["started"], ended=row["ended"], error=row["error"])


def execution_record(row: sqlite3.Row) -> ExecutionRecord:
    return ExecutionRecord(
        id=row["id"], run_id=row["run_id"], pipeline=row["pipeline"], component=row["component"],
        state=row["state"], parameters=json.loads(row["parameters"]), cache_key=row["cache_key"],
        code_fingerprint=row["code_fingerprint"], cached_from=row["cached_from"], started=row["started"],
        ended=row["ended"], error=row["error"])


def fingerprint_scheme(row: sqlite3.Row) -> int:
    return row["fingerprint_scheme"] if "fingerprint_scheme" in row.keys() else fingerprints.WHOLE_TREE


def artifact_of(row: sqlite3.Row) -> Artifact:
    return Artifact(type=row["type"], uri=row["uri"], properties=json.loads(row["properties"]),
                    fingerprint=row["fingerprint"], id=row["id"])


def artifact_record(row: sqlite3.Row) -> ArtifactRecord:
    return ArtifactRecord(artifact=artifact_of(row), state=row["state"], pipeline=row["pipeline"],
                          component=row["component"], output=row["output"], producer_id=row["producer_id"],
                          scheme=fingerprint_scheme(row))
