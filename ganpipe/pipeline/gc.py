"""``ganpipe gc``: find and delete what no longer serves a pipeline under a root.

Kept, with everything upstream of it (its lineage stays whole):

- for each pipeline, component and output, the newest ``keep_last`` live artifacts;
- for each pipeline, the newest blessed Blessing (the baseline the next Evaluate compares with);
- every PushedModel whose served version still exists (under ``serving/`` or its export base);
- everything a running run has consumed or produced so far (checked in the same store
  transaction that marks the rest DELETED, so gc can run beside a training run);
- the staging directory of a resumable step (a killed Train's checkpoints) unless
  ``include_partial``, and any staging directory whose cache-key lock a run holds.

Deleted: superseded artifacts (their rows stay, marked DELETED, so lineage still names them),
published directories that were never recorded (a crash between publish and the metadata
commit), staging directories of failed or killed attempts, stale ``.incoming-*`` exports of
executions that are no longer running, TensorBoard views whose targets are gone, and lock files
no process holds. ``older_than`` (seconds) spares anything newer.

Order, so a gc killed at any instant leaves nothing half-deleted that a run could take: artifacts
are marked DELETED first (a DELETED artifact is never a cache hit), then each local directory is
moved into ``<root>/.trash/`` with one atomic rename, then the trash is deleted. On a remote
artifact root (no rename) the marked directories are deleted in place. A later gc finishes what a
killed one started (DELETED artifacts still present, leftovers in the trash).

``root`` is the local metadata directory (the store, the locks, the trash); the artifact roots
are found from the recorded artifacts (``<artifact root>/<pipeline>/<Component>/<output>/<id>``)
and may be any URI ``storage`` serves. Staging directories, locks and TensorBoard views exist on
local roots only.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
import uuid

from ganpipe.components import specs
from ganpipe.infra import faults, storage
from ganpipe.pipeline import execute
from ganpipe.pipeline.metadata import DELETED, LIVE, RUNNING, ArtifactRecord, MetadataStore
from ganpipe.pipeline.layout import (GC_LOCK, LOCKS, RESUMABLE_MARK, STAGING, TENSORBOARD_VIEWS, FileLock,
                                     lock_is_held, run_is_alive)

TRASH = ".trash"
# Inputs a resolver picked as a point of comparison (the served PushedModel Evaluate measures):
# kept with the artifact that used them, but their own lineage is not, or every model would keep
# the previous one alive, back to the first. (What is served keeps its whole lineage anyway.)
REFERENCE_INPUTS = ("served",)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class GcInProgress(RuntimeError):
    """Another ``ganpipe gc`` holds the root."""


@dataclasses.dataclass
class Garbage:
    path: str
    reason: str
    bytes: int
    artifact_id: int | None = None


@dataclasses.dataclass(frozen=True)
class Policy:
    keep_last: int = 1
    older_than: float | None = None  # seconds
    include_partial: bool = False


def parse_age(text: str) -> float:
    """``90``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = _AGE.match(text.strip().lower())
    if not match:
        raise ValueError(f"--older-than {text!r}: expected a number with an optional unit s, m, h, d or w "
                         "(e.g. 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def collect_garbage(root: str, dry_run: bool = False, policy: Policy = Policy()) -> list[Garbage]:
    """Returns what is (or, with ``dry_run``, would be) deleted under ``root``. A dry run changes
    nothing, so it takes no lock and opens the store read-only (it works on a read-only root);
    runs whose process is gone count as abandoned, as a real gc marks them first."""
    cutoff = time.time() - policy.older_than if policy.older_than is not None else None
    if dry_run:
        with MetadataStore(root, read_only=True, is_alive=run_is_alive(root)) as store:
            artifacts = _unneeded_artifacts(store, policy, cutoff)
            return artifacts + _files(store, root, policy, cutoff, [g.path for g in artifacts])
    gc_lock = FileLock(os.path.join(root, LOCKS, GC_LOCK))
    if not gc_lock.acquire(blocking=False):
        raise GcInProgress(f"another gc is working on {root}; wait for it to finish")
    try:
        with MetadataStore(root) as store:
            store.reap_abandoned(run_is_alive(root))
            return _delete(store, root, _unneeded_artifacts(store, policy, cutoff), policy, cutoff)
    finally:
        gc_lock.release()


def _delete(store: MetadataStore, root: str, artifacts: list[Garbage], policy: Policy,
            cutoff: float | None) -> list[Garbage]:
    _empty_trash(root)  # what a killed gc had already moved there
    leftover = _marked_but_present(store)  # what it had marked but not moved yet
    marked = set(store.mark_deleted([g.artifact_id for g in artifacts], _protected))
    faults.point("gc:after-mark")
    artifacts = [g for g in artifacts if g.artifact_id in marked] + leftover
    garbage = artifacts + _files(store, root, policy, cutoff, [g.path for g in artifacts])
    for position, item in enumerate(garbage):
        _move_to_trash(root, item.path)
        if position == 0:
            faults.point("gc:mid-trash")
    _empty_trash(root)
    _remove_unheld_locks(store, root)
    return garbage


def _protected(store: MetadataStore) -> set[int]:
    return store.artifacts_of_running_runs()


# -- artifacts ----------------------------------------------------------------------------------

def _unneeded_artifacts(store: MetadataStore, policy: Policy, cutoff: float | None) -> list[Garbage]:
    live = store.artifacts(state=LIVE)  # newest first
    keep: set[int] = set()
    references: set[int] = set()  # kept apart: a reference may also be a root whose upstream must be walked
    for record in _roots_to_keep(live, policy.keep_last):
        _keep_with_upstream(store, record.artifact.id, keep, references)
    keep |= references | store.artifacts_of_running_runs()
    created = {r.artifact.id: _created(store, r) for r in live}
    return [Garbage(r.artifact.uri, f"superseded {r.component}.{r.output}", storage.size(r.artifact.uri),
                    r.artifact.id)
            for r in live if r.artifact.id not in keep and (cutoff is None or created[r.artifact.id] < cutoff)]


def _roots_to_keep(live: list[ArtifactRecord], keep_last: int) -> list[ArtifactRecord]:
    roots, per_slot, blessed_seen = [], {}, set()
    for record in live:
        slot = (record.pipeline, record.component, record.output)
        per_slot[slot] = per_slot.get(slot, 0) + 1
        if per_slot[slot] <= keep_last:
            roots.append(record)
        properties = record.artifact.properties
        if record.artifact.type == "Blessing" and properties.get("blessed") is True \
                and record.pipeline not in blessed_seen:
            blessed_seen.add(record.pipeline)
            roots.append(record)
        destination = properties.get("pushed_destination")
        if properties.get("pushed") and destination and storage.directory_exists(destination):
            roots.append(record)  # a served version: its whole lineage stays
    return roots


def _keep_with_upstream(store: MetadataStore, artifact_id: int, keep: set[int], references: set[int]) -> None:
    pending = [artifact_id]
    while pending:
        current = pending.pop()
        if current in keep:
            continue
        keep.add(current)
        producer = store.artifact(current).producer_id
        for name, artifact in store.execution_artifacts(producer, "input").items():
            if name in REFERENCE_INPUTS:
                references.add(artifact.id)
            else:
                pending.append(artifact.id)


def _created(store: MetadataStore, record: ArtifactRecord) -> float:
    return store.execution(record.producer_id).ended or store.execution(record.producer_id).started


def _marked_but_present(store: MetadataStore) -> list[Garbage]:
    """DELETED artifacts whose directory a killed gc had not moved yet."""
    return [Garbage(r.artifact.uri, f"deleted {r.component}.{r.output}", storage.size(r.artifact.uri),
                    r.artifact.id)
            for r in store.artifacts(state=DELETED) if storage.directory_exists(r.artifact.uri)]


# -- files no artifact row describes --------------------------------------------------------------

def _files(store: MetadataStore, root: str, policy: Policy, cutoff: float | None,
           deleting: list[str]) -> list[Garbage]:
    running = {e.id for e in store.executions(state=RUNNING) if store.run(e.run_id).state == RUNNING}
    found = _unrecorded_outputs(store, root, running) + _staging(store, root, policy.include_partial)
    found += _stale_incoming(store, root, running) + _worker_scratch(store, root)
    found += _dead_views(store, root, deleting + [g.path for g in found])
    return [g for g in found if cutoff is None or storage.modified(g.path) < cutoff]


def _unrecorded_outputs(store: MetadataStore, root: str, running: set[int]) -> list[Garbage]:
    """Execution-id directories in known output slots that no artifact row points to, of
    executions no longer running (a running one may be between publish and commit). Only slots
    the store knows are scanned, so unrelated files under the root are never touched."""
    recorded = {storage.normalize(r.artifact.uri) for r in store.artifacts()}
    garbage = []
    for slot in sorted({storage.dirname(uri) for uri in recorded}):
        for name in storage.listdir(slot):
            published = storage.join(slot, name)
            if name.isdigit() and int(name) not in running and storage.normalize(published) not in recorded:
                garbage.append(Garbage(published, "unrecorded output", storage.size(published)))
    return garbage


def artifact_roots(store: MetadataStore, root: str) -> list[str]:
    """Where the pipelines of this store keep their artifacts: ``root`` (a local root holds its
    own store) and the root of every artifact published at ``<root>/<pipeline>/<Component>/
    <output>/<execution id>``."""
    roots = {root}
    for record in store.artifacts():
        uri = storage.normalize(record.artifact.uri)
        tail = f"/{record.pipeline}/{record.component}/{record.output}/{record.producer_id}"
        if uri.endswith(tail):
            roots.add(uri[:-len(tail)])
    return sorted(roots)


def _staging_dirs(store: MetadataStore, root: str) -> list[str]:
    components = {(e.pipeline, e.component) for e in store.executions()}
    return [staging for base in artifact_roots(store, root) if storage.is_local(base)
            for staging in (os.path.join(base, p, c, STAGING) for p, c in sorted(components))
            if os.path.isdir(staging)]


def _staging(store: MetadataStore, root: str, include_partial: bool) -> list[Garbage]:
    """Attempt directories of failed or killed executions; a run's current attempt holds its
    cache-key lock and is skipped; a resumable attempt is kept unless ``include_partial``."""
    garbage = []
    for staging in _staging_dirs(store, root):
        for name in sorted(os.listdir(staging)):
            path = os.path.join(staging, name)
            if not os.path.isdir(path) or lock_is_held(path + ".lock"):
                continue
            resumable = os.path.exists(os.path.join(path, RESUMABLE_MARK))
            if include_partial or not resumable:
                garbage.append(Garbage(path, "partial resumable attempt" if resumable else "unfinished attempt",
                                       storage.size(path)))
    return garbage


def _worker_scratch(store: MetadataStore, root: str) -> list[Garbage]:
    """What multi-worker workers killed mid-step left (``execute.worker_scratch_root``), of
    pipelines with no execution running."""
    busy = {e.pipeline for e in store.executions(state=RUNNING)}
    pipelines = sorted({e.pipeline for e in store.executions()} - busy)
    garbage = []
    for base in (base for base in artifact_roots(store, root) if storage.is_local(base)):
        for pipeline in pipelines:
            scratch = execute.worker_scratch_root(base, pipeline)
            garbage += [Garbage(path, "worker scratch", storage.size(path))
                        for path in (os.path.join(scratch, name) for name in storage.listdir(scratch))]
    return garbage


def _stale_incoming(store: MetadataStore, root: str, running: set[int]) -> list[Garbage]:
    """``.incoming-<execution id>-*`` in every model directory Export wrote to, unless that
    execution is still running (then it is an export in progress)."""
    model_roots = {storage.dirname(r.artifact.properties["pushed_destination"])
                   for r in store.artifacts(type="PushedModel") if r.artifact.properties.get("pushed_destination")}
    for base in artifact_roots(store, root):
        serving = storage.join(base, specs.SERVING_DIR)
        model_roots |= {storage.join(serving, name) for name in storage.listdir(serving)}
    garbage = []
    for model_root in sorted(model_roots):
        for name in storage.listdir(model_root):
            if name.startswith(specs.INCOMING_PREFIX) and _incoming_execution(name) not in running:
                path = storage.join(model_root, name)
                garbage.append(Garbage(path, "stale incoming export", storage.size(path)))
    return garbage


def _incoming_execution(name: str) -> int | None:
    head = name[len(specs.INCOMING_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _dead_views(store: MetadataStore, root: str, deleting: list[str]) -> list[Garbage]:
    """Per-run TensorBoard directories none of whose links would still lead anywhere."""
    def survives(link: str) -> bool:
        target = os.path.realpath(link)
        return os.path.exists(target) and not any(target.startswith(d + os.sep) for d in deleting)

    garbage = []
    for base, pipeline in sorted({(base, run.pipeline) for base in artifact_roots(store, root)
                                  if storage.is_local(base) for run in store.runs()}):
        views = os.path.join(base, pipeline, TENSORBOARD_VIEWS)
        for name in sorted(os.listdir(views)) if os.path.isdir(views) else []:
            view = os.path.join(views, name)
            links = [os.path.join(view, entry) for entry in os.listdir(view)]  # plus the run's hparams/ trial
            if not any(survives(link) for link in links if os.path.islink(link)):
                garbage.append(Garbage(view, "TensorBoard view of deleted logs", 0))
    return garbage


def _remove_unheld_locks(store: MetadataStore, root: str) -> None:
    """Run and cache-key lock files no process holds. Each is removed while gc holds it, and
    FileLock re-checks the inode after locking, so a run that opened it meanwhile locks a new one."""
    locks = os.path.join(root, LOCKS)
    candidates = [os.path.join(locks, n) for n in os.listdir(locks) if n.startswith("run-")] \
        if os.path.isdir(locks) else []
    for staging in _staging_dirs(store, root):
        candidates += [os.path.join(staging, n) for n in os.listdir(staging) if n.endswith(".lock")]
    for path in candidates:
        lock = FileLock(path)
        if lock.acquire(blocking=False):
            lock.release(remove=True)


# -- deleting -----------------------------------------------------------------------------------

def _move_to_trash(root: str, path: str) -> None:
    """One atomic rename out of sight; a path on another filesystem (an export base elsewhere)
    is renamed to a hidden sibling instead. A remote path (no rename) is deleted in place: its
    artifact is already marked DELETED, so no run takes it meanwhile."""
    if not storage.is_local(path):
        storage.delete([path])
        return
    if not os.path.lexists(path):
        return
    trash = os.path.join(root, TRASH)
    os.makedirs(trash, exist_ok=True)
    target = os.path.join(trash, uuid.uuid4().hex)
    try:
        os.rename(path, target)
    except OSError:
        target = os.path.join(os.path.dirname(path), f"{TRASH}-{uuid.uuid4().hex}")
        os.rename(path, target)
        storage.delete([target])


def _empty_trash(root: str) -> None:
    trash = os.path.join(root, TRASH)
    for position, name in enumerate(sorted(os.listdir(trash)) if os.path.isdir(trash) else []):
        storage.delete([os.path.join(trash, name)])
        if position == 0:
            faults.point("gc:mid-delete")
