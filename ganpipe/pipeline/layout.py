"""Where things live under a pipeline root and its metadata directory, and the locks that guard them.

Under the artifact root (a local path or a URI)::

    <root>/<pipeline>/<Component>/<output>/<execution id>/   a published output
    <root>/<pipeline>/<Component>/.staging/<cache key>/      an attempt in progress (local roots)
    <root>/<pipeline>/tensorboard/run-<id>/                  a run's TensorBoard view (local roots)

Under the local metadata directory (the root itself when it is local)::

    metadata.sqlite                                          the store
    .locks/run-<uuid>.lock, .locks/gc.lock                   a run's lifetime lock, gc's lock
    <pipeline>/<Component>/logs/<execution id>.log           each execution's messages

Concurrency and crashes rest on ``flock`` locks, which the kernel drops when a process dies, even
by SIGKILL: a run holds its lock for its lifetime (a RUNNING run whose lock is free is abandoned),
and a component holds the lock of its cache key while it runs.
"""
from __future__ import annotations

import fcntl
import os
from typing import Callable

from ganpipe.infra import storage

STAGING = ".staging"
RESUMABLE_MARK = ".resumable"  # in a resumable component's staging/<key>/: gc keeps it by default
LOCKS = ".locks"
GC_LOCK = "gc.lock"  # one `ganpipe gc` at a time; runs do not take it (gc works beside them)
TENSORBOARD_VIEWS = "tensorboard"  # <root>/<pipeline>/tensorboard/run-<id>/: symlinks to log dirs
EVENT_FILE_PREFIX = "events.out.tfevents."  # TensorBoard's event file names
EXECUTION_LOGS = "logs"  # <metadata>/<pipeline>/<Component>/logs/<execution id>.log


def component_dir(root: str, pipeline: str, component: str) -> str:
    return storage.join(root, pipeline, component)


def published_dir(component_directory: str, output: str, execution_id: int) -> str:
    return storage.join(component_directory, output, str(execution_id))


def staging_dir(component_directory: str, cache_key: str) -> str:
    return storage.join(component_directory, STAGING, cache_key)


def execution_log_path(metadata: str, pipeline: str, component: str, execution_id: int) -> str:
    """Each execution's log file, beside its component's outputs on a local root (under the local
    metadata directory for a remote one); outside the outputs, so it never changes a fingerprint."""
    return os.path.join(metadata, pipeline, component, EXECUTION_LOGS, f"{execution_id}.log")


def key_material_path(metadata: str, pipeline: str, component: str, execution_id: int) -> str:
    """What an execution's cache key was computed from (``cache.key_material``), beside its log, so
    ``--dry-run`` can say which part changed since."""
    return os.path.join(metadata, pipeline, component, EXECUTION_LOGS, f"{execution_id}.key.json")


def tensorboard_view_path(root: str, pipeline: str, run_id: int) -> str:
    return os.path.join(root, pipeline, TENSORBOARD_VIEWS, f"run-{run_id}")


class FileLock:
    """A ``flock`` on ``path`` (exclusive, or ``shared``), released by the kernel if the holder dies."""

    def __init__(self, path: str, shared: bool = False):
        self.path = path
        self._mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, self._mode | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            # `ganpipe gc` may have unlinked the file between our open and flock: lock the new one.
            if _same_file(fd, self.path):
                self._fd = fd
                return True
            os.close(fd)

    def release(self, remove: bool = False) -> None:
        if remove:
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def lock_is_held(path: str) -> bool:
    """True while some process (this one included) holds ``path`` locked. Opened for reading
    only (``flock`` needs no more), so the test works on a read-only root too."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def run_is_alive(metadata: str) -> Callable[[str], bool]:
    """The liveness test ``MetadataStore.reap_abandoned`` needs for runs recorded in ``metadata``."""
    return lambda lock: lock_is_held(os.path.join(metadata, LOCKS, lock))
