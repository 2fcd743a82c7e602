"""``ganpipe gc``: find and delete what no longer serves a pipeline under a root.

Kept: for each pipeline, component and output, the newest live artifact, plus everything upstream
of it (its lineage stays inspectable). Deleted: superseded artifacts (their rows stay, marked
DELETED, so lineage still names them), directories of published outputs that were never recorded
(a crash between rename and record), staging directories of failed or killed attempts (including
a killed Train's checkpoints: after gc it starts over) and TensorBoard views whose targets are gone.
gc takes the root's gc lock exclusively, so it never runs while a run is in progress.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

from ganpipe.pipeline.metadata import LIVE, MetadataStore
from ganpipe.pipeline.runner import GC_LOCK, LOCKS, STAGING, TENSORBOARD_VIEWS, FileLock, run_is_alive


class RunInProgress(RuntimeError):
    """gc refuses to work while a run holds the root."""


@dataclasses.dataclass
class Garbage:
    path: str
    reason: str
    bytes: int
    artifact_id: int | None = None


def collect_garbage(root: str, dry_run: bool = False) -> list[Garbage]:
    """Returns what is (or, with ``dry_run``, would be) deleted under ``root``."""
    gc_lock = FileLock(os.path.join(root, LOCKS, GC_LOCK))
    if not gc_lock.acquire(blocking=False):
        raise RunInProgress(f"a run is in progress under {root}; run gc when it has finished")
    try:
        with MetadataStore(root) as store:
            store.reap_abandoned(run_is_alive(root))  # no run is alive while we hold the gc lock
            garbage = _superseded(store) + _unrecorded_outputs(store, root) + _staging(store, root)
            garbage += _dead_views(store, root, [item.path for item in garbage])
            if not dry_run:
                for item in garbage:
                    _remove(item.path)
                store.mark_deleted([item.artifact_id for item in garbage if item.artifact_id is not None])
                _remove_lock_files(store, root)
            return garbage
    finally:
        gc_lock.release()


def _superseded(store: MetadataStore) -> list[Garbage]:
    live = store.artifacts(state=LIVE)  # newest first
    keep: set[int] = set()
    newest_seen: set[tuple[str, str, str]] = set()
    for record in live:
        slot = (record.pipeline, record.component, record.output)
        if slot not in newest_seen:
            newest_seen.add(slot)
            _keep_with_upstream(store, record.artifact.id, keep)
    return [Garbage(r.artifact.uri, f"superseded {r.component}.{r.output}", _size(r.artifact.uri), r.artifact.id)
            for r in live if r.artifact.id not in keep]


def _keep_with_upstream(store: MetadataStore, artifact_id: int, keep: set[int]) -> None:
    pending = [artifact_id]
    while pending:
        current = pending.pop()
        if current in keep:
            continue
        keep.add(current)
        producer = store.artifact(current).producer_id
        pending.extend(a.id for a in store.execution_artifacts(producer, "input").values())


def _unrecorded_outputs(store: MetadataStore, root: str) -> list[Garbage]:
    """Execution-id directories in known output slots that no live artifact points to. Only
    slots the store knows are scanned, so unrelated files under the root are never touched."""
    records = store.artifacts()
    recorded = {os.path.normpath(r.artifact.uri) for r in records if r.state == LIVE}
    slots = {os.path.join(root, r.pipeline, r.component, r.output) for r in records}
    garbage = []
    for slot in sorted(s for s in slots if os.path.isdir(s)):
        for name in sorted(os.listdir(slot)):
            published = os.path.join(slot, name)
            if name.isdigit() and os.path.normpath(published) not in recorded:
                garbage.append(Garbage(published, "unrecorded output", _size(published)))
    return garbage


def _staging_dirs(store: MetadataStore, root: str) -> list[str]:
    components = {(e.pipeline, e.component) for e in store.executions()}
    return [staging for staging in (os.path.join(root, p, c, STAGING) for p, c in sorted(components))
            if os.path.isdir(staging)]


def _staging(store: MetadataStore, root: str) -> list[Garbage]:
    """Attempt directories left by failed or killed executions (lock files are not listed)."""
    return [Garbage(path, "unfinished attempt", _size(path))
            for staging in _staging_dirs(store, root)
            for path in (os.path.join(staging, name) for name in sorted(os.listdir(staging)))
            if os.path.isdir(path)]


def _remove_lock_files(store: MetadataStore, root: str) -> None:
    """Cache-key lock files are empty; safe to drop while gc holds the root (FileLock re-checks
    the inode after locking, so a run that opened one just before still locks the right file)."""
    for staging in _staging_dirs(store, root):
        for name in os.listdir(staging):
            if name.endswith(".lock"):
                os.remove(os.path.join(staging, name))


def _dead_views(store: MetadataStore, root: str, deleting: list[str]) -> list[Garbage]:
    """Per-run TensorBoard directories none of whose links would still lead anywhere."""
    def survives(link: str) -> bool:
        target = os.path.realpath(link)
        return os.path.exists(target) and not any(target.startswith(d + os.sep) for d in deleting)

    garbage = []
    for pipeline in sorted({r.pipeline for r in store.runs()}):
        views = os.path.join(root, pipeline, TENSORBOARD_VIEWS)
        for name in sorted(os.listdir(views)) if os.path.isdir(views) else []:
            view = os.path.join(views, name)
            if not any(survives(os.path.join(view, link)) for link in os.listdir(view)):
                garbage.append(Garbage(view, "TensorBoard view of deleted logs", 0))
    return garbage


def _size(path: str) -> int:
    if os.path.isfile(path) or os.path.islink(path):
        return os.lstat(path).st_size
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
