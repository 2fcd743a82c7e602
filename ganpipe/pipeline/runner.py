"""LocalRunner: runs a DAG of components in one process, with caching and atomic publishing.

For each node in topological order the runner resolves its inputs (upstream outputs, plus inputs
a resolver picks from the store, such as the model Evaluate compares with), computes the cache key
(``cache.py``: semantic parameters, input fingerprints, external files, dependency versions, code
closure) and, in one store transaction, looks for a COMPLETE execution with that key whose
artifacts are LIVE and present and records the cache hit. Otherwise the executor writes into a
staging directory fixed by the key, ``<root>/<pipeline>/<Component>/.staging/<key>/<output>/``
(a resumable component finds its killed attempt there); then publish: each output is
fingerprinted on its semantic content, fsynced (files and directories), renamed to
``<root>/<pipeline>/<Component>/<output>/<execution_id>/`` and its parent fsynced, and only then
does the store record it (the commit point). A crash at any point leaves no recorded half artifact.

Concurrency and crashes rest on ``flock`` locks, which the kernel drops when a process dies, even
by SIGKILL: a run holds a lock for its lifetime (a RUNNING run whose lock is free is abandoned),
and a component holds the lock of its cache key while it runs, so two runs wanting the same work
do it once: the second waits, then finds a cache hit.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import time
import traceback
import uuid
from typing import Any, Callable, Iterable, Sequence

from ganpipe.infra import faults, fingerprints, storage
from ganpipe.components.base import Artifact, Component, ExecutionContext
from ganpipe.pipeline import cache, console, dag, execute
from ganpipe.pipeline.metadata import ABANDONED, COMPLETE, FAILED, MetadataStore

STAGING = ".staging"
RESUMABLE_MARK = ".resumable"  # in a resumable component's staging/<key>/: gc keeps it by default
LOCKS = ".locks"
GC_LOCK = "gc.lock"  # one `ganpipe gc` at a time; runs do not take it (gc works beside them)
TENSORBOARD_VIEWS = "tensorboard"  # <root>/<pipeline>/tensorboard/run-<id>/: symlinks to log dirs
EVENT_FILE_PREFIX = "events.out.tfevents."  # TensorBoard's event file names
EXECUTION_LOGS = "logs"  # <root>/<pipeline>/<Component>/logs/<execution id>.log: each execution's messages


@dataclasses.dataclass
class StepResult:
    component: str
    status: str  # "ran", "cached" or "failed"
    execution_id: int
    seconds: float
    outputs: dict[str, Artifact]
    error: str | None = None


@dataclasses.dataclass
class RunResult:
    run_id: int
    state: str  # COMPLETE or FAILED
    steps: list[StepResult]
    seconds: float
    error: str | None = None


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
    """True while some process (this one included) holds ``path`` locked."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def run_is_alive(root: str) -> Callable[[str], bool]:
    """The liveness test ``MetadataStore.reap_abandoned`` needs for runs under ``root``."""
    return lambda lock: lock_is_held(os.path.join(root, LOCKS, lock))


class LocalRunner:
    """Runs ``nodes`` of pipeline ``pipeline`` under ``root``.

    ``parameters`` maps config sections (lower-case component names) to resolved parameters;
    missing sections get the component's defaults.
    """

    def __init__(self, root: str, pipeline: str, nodes: Sequence[dag.Node],
                 parameters: dict[str, dict[str, Any]] | None = None, beam_args: Iterable[str] = (),
                 echo: Callable[[str], None] = print, config: dict[str, Any] | None = None,
                 metadata: str | None = None, display: console.PlainDisplay | None = None):
        # Artifacts live under ``root`` (a local path or a URI); the store and the locks under the
        # local ``metadata`` directory (default: the root, which must then be local).
        self.root = storage.normalize_root(root)
        self.metadata = os.path.abspath(metadata or self.root)
        if not storage.is_local(self.metadata):
            raise ValueError(f"{root}: a remote pipeline root needs a local metadata directory")
        self.pipeline = pipeline
        self.nodes = tuple(nodes)
        self.parameters = parameters or {}
        self.beam_args = list(beam_args)
        self.echo = echo
        self.config = config or {}
        self.display = display or console.PlainDisplay()

    def plan(self, until: str | None = None, force: Iterable[str] = ()) -> tuple[list[dag.Node], set[str]]:
        """The nodes to run in order and the names to force; raises PipelineError on bad names."""
        ordered = dag.upstream_closure(self.nodes, until) if until else dag.topological_order(self.nodes)
        dag.check_wiring(ordered)
        forced = set()
        for name in force:
            forced |= {n.name for n in ordered} if name.lower() == "all" else {dag.find_node(ordered, name).name}
        return ordered, forced

    def run(self, until: str | None = None, force: Iterable[str] = ()) -> RunResult:
        """Runs the pipeline (up to and including ``until``); ``force`` names components to re-run
        even on a cache hit ("all" for every one)."""
        ordered, forced = self.plan(until, force)
        started = time.time()
        lock_name = f"run-{uuid.uuid4().hex}.lock"
        run_lock = FileLock(os.path.join(self.metadata, LOCKS, lock_name))
        with MetadataStore(self.metadata) as store:
            run_lock.acquire()
            store.reap_abandoned(run_is_alive(self.metadata))
            config = {**self.config, "until": until, "force": sorted(forced)}
            run_id = store.start_run(self.pipeline, config, lock_name)
            self.echo(f"Run {run_id} of pipeline {self.pipeline} in {self.root}")
            view = tensorboard_view_dir(self.root, self.pipeline, run_id)
            if view:
                self.echo(f"TensorBoard (live): tensorboard --logdir {view}")
            try:
                return self._run_nodes(store, run_id, ordered, forced, started, view)
            except BaseException as error:  # Ctrl-C or a bug here: the run must not stay RUNNING
                store.finish_run(run_id, FAILED, failure_text(error))
                raise
            finally:
                run_lock.release(remove=True)
                _remove_if_empty(view)

    def _run_nodes(self, store: MetadataStore, run_id: int, ordered: list[dag.Node], forced: set[str],
                   started: float, view: str | None = None) -> RunResult:
        steps: list[StepResult] = []
        produced: dict[str, Artifact] = {}
        for position, node in enumerate(ordered, 1):
            self.echo(f"[{position}/{len(ordered)}] {node.name}")
            step = self._run_node(store, run_id, node, produced, node.name in forced, view)
            steps.append(step)
            if step.status == "failed":
                error = f"{node.name} failed: {step.error}"
                store.finish_run(run_id, FAILED, error)
                return RunResult(run_id, FAILED, steps, time.time() - started, error)
            produced.update({f"{node.name}.{name}": a for name, a in step.outputs.items()})
        store.finish_run(run_id, COMPLETE)
        return RunResult(run_id, COMPLETE, steps, time.time() - started)

    def _run_node(self, store: MetadataStore, run_id: int, node: dag.Node, produced: dict[str, Artifact],
                  forced: bool, view: str | None = None) -> StepResult:
        component = node.component
        parameters = self.parameters.get(node.section) or component.resolve_parameters({}, node.section)
        upstream = {name: produced[reference] for name, reference in node.wiring.items()}
        inputs = {**upstream, **dag.resolve_inputs(node, store, self.pipeline, upstream, parameters, self.root,
                                                   self.parameters)}
        key = cache.cache_key(component, parameters, inputs)
        component_dir = storage.join(self.root, self.pipeline, component.name)
        staging = storage.join(component_dir, STAGING, key)
        started = time.time()
        local = storage.is_local(self.root)
        key_lock = FileLock(staging + ".lock" if local else
                            os.path.join(self.metadata, LOCKS, f"{self.pipeline}-{component.name}-{key}.lock"))
        if not key_lock.acquire(blocking=False):
            self.echo(f"      waiting for another run computing {component.name} ({key[:12]})")
            key_lock.acquire()
        try:
            # A run that held this key's lock before us may have died mid-execution: mark it now.
            store.reap_abandoned(run_is_alive(self.metadata))
            hit = None if forced else store.claim_cached(run_id, self.pipeline, key, inputs, artifact_present)
            if hit:
                source, outputs, execution_id = hit
                self.echo(f"      cached: reusing execution {source.id} (run {source.run_id})")
                link_tensorboard_logs(view, component, outputs)
                return StepResult(component.name, "cached", execution_id, time.time() - started, outputs)
            execution_id = store.start_execution(run_id, component.name, parameters, key,
                                                 cache.code_fingerprint(component), inputs)
            self.echo(f"      running: execution {execution_id}, cache key {key[:12]}")
            return self._execute(store, component, inputs, parameters, key, execution_id, forced, started, view)
        finally:
            key_lock.release()

    def _execute(self, store: MetadataStore, component: Component, inputs: dict[str, Artifact],
                 parameters: dict[str, Any], key: str, execution_id: int, forced: bool,
                 started: float, view: str | None = None) -> StepResult:
        """Runs the executor into staging, publishes, commits; a failure is recorded, not raised."""
        local = storage.is_local(self.root)
        component_dir = storage.join(self.root, self.pipeline, component.name)
        staging = storage.join(component_dir, STAGING, key)
        if local:
            outputs = _prepare_staging(component, staging, fresh=forced or not component.resumable)
        else:
            outputs = _remote_outputs(component, component_dir, execution_id)
            if component.resumable and not forced:
                self._continue_attempt(store, component, key, component_dir, outputs)
        log = console.component_logger(component.name).info
        context = ExecutionContext(
            pipeline_name=self.pipeline, component=component.name, execution_id=execution_id,
            beam_args=list(self.beam_args), pipeline_root=self.root, log=log,
            progress=lambda description, total, unit: self.display.progress(description, total, unit, log))
        link_tensorboard_logs(view, component, outputs, create=True)
        log_file = execution_log_path(self.metadata, self.pipeline, component.name, execution_id)
        try:
            with console.execution_log(log_file), self.display.native_stderr(log_file), \
                    self.display.step(component.name):
                execute.run_executor(component, inputs, outputs, parameters, context)
            faults.point(f"{component.name}:before-publish")
            if local:
                publish(outputs, component_dir, execution_id, component.name)
                link_tensorboard_logs(view, component, outputs)
            else:
                for artifact in outputs.values():
                    artifact.fingerprint = fingerprints.artifact_fingerprint(artifact.uri)
        except BaseException as error:
            store.fail_execution(execution_id, failure_text(error, component.resumable) + "\n"
                                 + traceback.format_exc() + f"log: {log_file}")
            if not isinstance(error, Exception):
                raise
            self.echo(f"      failed: {type(error).__name__}: {error}")
            return StepResult(component.name, "failed", execution_id, time.time() - started, {},
                              f"{type(error).__name__}: {error}")
        faults.point(f"{component.name}:before-commit")
        store.complete_execution(execution_id, outputs)
        faults.point(f"{component.name}:after-commit")
        if local:
            shutil.rmtree(staging, ignore_errors=True)
        return StepResult(component.name, "ran", execution_id, time.time() - started, outputs)


    def _continue_attempt(self, store: MetadataStore, component: Component, key: str, component_dir: str,
                          outputs: dict[str, Artifact]) -> None:
        """On a remote root a resumable component's failed or killed attempt left its files under
        its own execution id: copies the newest such attempt's into ``outputs``, as a local root
        keeps them in staging, so the component resumes from them."""
        attempts = [e for state in (FAILED, ABANDONED) for e in store.executions(state=state)
                    if (e.pipeline, e.component, e.cache_key) == (self.pipeline, component.name, key)]
        for attempt in sorted(attempts, key=lambda e: e.id, reverse=True):
            sources = {name: storage.join(component_dir, name, str(attempt.id)) for name in outputs}
            if all(storage.directory_exists(source) for source in sources.values()):
                for name, source in sources.items():
                    storage.copy_tree(source, outputs[name].uri)
                self.echo(f"      continuing from the files of execution {attempt.id}")
                return


def failure_text(error: BaseException, resumable: bool = True) -> str:
    """What the store records for a failed execution or run; Ctrl-C says how to go on."""
    if isinstance(error, KeyboardInterrupt):
        again = "run it again to resume from the last checkpoint" if resumable else "run it again to resume"
        return f"interrupted (Ctrl-C); resumable: {again}"
    return f"{type(error).__name__}: {error}"


def execution_log_path(metadata: str, pipeline: str, component: str, execution_id: int) -> str:
    """Each execution's log file, beside its component's outputs on a local root (under the local
    metadata directory for a remote one); outside the outputs, so it never changes a fingerprint."""
    return os.path.join(metadata, pipeline, component, EXECUTION_LOGS, f"{execution_id}.log")


def tensorboard_view_dir(root: str, pipeline: str, run_id: int) -> str | None:
    """``<root>/<pipeline>/tensorboard/run-<id>/``, created at the start of the run (local roots:
    the view is symlinks)."""
    if not storage.is_local(root):
        return None
    view = os.path.join(root, pipeline, TENSORBOARD_VIEWS, f"run-{run_id}")
    os.makedirs(view, exist_ok=True)
    return view


def _remove_if_empty(view: str | None) -> None:
    """A run none of whose steps has TensorBoard logs leaves no view behind."""
    if view and os.path.isdir(view) and not os.listdir(view):
        os.rmdir(view)


def link_tensorboard_logs(view: str | None, component: Component, outputs: dict[str, Artifact],
                          create: bool = False) -> None:
    """Points the view's entries for ``component.tensorboard_logs`` at those log directories of
    ``outputs`` (staging while the step runs, published after): TensorBoard reads the live logs
    and keeps the run name when the link is re-pointed on publish."""
    for label, relative in component.tensorboard_logs.items():
        output, _, inside = relative.partition("/")
        if view is None or output not in outputs:
            continue
        target = os.path.join(outputs[output].uri, inside)
        if create:  # in staging, before the component writes its first event
            os.makedirs(target, exist_ok=True)
        if os.path.isdir(target):
            os.makedirs(view, exist_ok=True)  # `ganpipe gc` may have taken the still empty view
            replace_symlink(target, os.path.join(view, label))


def replace_symlink(target: str, link: str) -> None:
    """Creates or re-points ``link`` atomically: a reader sees the old target or the new one."""
    temporary = f"{link}.{uuid.uuid4().hex}.tmp"
    os.symlink(target, temporary)
    os.replace(temporary, link)


def artifact_present(artifact: Artifact) -> bool:
    """The files a cache hit would hand on are there: the artifact's directory and, for a pushed
    model, the served version it recorded (deleted by hand: Export must run again)."""
    properties = artifact.properties
    if properties.get("pushed") and properties.get("pushed_destination"):
        if not storage.directory_exists(properties["pushed_destination"]):
            return False
    return storage.directory_exists(artifact.uri)


def _prepare_staging(component: Component, staging: str, fresh: bool) -> dict[str, Artifact]:
    """One empty directory per output; a resumable component keeps its last attempt's files."""
    if fresh:
        shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, exist_ok=True)
    if component.resumable:
        open(os.path.join(staging, RESUMABLE_MARK), "a").close()
    outputs = {}
    for name, artifact_type in component.outputs.items():
        os.makedirs(os.path.join(staging, name), exist_ok=True)
        outputs[name] = Artifact(type=artifact_type, uri=os.path.join(staging, name))
    return outputs


def publish(outputs: dict[str, Artifact], component_dir: str, execution_id: int, component: str) -> None:
    """Fingerprints each output, makes it durable and moves it to
    ``<component_dir>/<output>/<execution_id>``; the caller then records it (the commit point)."""
    for name, artifact in outputs.items():
        try:
            json.dumps(artifact.properties)
        except (TypeError, ValueError) as error:
            raise TypeError(f"output {name!r}: properties must be JSON values: {error}") from error
    for position, (name, artifact) in enumerate(outputs.items()):
        artifact.fingerprint = fingerprints.artifact_fingerprint(artifact.uri)
        target = os.path.join(component_dir, name, str(execution_id))
        storage.sync_tree(artifact.uri)
        storage.move_into_place(artifact.uri, target)
        artifact.properties = _relocate(artifact.properties, artifact.uri, target)
        artifact.uri = target
        if position == 0:
            faults.point(f"{component}:mid-publish")


def _remote_outputs(component: Component, component_dir: str, execution_id: int) -> dict[str, Artifact]:
    """On an object store, where rename is not atomic, outputs are written in place under their
    execution id; the store's record of the execution (after the executor succeeded) is the
    commit point, so an unrecorded directory is an abandoned attempt, never a published one."""
    outputs = {name: Artifact(type=artifact_type, uri=storage.join(component_dir, name, str(execution_id)))
               for name, artifact_type in component.outputs.items()}
    for artifact in outputs.values():
        storage.makedirs(artifact.uri)  # where a filesystem has directories, TF writes into them
    return outputs


def _relocate(value: Any, old: str, new: str) -> Any:
    """Rewrites paths an executor stored into properties from staging to published location."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    if isinstance(value, list):
        return [_relocate(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _relocate(item, old, new) for key, item in value.items()}
    return value


def tensorboard_runs(artifacts: Iterable[tuple[str, Artifact]]) -> dict[str, str]:
    """TensorBoard run name -> log directory of a run's ``(component, artifact)`` pairs, on any
    root: each ``<artifact>/logs/<name>/`` is ``<name>`` (Model logs/train -> train, Evaluation
    logs/eval -> eval); a ``logs/`` holding event files itself is ``<component>``."""
    found: dict[str, str] = {}
    for component, artifact in artifacts:
        logs = storage.join(artifact.uri, "logs")
        entries = storage.listdir(logs)
        if any(name.startswith(EVENT_FILE_PREFIX) for name in entries):
            runs = [(component.lower(), logs)]
        else:
            runs = [(name, storage.join(logs, name)) for name in entries]
        for name, target in runs:
            found[name if name not in found else f"{component.lower()}-{name}"] = target
    return found


def tensorboard_view(root: str, pipeline: str, run_id: int, artifacts: Iterable[tuple[str, Artifact]]) -> str | None:
    """Links ``tensorboard_runs(artifacts)`` into one directory, ``<root>/<pipeline>/tensorboard/
    run-<id>/``, and returns it (None if there are none, or on a remote root: symlinks need a
    local one). TensorBoard 2.21 follows symlinked run directories, so one ``--logdir`` shows them
    all."""
    found = tensorboard_runs(artifacts) if storage.is_local(root) else {}
    if not found:
        return None
    view = tensorboard_view_dir(root, pipeline, run_id)
    for label, target in found.items():
        replace_symlink(target, os.path.join(view, label))
    return view
