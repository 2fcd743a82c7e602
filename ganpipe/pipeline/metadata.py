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

A file SQLite cannot read as a database (overwritten, truncated) is a ``StoreError`` naming the
file and the ways out (``sqlite3 .recover``, or moving it aside), never a raw sqlite traceback.
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
from ganpipe.pipeline.records import (ARTIFACT_QUERY, EXECUTION_QUERY, RUN_QUERY, ArtifactRecord, CacheLookup,
                                      ExecutionRecord, RunRecord, artifact_of, artifact_record, execution_record,
                                      run_record)

STORE_FILE = "metadata.sqlite"
# 1: the original layout (user_version 0); 2: artifacts.fingerprint_scheme (how the fingerprint
# was computed, so `ganpipe verify` recomputes each artifact the way it was recorded);
# 3: artifacts.manifest (JSON: relative path -> size of each content file, written at publish).
SCHEMA_VERSION = 3

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
    fingerprint_scheme INTEGER NOT NULL DEFAULT 1, manifest TEXT);
CREATE INDEX IF NOT EXISTS artifacts_by_uri ON artifacts(uri);
CREATE TABLE IF NOT EXISTS events (
    execution_id INTEGER NOT NULL REFERENCES executions(id),
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    kind TEXT NOT NULL CHECK (kind IN ('input', 'output')), name TEXT NOT NULL,
    PRIMARY KEY (execution_id, kind, name));
CREATE INDEX IF NOT EXISTS events_by_artifact ON events(artifact_id, kind);
"""


# The columns later versions added to the original layout, each added where it is missing (a store
# recovered with `sqlite3 .dump` has its columns but not its user_version).
_ADDED_COLUMNS = (
    ("artifacts", "fingerprint_scheme", "INTEGER NOT NULL DEFAULT 1"),  # version 2
    ("artifacts", "manifest", "TEXT"),  # version 3; NULL: recorded before manifests existed
)
_TABLES = {"pipelines", "runs", "executions", "artifacts", "events"}
# SQLite's result codes for a file that is not a database or whose pages do not add up.
_DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


class StoreError(RuntimeError):
    """The store cannot be used as asked (damaged, written by a newer ganpipe, not there read-only)."""


def damaged_store(path: str, reason: str) -> StoreError:
    """The one line a damaged store gives: what SQLite said and the two ways out."""
    return StoreError(
        f"{path}: damaged metadata store ({reason}). Recover what it holds: sqlite3 {path} .recover "
        f"| sqlite3 {path}.recovered (.dump where .recover fails), mv {path}.recovered {path}, then "
        f"ganpipe gc (it completes the store and removes outputs no row records); "
        f"or move {path} aside, with the artifacts it recorded, to start a new store")


class MetadataStore:
    def __init__(self, root: str, timeout: float = 60.0, read_only: bool = False,
                 is_alive: Callable[[str], bool] | None = None):
        """``is_alive(lock)`` (read-only stores): shows RUNNING runs whose process is gone as ABANDONED."""
        self.path = os.path.join(root, STORE_FILE)
        self.read_only = read_only
        self._is_alive = is_alive
        try:
            self._open(root, timeout)
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorname", None) not in _DAMAGED:
                raise
            raise damaged_store(self.path, str(error)) from error

    def _open(self, root: str, timeout: float) -> None:
        if self.read_only:
            self._db = _connect_read_only(self.path, timeout)
        else:
            os.makedirs(root, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write
            # lock up front and the busy timeout applies (a deferred upgrade could fail at once).
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA foreign_keys = ON")
        # Reads every page (the store is small), so a truncated file is found here, not mid-run.
        verdict = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise damaged_store(self.path, f"quick_check: {verdict}")
        self._check_version(migrate=not self.read_only)
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not tables >= _TABLES:  # a recovered store that lost tables, not a new one
            raise StoreError(f"{self.path}: incomplete store (no table {', '.join(sorted(_TABLES - tables))}); "
                             "`ganpipe gc` opens it for writing and adds them")

    def _check_version(self, migrate: bool) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} was written by a newer ganpipe "
                             f"(this one reads up to {SCHEMA_VERSION}); upgrade ganpipe")
        if migrate and version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Creates a new store at the current version, or brings an older one up to it."""
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:  # another process got here first
                return
            for statement in _SCHEMA.split(";"):  # each IF NOT EXISTS: what a recovery lost comes back
                if statement.strip():
                    db.execute(statement)
            for table, column, definition in _ADDED_COLUMNS:
                if column not in {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
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
        rows = self._db.execute(RUN_QUERY + " ORDER BY runs.id DESC LIMIT ?", (limit or -1,)).fetchall()
        return [self._apparent(run_record(row)) for row in rows]

    def run(self, run_id: int) -> RunRecord | None:
        row = self._db.execute(RUN_QUERY + " WHERE runs.id = ?", (run_id,)).fetchone()
        return self._apparent(run_record(row)) if row else None

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

    def complete_execution(self, execution_id: int, outputs: dict[str, Artifact],
                           manifests: dict[str, dict[str, int]]) -> None:
        """Records the published outputs (setting their ids) with their manifests (content file ->
        size, by output name) and marks the execution COMPLETE."""
        now = time.time()
        with self._write() as db:
            for name, artifact in outputs.items():
                artifact.id = db.execute(
                    "INSERT INTO artifacts (type, uri, fingerprint, properties, state, created, fingerprint_scheme,"
                    " manifest) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (artifact.type, artifact.uri, artifact.fingerprint, _dumps(artifact.properties), LIVE, now,
                     fingerprints.SCHEME, _dumps(manifests[name]))).lastrowid
            _add_events(db, execution_id, "output", outputs)
            db.execute("UPDATE executions SET state = ?, ended = ? WHERE id = ?", (COMPLETE, now, execution_id))

    def fail_execution(self, execution_id: int, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE executions SET state = ?, ended = ?, error = ? WHERE id = ?",
                       (FAILED, time.time(), error, execution_id))

    def find_cached(self, pipeline: str, cache_key: str,
                    problem: Callable[[Artifact, dict[str, int] | None], str | None]) -> CacheLookup:
        """The newest COMPLETE execution with ``cache_key`` whose outputs are all LIVE and whole
        (``problem(artifact, manifest)`` None), and why each newer one with damaged outputs was
        passed over."""
        rows = self._db.execute(
            EXECUTION_QUERY + " WHERE executions.cache_key = ? AND executions.state = ? AND pipelines.name = ?"
            " ORDER BY executions.id DESC", (cache_key, COMPLETE, pipeline)).fetchall()
        damaged = []
        for row in rows:
            outputs = self.execution_artifacts(row["id"], "output")
            if any(self.artifact(a.id).state != LIVE for a in outputs.values()):
                continue
            problems = [p for p in (problem(a, self.manifest(a.id)) for a in outputs.values()) if p]
            if not problems:
                return CacheLookup(execution_record(row), outputs, damaged)
            damaged.append(f"outputs of execution {row['id']} damaged: {'; '.join(problems)}")
        return CacheLookup(None, {}, damaged)

    def claim_cached(self, run_id: int, pipeline: str, cache_key: str, inputs: dict[str, Artifact],
                     problem: Callable[[Artifact, dict[str, int] | None], str | None]) -> CacheLookup:
        """``find_cached`` and, on a hit, the CACHED execution linking this run to its outputs
        (``lookup.execution_id``), in one transaction. `ganpipe gc` marks artifacts DELETED in its
        own transaction before it touches their files, so a hit can never be an artifact gc has
        started to remove."""
        with self._write() as db:
            lookup = self.find_cached(pipeline, cache_key, problem)
            if lookup.source:
                lookup.execution_id = self._record_cached(db, run_id, lookup.source, inputs, lookup.outputs)
        return lookup

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
        row = self._db.execute(EXECUTION_QUERY + " WHERE executions.id = ?", (execution_id,)).fetchone()
        return execution_record(row) if row else None

    def executions(self, run_id: int | None = None, state: str | None = None) -> list[ExecutionRecord]:
        rows = self._db.execute(
            EXECUTION_QUERY + " WHERE (? IS NULL OR executions.run_id = ?) AND (? IS NULL OR executions.state = ?)"
            " ORDER BY executions.id", (run_id, run_id, state, state)).fetchall()
        return [execution_record(row) for row in rows]

    def execution_artifacts(self, execution_id: int, kind: str) -> dict[str, Artifact]:
        """The inputs or outputs (``kind``) of an execution, by name."""
        rows = self._db.execute(
            "SELECT events.name, artifacts.* FROM events JOIN artifacts ON artifacts.id = events.artifact_id"
            " WHERE events.execution_id = ? AND events.kind = ? ORDER BY events.name", (execution_id, kind))
        return {row["name"]: artifact_of(row) for row in rows}

    def consumers(self, artifact_id: int) -> list[ExecutionRecord]:
        rows = self._db.execute(
            EXECUTION_QUERY + " JOIN events ON events.execution_id = executions.id"
            " WHERE events.artifact_id = ? AND events.kind = 'input' ORDER BY executions.id", (artifact_id,))
        return [execution_record(row) for row in rows]

    # -- artifacts ----------------------------------------------------------------------------

    def artifact(self, artifact_id: int) -> ArtifactRecord | None:
        row = self._db.execute(ARTIFACT_QUERY + " WHERE artifacts.id = ?", (artifact_id,)).fetchone()
        return artifact_record(row) if row else None

    def manifest(self, artifact_id: int) -> dict[str, int] | None:
        """Content file -> size recorded at publish; None for artifacts from before manifests."""
        row = self._db.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        text = row["manifest"] if "manifest" in row.keys() else None  # a store opened read-only before version 3
        return None if text is None else json.loads(text)

    def has_executions(self) -> bool:
        """False for a new (or zero-length) store: nothing recorded yet."""
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'executions'").fetchone():
            return False
        return self._db.execute("SELECT 1 FROM executions LIMIT 1").fetchone() is not None

    def artifact_at(self, path: str) -> ArtifactRecord | None:
        """The artifact whose directory is ``path`` or contains it; for a published SavedModel
        (outside the artifact tree), the PushedModel that recorded it as its destination. A local
        path or a URI."""
        path = probe = storage.normalize(path)
        while True:
            row = self._db.execute(ARTIFACT_QUERY + " WHERE artifacts.uri = ? ORDER BY artifacts.id DESC",
                                   (probe,)).fetchone()
            if row:
                return artifact_record(row)
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
            ARTIFACT_QUERY + " WHERE (? IS NULL OR pipelines.name = ?) AND (? IS NULL OR artifacts.type = ?)"
            " AND (? IS NULL OR artifacts.state = ?) ORDER BY artifacts.id DESC",
            (pipeline, pipeline, type, type, state, state)).fetchall()
        return [artifact_record(row) for row in rows]

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
        """Every artifact an execution of a RUNNING run consumed or produced (for a read-only store
        given ``is_alive``: of the runs whose process is still there)."""
        rows = self._db.execute(
            "SELECT DISTINCT events.artifact_id, runs.lock FROM events JOIN executions ON executions.id ="
            " events.execution_id JOIN runs ON runs.id = executions.run_id WHERE runs.state = ?", (RUNNING,))
        return {row[0] for row in rows if self._is_alive is None or self._is_alive(row[1])}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _add_events(db: sqlite3.Connection, execution_id: int, kind: str, artifacts: dict[str, Artifact]) -> None:
    db.executemany("INSERT INTO events (execution_id, artifact_id, kind, name) VALUES (?, ?, ?, ?)",
                   [(execution_id, artifact.id, kind, name) for name, artifact in artifacts.items()])


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
