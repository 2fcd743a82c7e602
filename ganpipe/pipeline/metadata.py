"""The metadata store: an SQLite file in the pipeline root, in the spirit of ML Metadata.

Pipelines have runs, runs have executions (one per component), executions consume and produce
artifacts through events, so lineage can be walked both ways. Every write is one
``BEGIN IMMEDIATE`` transaction in WAL mode with a busy timeout: concurrent runs on one root wait
for each other's short writes instead of failing or corrupting the file.

The layout's version is ``PRAGMA user_version`` (``SCHEMA_VERSION``); opening an older store for
writing migrates it in one transaction, a newer one is refused. Read-only commands open the store
with ``read_only=True`` (SQLite ``mode=ro``; ``immutable`` when even the WAL index cannot be
created, e.g. on a read-only root) and never write: runs whose process is gone are shown as
ABANDONED without being marked.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
import urllib.parse
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ganpipe.infra import fingerprints, storage
from ganpipe.components.base import Artifact

STORE_FILE = "metadata.sqlite"
# 1: the original layout (user_version 0); 2: artifacts.fingerprint_scheme (how the fingerprint
# was computed, so `ganpipe verify` recomputes each artifact the way it was recorded).
SCHEMA_VERSION = 2

# Run and execution states.
RUNNING, COMPLETE, CACHED, FAILED, ABANDONED = "RUNNING", "COMPLETE", "CACHED", "FAILED", "ABANDONED"
# Artifact states: DELETED artifacts keep their rows so lineage stays whole after `ganpipe gc`.
LIVE, DELETED = "LIVE", "DELETED"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pipelines (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, pipeline_id INTEGER NOT NULL REFERENCES pipelines(id),
    state TEXT NOT NULL, config TEXT NOT NULL, lock TEXT NOT NULL,
    started REAL NOT NULL, ended REAL, error TEXT);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),
    component TEXT NOT NULL, state TEXT NOT NULL, parameters TEXT NOT NULL,
    cache_key TEXT NOT NULL, code_fingerprint TEXT NOT NULL,
    cached_from INTEGER REFERENCES executions(id),
    started REAL NOT NULL, ended REAL, error TEXT);
CREATE INDEX IF NOT EXISTS executions_by_key ON executions(cache_key, state);
CREATE INDEX IF NOT EXISTS executions_by_run ON executions(run_id);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY, type TEXT NOT NULL, uri TEXT NOT NULL, fingerprint TEXT NOT NULL,
    properties TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    fingerprint_scheme INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS artifacts_by_uri ON artifacts(uri);
CREATE TABLE IF NOT EXISTS events (
    execution_id INTEGER NOT NULL REFERENCES executions(id),
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    kind TEXT NOT NULL CHECK (kind IN ('input', 'output')), name TEXT NOT NULL,
    PRIMARY KEY (execution_id, kind, name));
CREATE INDEX IF NOT EXISTS events_by_artifact ON events(artifact_id, kind);
"""


# Each entry takes a store from version i + 1 to i + 2 (index 0: 1 -> 2).
_MIGRATIONS = (
    "ALTER TABLE artifacts ADD COLUMN fingerprint_scheme INTEGER NOT NULL DEFAULT 1",
)


class StoreError(RuntimeError):
    """The store cannot be used as asked (written by a newer ganpipe, or not there read-only)."""


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


class MetadataStore:
    def __init__(self, root: str, timeout: float = 60.0, read_only: bool = False,
                 is_alive: Callable[[str], bool] | None = None):
        """``is_alive(lock)`` (read-only stores): shows RUNNING runs whose process is gone as ABANDONED."""
        self.path = os.path.join(root, STORE_FILE)
        self.read_only = read_only
        self._is_alive = is_alive
        if read_only:
            self._db = _connect_read_only(self.path, timeout)
            self._check_version(migrate=False)
            return
        os.makedirs(root, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write
        # lock up front and the busy timeout applies (a deferred upgrade could fail at once).
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._check_version(migrate=True)

    def _check_version(self, migrate: bool) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} was written by a newer ganpipe "
                             f"(this one reads up to {SCHEMA_VERSION}); upgrade ganpipe")
        if migrate and version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Creates a new store at the current version, or brings an older one up to it."""
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:  # another process got here first
                return
            legacy = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'artifacts'").fetchone()
            if not legacy:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            else:
                for statement in _MIGRATIONS[max(version, 1) - 1:]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "MetadataStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, pipeline: str, config: dict[str, Any], lock: str) -> int:
        """``lock`` names a file the running process holds locked: see ``reap_abandoned``."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO pipelines (name, created) VALUES (?, ?)", (pipeline, time.time()))
            pipeline_id = db.execute("SELECT id FROM pipelines WHERE name = ?", (pipeline,)).fetchone()[0]
            return db.execute(
                "INSERT INTO runs (pipeline_id, state, config, lock, started) VALUES (?, ?, ?, ?, ?)",
                (pipeline_id, RUNNING, _dumps(config), lock, time.time())).lastrowid

    def finish_run(self, run_id: int, state: str, error: str | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET state = ?, ended = ?, error = ? WHERE id = ?",
                       (state, time.time(), error, run_id))

    def reap_abandoned(self, is_alive: Callable[[str], bool]) -> list[int]:
        """Marks RUNNING runs whose process is gone (``is_alive(lock)`` false) ABANDONED, with
        their RUNNING executions, so a killed run's half-done work is never taken as a result."""
        candidates = self._db.execute("SELECT id, lock FROM runs WHERE state = ?", (RUNNING,)).fetchall()
        dead = [row["id"] for row in candidates if not is_alive(row["lock"])]
        if not dead:
            return []
        with self._write() as db:
            for run_id in dead:
                # The state check makes this a no-op for a run that finished since we looked.
                updated = db.execute("UPDATE runs SET state = ?, ended = ?, error = ? WHERE id = ? AND state = ?",
                                     (ABANDONED, time.time(), "the run's process ended without finishing",
                                      run_id, RUNNING)).rowcount
                if updated:
                    db.execute("UPDATE executions SET state = ?, error = ? WHERE run_id = ? AND state = ?",
                               (ABANDONED, "the run's process ended during this execution", run_id, RUNNING))
        return dead

    def runs(self, limit: int | None = None) -> list[RunRecord]:
        rows = self._db.execute(_RUN_QUERY + " ORDER BY runs.id DESC LIMIT ?", (limit or -1,)).fetchall()
        return [self._apparent(_run(row)) for row in rows]

    def run(self, run_id: int) -> RunRecord | None:
        row = self._db.execute(_RUN_QUERY + " WHERE runs.id = ?", (run_id,)).fetchone()
        return self._apparent(_run(row)) if row else None

    def _apparent(self, run: RunRecord) -> RunRecord:
        """What ``reap_abandoned`` would make of ``run``, for a store that may not write it."""
        if run.state == RUNNING and self._is_alive is not None and not self._is_alive(run.lock):
            return dataclasses.replace(run, state=ABANDONED, error="the run's process ended without finishing")
        return run

    # -- executions ---------------------------------------------------------------------------

    def start_execution(self, run_id: int, component: str, parameters: dict[str, Any], cache_key: str,
                        code_fingerprint: str, inputs: dict[str, Artifact]) -> int:
        with self._write() as db:
            execution_id = db.execute(
                "INSERT INTO executions (run_id, component, state, parameters, cache_key, code_fingerprint,"
                " started) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, component, RUNNING, _dumps(parameters), cache_key, code_fingerprint, time.time())
            ).lastrowid
            _add_events(db, execution_id, "input", inputs)
        return execution_id

    def complete_execution(self, execution_id: int, outputs: dict[str, Artifact]) -> None:
        """Records the published outputs (setting their ids) and marks the execution COMPLETE."""
        now = time.time()
        with self._write() as db:
            for artifact in outputs.values():
                artifact.id = db.execute(
                    "INSERT INTO artifacts (type, uri, fingerprint, properties, state, created, fingerprint_scheme)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (artifact.type, artifact.uri, artifact.fingerprint, _dumps(artifact.properties), LIVE, now,
                     fingerprints.SCHEME)).lastrowid
            _add_events(db, execution_id, "output", outputs)
            db.execute("UPDATE executions SET state = ?, ended = ? WHERE id = ?", (COMPLETE, now, execution_id))

    def fail_execution(self, execution_id: int, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE executions SET state = ?, ended = ?, error = ? WHERE id = ?",
                       (FAILED, time.time(), error, execution_id))

    def claim_cached(self, run_id: int, pipeline: str, cache_key: str, inputs: dict[str, Artifact],
                     present: Callable[[Artifact], bool]) -> tuple[ExecutionRecord, dict[str, Artifact], int] | None:
        """A cache hit, found and recorded in one transaction: the newest COMPLETE execution with
        ``cache_key`` whose outputs are all LIVE and ``present``, and the CACHED execution linking
        this run to them. `ganpipe gc` marks artifacts DELETED in its own transaction before it
        touches their files, so a hit can never be an artifact gc has started to remove."""
        with self._write() as db:
            rows = db.execute(
                _EXECUTION_QUERY + " WHERE executions.cache_key = ? AND executions.state = ? AND pipelines.name = ?"
                " ORDER BY executions.id DESC", (cache_key, COMPLETE, pipeline)).fetchall()
            for row in rows:
                outputs = self.execution_artifacts(row["id"], "output")
                states = {self.artifact(a.id).state for a in outputs.values()}
                if states <= {LIVE} and all(present(a) for a in outputs.values()):
                    source = _execution(row)
                    return source, outputs, self._record_cached(db, run_id, source, inputs, outputs)
        return None

    @staticmethod
    def _record_cached(db: sqlite3.Connection, run_id: int, source: ExecutionRecord, inputs: dict[str, Artifact],
                       outputs: dict[str, Artifact]) -> int:
        now = time.time()
        execution_id = db.execute(
            "INSERT INTO executions (run_id, component, state, parameters, cache_key, code_fingerprint,"
            " cached_from, started, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, source.component, CACHED, _dumps(source.parameters), source.cache_key,
             source.code_fingerprint, source.id, now, now)).lastrowid
        _add_events(db, execution_id, "input", inputs)
        _add_events(db, execution_id, "output", outputs)
        return execution_id

    def execution(self, execution_id: int) -> ExecutionRecord | None:
        row = self._db.execute(_EXECUTION_QUERY + " WHERE executions.id = ?", (execution_id,)).fetchone()
        return _execution(row) if row else None

    def executions(self, run_id: int | None = None, state: str | None = None) -> list[ExecutionRecord]:
        rows = self._db.execute(
            _EXECUTION_QUERY + " WHERE (? IS NULL OR executions.run_id = ?) AND (? IS NULL OR executions.state = ?)"
            " ORDER BY executions.id", (run_id, run_id, state, state)).fetchall()
        return [_execution(row) for row in rows]

    def execution_artifacts(self, execution_id: int, kind: str) -> dict[str, Artifact]:
        """The inputs or outputs (``kind``) of an execution, by name."""
        rows = self._db.execute(
            "SELECT events.name, artifacts.* FROM events JOIN artifacts ON artifacts.id = events.artifact_id"
            " WHERE events.execution_id = ? AND events.kind = ? ORDER BY events.name", (execution_id, kind))
        return {row["name"]: _artifact(row) for row in rows}

    def consumers(self, artifact_id: int) -> list[ExecutionRecord]:
        rows = self._db.execute(
            _EXECUTION_QUERY + " JOIN events ON events.execution_id = executions.id"
            " WHERE events.artifact_id = ? AND events.kind = 'input' ORDER BY executions.id", (artifact_id,))
        return [_execution(row) for row in rows]

    # -- artifacts ----------------------------------------------------------------------------

    def artifact(self, artifact_id: int) -> ArtifactRecord | None:
        row = self._db.execute(_ARTIFACT_QUERY + " WHERE artifacts.id = ?", (artifact_id,)).fetchone()
        return _artifact_record(row) if row else None

    def artifact_at(self, path: str) -> ArtifactRecord | None:
        """The artifact whose directory is ``path`` or contains it; for a published SavedModel
        (outside the artifact tree), the PushedModel that recorded it as its destination. A local
        path or a URI."""
        path = probe = storage.normalize(path)
        while True:
            row = self._db.execute(_ARTIFACT_QUERY + " WHERE artifacts.uri = ? ORDER BY artifacts.id DESC",
                                   (probe,)).fetchone()
            if row:
                return _artifact_record(row)
            parent = storage.dirname(probe)
            if parent == probe:
                break
            probe = parent
        for record in self.artifacts(type="PushedModel"):
            destination = record.artifact.properties.get("pushed_destination")
            if destination and (path == destination or path.startswith(storage.join(destination, ""))):
                return record
        return None

    def artifacts(self, pipeline: str | None = None, type: str | None = None,
                  state: str | None = None) -> list[ArtifactRecord]:
        """Computed artifacts, newest first, optionally of one pipeline, type or state."""
        rows = self._db.execute(
            _ARTIFACT_QUERY + " WHERE (? IS NULL OR pipelines.name = ?) AND (? IS NULL OR artifacts.type = ?)"
            " AND (? IS NULL OR artifacts.state = ?) ORDER BY artifacts.id DESC",
            (pipeline, pipeline, type, type, state, state)).fetchall()
        return [_artifact_record(row) for row in rows]

    def mark_deleted(self, artifact_ids: list[int], protected: Callable[["MetadataStore"], set[int]]) -> list[int]:
        """Marks the artifacts DELETED in one transaction, except those in ``protected(self)``,
        evaluated inside it (what running runs use, computed after any cache hit they recorded);
        returns the ids marked."""
        with self._write() as db:
            keep = protected(self)
            marked = [i for i in artifact_ids if i not in keep]
            db.executemany("UPDATE artifacts SET state = ? WHERE id = ?", [(DELETED, i) for i in marked])
        return marked

    def artifacts_of_running_runs(self) -> set[int]:
        """Every artifact an execution of a RUNNING run consumed or produced."""
        rows = self._db.execute(
            "SELECT DISTINCT events.artifact_id FROM events JOIN executions ON executions.id = events.execution_id"
            " JOIN runs ON runs.id = executions.run_id WHERE runs.state = ?", (RUNNING,))
        return {row[0] for row in rows}


_RUN_QUERY = ("SELECT runs.*, pipelines.name AS pipeline FROM runs"
              " JOIN pipelines ON pipelines.id = runs.pipeline_id")
_EXECUTION_QUERY = ("SELECT executions.*, pipelines.name AS pipeline FROM executions"
                    " JOIN runs ON runs.id = executions.run_id JOIN pipelines ON pipelines.id = runs.pipeline_id")
# An artifact's origin is the output event of the execution that computed it (not a cache hit's).
_ARTIFACT_QUERY = (
    "SELECT artifacts.*, events.name AS output, executions.id AS producer_id,"
    " executions.component AS component, pipelines.name AS pipeline FROM artifacts"
    " JOIN events ON events.artifact_id = artifacts.id AND events.kind = 'output'"
    " JOIN executions ON executions.id = events.execution_id AND executions.cached_from IS NULL"
    " JOIN runs ON runs.id = executions.run_id JOIN pipelines ON pipelines.id = runs.pipeline_id")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _add_events(db: sqlite3.Connection, execution_id: int, kind: str, artifacts: dict[str, Artifact]) -> None:
    db.executemany("INSERT INTO events (execution_id, artifact_id, kind, name) VALUES (?, ?, ?, ?)",
                   [(execution_id, artifact.id, kind, name) for name, artifact in artifacts.items()])


def _run(row: sqlite3.Row) -> RunRecord:
    return RunRecord(id=row["id"], pipeline=row["pipeline"], state=row["state"], config=json.loads(row["config"]),
                     lock=row["lock"], started=row["started"], ended=row["ended"], error=row["error"])


def _execution(row: sqlite3.Row) -> ExecutionRecord:
    return ExecutionRecord(
        id=row["id"], run_id=row["run_id"], pipeline=row["pipeline"], component=row["component"],
        state=row["state"], parameters=json.loads(row["parameters"]), cache_key=row["cache_key"],
        code_fingerprint=row["code_fingerprint"], cached_from=row["cached_from"], started=row["started"],
        ended=row["ended"], error=row["error"])


def _connect_read_only(path: str, timeout: float) -> sqlite3.Connection:
    """``mode=ro``; where SQLite cannot create the WAL index (a read-only directory), the store is
    read as ``immutable``, which is right there: nothing can write it either."""
    if not os.path.isfile(path):
        raise StoreError(f"{path}: no such store")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path))
    for options in ("?mode=ro", "?mode=ro&immutable=1"):
        db = sqlite3.connect(uri + options, uri=True, timeout=timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            db.close()
    raise StoreError(f"{path}: cannot be opened read-only")


def fingerprint_scheme(row: sqlite3.Row) -> int:
    return row["fingerprint_scheme"] if "fingerprint_scheme" in row.keys() else fingerprints.WHOLE_TREE


def _artifact(row: sqlite3.Row) -> Artifact:
    return Artifact(type=row["type"], uri=row["uri"], properties=json.loads(row["properties"]),
                    fingerprint=row["fingerprint"], id=row["id"])


def _artifact_record(row: sqlite3.Row) -> ArtifactRecord:
    return ArtifactRecord(artifact=_artifact(row), state=row["state"], pipeline=row["pipeline"],
                          component=row["component"], output=row["output"], producer_id=row["producer_id"],
                          scheme=fingerprint_scheme(row))
