"""Publishing: how a step's outputs become artifacts, on a local disk or on an object store.

**Publish is the metadata commit.** An executor writes its outputs where its publisher says; after
it succeeded, the publisher fingerprints each output, lists its content files with their sizes
(the artifact's manifest) and makes it durable at ``<root>/<pipeline>/<Component>/<output>/
<execution id>/``; only then does the runner record the execution and its outputs in the store.
A crash at any point before that record leaves no recorded half artifact.

- ``LocalPublisher`` (a local root): the executor writes into a staging directory fixed by the
  cache key, ``<Component>/.staging/<key>/<output>/`` (a resumable component finds its killed
  attempt there); publish fsyncs files and directories, renames each output into place with one
  atomic rename and fsyncs the parents.
- ``ObjectStorePublisher`` (any other URI): an object store has no atomic rename, so outputs are
  written in place under their execution id; an unrecorded directory is an abandoned attempt,
  never a published one. A resumable component continues from the files of its newest failed or
  killed attempt, copied into the new execution's directories.

A cache hit hands on an artifact only if it is whole: ``artifact_problem`` compares the files
under it with the manifest recorded at publish (names and sizes: a listing, no reads), so a file
deleted or truncated by hand makes the step run again, with the reason shown.
"""
from __future__ import annotations

import abc
import os
import shutil
from typing import Any, Callable

from ganpipe.infra import faults, fingerprints, storage
from ganpipe.components.base import Artifact, Component
from ganpipe.pipeline import layout
from ganpipe.pipeline.metadata import ABANDONED, FAILED, MetadataStore

Manifest = dict[str, int]  # relative path of each content file -> its size in bytes
SHOWN_PROBLEMS = 3  # files named in one artifact's problem before "..."


class Publisher(abc.ABC):
    """Where a component's executor writes and how its outputs are published under ``root``."""

    def __init__(self, root: str, metadata: str, pipeline: str):
        self.root, self.metadata, self.pipeline = root, metadata, pipeline

    def component_dir(self, component: str) -> str:
        return layout.component_dir(self.root, self.pipeline, component)

    @abc.abstractmethod
    def key_lock(self, component: str, key: str) -> layout.FileLock:
        """The lock a run holds while it computes ``component`` with cache key ``key``."""

    @abc.abstractmethod
    def prepare(self, store: MetadataStore, component: Component, key: str, execution_id: int,
                forced: bool, echo: Callable[[str], None]) -> dict[str, Artifact]:
        """One empty (or, for a resumable component, continued) output per declared output;
        ``echo`` says where a continued attempt's files came from."""

    @abc.abstractmethod
    def publish(self, outputs: dict[str, Artifact], component: str, execution_id: int) -> dict[str, Manifest]:
        """Fingerprints the outputs and makes them durable at their published place; returns
        their manifests. The caller then records them (the commit point)."""

    def finish(self, component: str, key: str) -> None:
        """After the commit: what the attempt left that nothing needs any more."""


class LocalPublisher(Publisher):
    def _staging(self, component: str, key: str) -> str:
        return layout.staging_dir(self.component_dir(component), key)

    def key_lock(self, component: str, key: str) -> layout.FileLock:
        return layout.FileLock(self._staging(component, key) + ".lock")

    def prepare(self, store: MetadataStore, component: Component, key: str, execution_id: int,
                forced: bool, echo: Callable[[str], None]) -> dict[str, Artifact]:
        staging = self._staging(component.name, key)
        if forced or not component.resumable:
            shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging, exist_ok=True)
        if component.resumable:
            open(os.path.join(staging, layout.RESUMABLE_MARK), "a").close()
        outputs = {}
        for name, artifact_type in component.outputs.items():
            os.makedirs(os.path.join(staging, name), exist_ok=True)
            outputs[name] = Artifact(type=artifact_type, uri=os.path.join(staging, name))
        return outputs

    def publish(self, outputs: dict[str, Artifact], component: str, execution_id: int) -> dict[str, Manifest]:
        manifests = {}
        for position, (name, artifact) in enumerate(outputs.items()):
            artifact.fingerprint = fingerprints.artifact_fingerprint(artifact.uri)
            manifests[name] = content_manifest(artifact.uri)
            target = layout.published_dir(self.component_dir(component), name, execution_id)
            storage.sync_tree(artifact.uri)
            storage.move_into_place(artifact.uri, target)
            artifact.properties = _relocate(artifact.properties, artifact.uri, target)
            artifact.uri = target
            if position == 0:
                faults.point(f"{component}:mid-publish")
        return manifests

    def finish(self, component: str, key: str) -> None:
        shutil.rmtree(self._staging(component, key), ignore_errors=True)


class ObjectStorePublisher(Publisher):
    def key_lock(self, component: str, key: str) -> layout.FileLock:
        # An object store has no flock: the cache-key lock lives in the local metadata directory.
        return layout.FileLock(os.path.join(self.metadata, layout.LOCKS, f"{self.pipeline}-{component}-{key}.lock"))

    def prepare(self, store: MetadataStore, component: Component, key: str, execution_id: int,
                forced: bool, echo: Callable[[str], None]) -> dict[str, Artifact]:
        component_dir = self.component_dir(component.name)
        outputs = {name: Artifact(type=artifact_type, uri=layout.published_dir(component_dir, name, execution_id))
                   for name, artifact_type in component.outputs.items()}
        for artifact in outputs.values():
            storage.makedirs(artifact.uri)  # where a filesystem has directories, TF writes into them
        if component.resumable and not forced:
            self._continue_attempt(store, component.name, key, outputs, echo)
        return outputs

    def _continue_attempt(self, store: MetadataStore, component: str, key: str, outputs: dict[str, Artifact],
                          echo: Callable[[str], None]) -> None:
        """Copies the newest failed or killed attempt's files into ``outputs``, as a local root
        keeps them in staging, so a resumable component resumes from them."""
        attempts = [e for state in (FAILED, ABANDONED) for e in store.executions(state=state)
                    if (e.pipeline, e.component, e.cache_key) == (self.pipeline, component, key)]
        for attempt in sorted(attempts, key=lambda e: e.id, reverse=True):
            sources = {name: layout.published_dir(self.component_dir(component), name, attempt.id) for name in outputs}
            if all(storage.directory_exists(source) for source in sources.values()):
                for name, source in sources.items():
                    storage.copy_tree(source, outputs[name].uri)
                echo(f"      continuing from the files of execution {attempt.id}")
                return

    def publish(self, outputs: dict[str, Artifact], component: str, execution_id: int) -> dict[str, Manifest]:
        for artifact in outputs.values():
            artifact.fingerprint = fingerprints.artifact_fingerprint(artifact.uri)
        return {name: content_manifest(artifact.uri) for name, artifact in outputs.items()}


def publisher_for(root: str, metadata: str, pipeline: str) -> Publisher:
    publisher = LocalPublisher if storage.is_local(root) else ObjectStorePublisher
    return publisher(root, metadata, pipeline)


def _relocate(value: Any, old: str, new: str) -> Any:
    """Rewrites paths an executor stored into properties from staging to published location."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    if isinstance(value, list):
        return [_relocate(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _relocate(item, old, new) for key, item in value.items()}
    return value


# -- is an artifact whole? ------------------------------------------------------------------------

def content_manifest(uri: str) -> Manifest:
    """Relative path -> size of each file the artifact's fingerprint covers (TensorBoard logs and
    checkpoints are not content: ``fingerprints.VOLATILE_DIRECTORIES``), from one listing; a local
    link counts as itself."""
    if storage.is_local(uri):
        base = storage.local_path(uri)
        sizes = {os.path.relpath(os.path.join(directory, name), base): os.lstat(os.path.join(directory, name)).st_size
                 for directory, subdirs, files in os.walk(base)
                 for name in files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]}
    else:
        prefix = uri.rstrip("/") + "/"
        sizes = {meta.path[len(prefix):]: meta.size_in_bytes for meta in storage.match(prefix + "**")}
    volatile = set(fingerprints.VOLATILE_DIRECTORIES)
    return {path: size for path, size in sizes.items() if not volatile & set(path.split("/")[:-1])}


def artifact_problem(artifact: Artifact, manifest: Manifest | None) -> str | None:
    """Why a cache hit may not hand ``artifact`` on (None: it is whole): its directory is gone, a
    file its manifest lists is missing or has another size, or the served version a pushed model
    recorded was deleted (Export must run again). Artifacts recorded before manifests existed
    (``manifest`` None) are checked for their directory only."""
    properties = artifact.properties
    if properties.get("pushed") and properties.get("pushed_destination"):
        if not storage.directory_exists(properties["pushed_destination"]):
            return f"served version {properties['pushed_destination']} missing"
    if not storage.directory_exists(artifact.uri):
        return f"{artifact.uri} missing"
    problems = manifest_problems(artifact.uri, manifest) if manifest is not None else []
    if not problems:
        return None
    more = " ..." if len(problems) > SHOWN_PROBLEMS else ""
    return f"{artifact.uri}: " + ", ".join(problems[:SHOWN_PROBLEMS]) + more


def manifest_problems(uri: str, manifest: Manifest) -> list[str]:
    """Each file of ``manifest`` missing under ``uri`` or of another size now, sorted by path."""
    found = content_manifest(uri)
    return [f"{path} missing" if path not in found else f"{path} is {found[path]} bytes, published {size}"
            for path, size in sorted(manifest.items()) if found.get(path) != size]
