"""LocalRunner: runs a DAG of components in one process, with caching and atomic publishing.

For each node in topological order the runner computes a cache key (component name, resolved
parameters, input artifact fingerprints, code fingerprint). A COMPLETE execution with that key
whose artifacts still exist is a cache hit: its artifacts are reused and a CACHED execution is
recorded. Otherwise the executor writes into a staging directory fixed by the key,
``<root>/<pipeline>/<Component>/.staging/<key>/<output>/``, and on success each output is
fingerprinted and renamed to ``<root>/<pipeline>/<Component>/<output>/<execution_id>/`` before the
store records it: a crash at any point leaves no recorded half artifact.

Concurrency and crashes rest on ``flock`` locks, which the kernel drops when a process dies, even
by SIGKILL: a run holds a lock for its lifetime (a RUNNING run whose lock is free is abandoned),
and a component holds the lock of its cache key while it runs, so two runs wanting the same work
do it once: the second waits, then finds a cache hit.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import time
import traceback
import uuid
from typing import Any, Callable, Iterable, Sequence

import ganpipe
from ganpipe.components.base import Artifact, Component, ExecutionContext
from ganpipe.pipeline import console, dag
from ganpipe.pipeline.metadata import COMPLETE, FAILED, LIVE, MetadataStore

PACKAGE_SOURCE = os.path.dirname(os.path.abspath(ganpipe.__file__))
STAGING = ".staging"
LOCKS = ".locks"
# Runs hold it shared for their lifetime, `ganpipe gc` exclusively: gc never deletes under a run.
GC_LOCK = "gc.lock"
TENSORBOARD_VIEWS = "tensorboard"  # <root>/<pipeline>/tensorboard/run-<id>/: symlinks to log dirs
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


def source_fingerprint(source_root: str) -> str:
    """sha256 over every .py file under ``source_root`` (relative path and content): an edit to
    any helper module changes it, which a per-module hash would miss."""
    digest = hashlib.sha256()
    for directory, subdirs, files in os.walk(source_root):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, source_root).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def directory_fingerprint(path: str) -> str:
    """sha256 over the tree's relative paths, sizes and file contents (read in chunks by
    ``hashlib.file_digest``); symlinks contribute their target, not what they point to."""
    digest = hashlib.sha256()
    for directory, subdirs, files in os.walk(path):
        subdirs.sort()
        relative_dir = os.path.relpath(directory, path)
        digest.update(b"D" + relative_dir.encode() + b"\0")
        links = [d for d in subdirs if os.path.islink(os.path.join(directory, d))]
        subdirs[:] = [d for d in subdirs if d not in links]
        for name in sorted(files + links):
            full = os.path.join(directory, name)
            relative = os.path.join(relative_dir, name).encode()
            if os.path.islink(full):
                digest.update(b"L" + relative + b"\0" + os.readlink(full).encode() + b"\0")
                continue
            digest.update(b"F" + relative + b"\0" + str(os.path.getsize(full)).encode() + b"\0")
            with open(full, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def cache_key(component: str, parameters: dict[str, Any], inputs: dict[str, Artifact], code: str) -> str:
    material = {"component": component, "parameters": parameters, "code": code,
                "inputs": {name: artifact.fingerprint for name, artifact in inputs.items()}}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


class LocalRunner:
    """Runs ``nodes`` of pipeline ``pipeline`` under ``root``.

    ``parameters`` maps config sections (lower-case component names) to resolved parameters;
    missing sections get the component's defaults. ``source_root`` is the tree whose Python
    source is the code fingerprint (the ganpipe package; tests point it elsewhere).
    """

    def __init__(self, root: str, pipeline: str, nodes: Sequence[dag.Node],
                 parameters: dict[str, dict[str, Any]] | None = None, beam_args: Iterable[str] = (),
                 echo: Callable[[str], None] = print, source_root: str = PACKAGE_SOURCE,
                 config: dict[str, Any] | None = None, display: console.PlainDisplay | None = None):
        self.root = os.path.abspath(root)
        self.pipeline = pipeline
        self.nodes = tuple(nodes)
        self.parameters = parameters or {}
        self.beam_args = list(beam_args)
        self.echo = echo
        self.source_root = source_root
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
        code = source_fingerprint(self.source_root)
        started = time.time()
        lock_name = f"run-{uuid.uuid4().hex}.lock"
        locks = os.path.join(self.root, LOCKS)
        run_lock = FileLock(os.path.join(locks, lock_name))
        with FileLock(os.path.join(locks, GC_LOCK), shared=True), MetadataStore(self.root) as store:
            run_lock.acquire()
            store.reap_abandoned(run_is_alive(self.root))
            config = {**self.config, "until": until, "force": sorted(forced)}
            run_id = store.start_run(self.pipeline, config, lock_name)
            self.echo(f"Run {run_id} of pipeline {self.pipeline} in {self.root}")
            view = tensorboard_view_dir(self.root, self.pipeline, run_id)
            self.echo(f"TensorBoard (live): tensorboard --logdir {view}")
            steps: list[StepResult] = []
            produced: dict[str, Artifact] = {}
            try:
                for position, node in enumerate(ordered, 1):
                    self.echo(f"[{position}/{len(ordered)}] {node.name}")
                    step = self._run_node(store, run_id, node, produced, code, node.name in forced, view)
                    steps.append(step)
                    if step.status == "failed":
                        error = f"{node.name} failed: {step.error}"
                        store.finish_run(run_id, FAILED, error)
                        return RunResult(run_id, FAILED, steps, time.time() - started, error)
                    produced.update({f"{node.name}.{name}": a for name, a in step.outputs.items()})
                store.finish_run(run_id, COMPLETE)
                return RunResult(run_id, COMPLETE, steps, time.time() - started)
            except BaseException as error:  # Ctrl-C or a bug here: the run must not stay RUNNING
                store.finish_run(run_id, FAILED, failure_text(error))
                raise
            finally:
                run_lock.release(remove=True)

    def _run_node(self, store: MetadataStore, run_id: int, node: dag.Node, produced: dict[str, Artifact],
                  code: str, forced: bool, view: str) -> StepResult:
        component = node.component
        inputs = {name: produced[reference] for name, reference in node.wiring.items()}
        parameters = self.parameters.get(node.section) or component.resolve_parameters({}, node.section)
        code = _component_code(component, code, self.source_root)
        key = cache_key(component.name, parameters, inputs, code)
        component_dir = os.path.join(self.root, self.pipeline, component.name)
        staging = os.path.join(component_dir, STAGING, key)
        started = time.time()
        key_lock = FileLock(staging + ".lock")
        if not key_lock.acquire(blocking=False):
            self.echo(f"      waiting for another run computing {component.name} ({key[:12]})")
            key_lock.acquire()
        try:
            # A run that held this key's lock before us may have died mid-execution: mark it now.
            store.reap_abandoned(run_is_alive(self.root))
            hit = None if forced else store.find_cached(self.pipeline, key)
            if hit:
                source, outputs = hit
                execution_id = store.record_cached_execution(run_id, source, inputs, outputs)
                self.echo(f"      cached: reusing execution {source.id} (run {source.run_id})")
                link_tensorboard_logs(view, component, {name: a.uri for name, a in outputs.items()})
                return StepResult(component.name, "cached", execution_id, time.time() - started, outputs)
            execution_id = store.start_execution(run_id, component.name, parameters, key, code, inputs)
            self.echo(f"      running: execution {execution_id}, cache key {key[:12]}")
            outputs = _prepare_staging(component, staging, fresh=forced or not component.resumable)
            log = console.component_logger(component.name).info
            context = ExecutionContext(
                pipeline_name=self.pipeline, component=component.name, execution_id=execution_id,
                beam_args=list(self.beam_args), pipeline_root=self.root, log=log,
                progress=lambda description, total, unit: self.display.progress(description, total, unit, log),
                find_artifacts=lambda type_: [r.artifact for r in store.artifacts(self.pipeline, type_, LIVE)])
            link_tensorboard_logs(view, component, {name: a.uri for name, a in outputs.items()}, create=True)
            log_file = execution_log_path(component_dir, execution_id)
            try:
                with console.execution_log(log_file), self.display.native_stderr(log_file), \
                        self.display.step(component.name):
                    component.execute(inputs, outputs, dict(parameters), context)
                _publish(outputs, component_dir, execution_id)
                link_tensorboard_logs(view, component, {name: a.uri for name, a in outputs.items()})
            except BaseException as error:
                store.fail_execution(execution_id, failure_text(error, component.resumable) + "\n"
                                     + traceback.format_exc() + f"log: {log_file}")
                if not isinstance(error, Exception):
                    raise
                self.echo(f"      failed: {type(error).__name__}: {error}")
                return StepResult(component.name, "failed", execution_id, time.time() - started, {},
                                  f"{type(error).__name__}: {error}")
            store.complete_execution(execution_id, outputs)
            shutil.rmtree(staging, ignore_errors=True)
            return StepResult(component.name, "ran", execution_id, time.time() - started, outputs)
        finally:
            key_lock.release()


def failure_text(error: BaseException, resumable: bool = True) -> str:
    """What the store records for a failed execution or run; Ctrl-C says how to go on."""
    if isinstance(error, KeyboardInterrupt):
        again = "run it again to resume from the last checkpoint" if resumable else "run it again to resume"
        return f"interrupted (Ctrl-C); resumable: {again}"
    return f"{type(error).__name__}: {error}"


def execution_log_path(component_dir: str, execution_id: int) -> str:
    """Each execution's log file, beside its component's outputs (outside them: a log never
    changes an output's fingerprint)."""
    return os.path.join(component_dir, EXECUTION_LOGS, f"{execution_id}.log")


def tensorboard_view_dir(root: str, pipeline: str, run_id: int) -> str:
    """``<root>/<pipeline>/tensorboard/run-<id>/``, created at the start of the run."""
    view = os.path.join(root, pipeline, TENSORBOARD_VIEWS, f"run-{run_id}")
    os.makedirs(view, exist_ok=True)
    return view


def link_tensorboard_logs(view: str, component: Component, output_uris: dict[str, str], create: bool = False) -> None:
    """Points the view's entries for ``component.tensorboard_logs`` at the log directories under
    ``output_uris`` (staging while it runs, published after): TensorBoard reads the live logs and
    keeps the run name when the link is re-pointed on publish."""
    for label, relative in component.tensorboard_logs.items():
        output, _, inside = relative.partition("/")
        if output in output_uris:
            target = os.path.join(output_uris[output], inside)
            if create:  # in staging, before the component writes its first event
                os.makedirs(target, exist_ok=True)
            if os.path.isdir(target):
                replace_symlink(target, os.path.join(view, label))


def replace_symlink(target: str, link: str) -> None:
    """Creates or re-points ``link`` atomically: a reader sees the old target or the new one."""
    temporary = f"{link}.{uuid.uuid4().hex}.tmp"
    os.symlink(target, temporary)
    os.replace(temporary, link)


def _component_code(component: Component, package_code: str, source_root: str) -> str:
    """The package fingerprint, plus the executor's own file when it lives outside the package
    (a user's or a test's component), so editing that file also invalidates the cache."""
    executor = component.executor
    try:
        if isinstance(executor, str):  # "module:function", not imported until it runs
            spec = importlib.util.find_spec(executor.partition(":")[0])
            source = spec.origin if spec else None
        else:
            source = inspect.getsourcefile(executor)
    except TypeError:  # a builtin has no source file
        return package_code
    if not source or os.path.abspath(source).startswith(os.path.abspath(source_root) + os.sep):
        return package_code
    with open(source, "rb") as f:
        return hashlib.sha256(package_code.encode() + f.read()).hexdigest()


def _prepare_staging(component: Component, staging: str, fresh: bool) -> dict[str, Artifact]:
    """One empty directory per output; a resumable component keeps its last attempt's files."""
    if fresh:
        shutil.rmtree(staging, ignore_errors=True)
    outputs = {}
    for name, artifact_type in component.outputs.items():
        os.makedirs(os.path.join(staging, name), exist_ok=True)
        outputs[name] = Artifact(type=artifact_type, uri=os.path.join(staging, name))
    return outputs


def _publish(outputs: dict[str, Artifact], component_dir: str, execution_id: int) -> None:
    """Fingerprints each output and renames it into place (same filesystem: atomic)."""
    for name, artifact in outputs.items():
        try:
            json.dumps(artifact.properties)
        except (TypeError, ValueError) as error:
            raise TypeError(f"output {name!r}: properties must be JSON values: {error}") from error
    for name, artifact in outputs.items():
        artifact.fingerprint = directory_fingerprint(artifact.uri)
        target = os.path.join(component_dir, name, str(execution_id))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(artifact.uri, target)
        artifact.properties = _relocate(artifact.properties, artifact.uri, target)
        artifact.uri = target


def _relocate(value: Any, old: str, new: str) -> Any:
    """Rewrites paths an executor stored into properties from staging to published location."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    if isinstance(value, list):
        return [_relocate(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _relocate(item, old, new) for key, item in value.items()}
    return value


def tensorboard_view(root: str, pipeline: str, run_id: int, artifacts: Iterable[tuple[str, Artifact]]) -> str | None:
    """Links the TensorBoard logs of a run's ``(component, artifact)`` pairs into one directory,
    ``<root>/<pipeline>/tensorboard/run-<id>/``, and returns it (None if there are none): each
    ``<artifact>/logs/<name>/`` becomes ``<name>`` (Model logs/train -> train, Evaluation logs/eval
    -> eval); a ``logs/`` holding event files itself becomes ``<component>``. TensorBoard 2.21
    follows symlinked run directories, so one ``--logdir`` shows them all."""
    found: dict[str, str] = {}
    for component, artifact in artifacts:
        logs = os.path.join(artifact.uri, "logs")
        entries = sorted(os.listdir(logs)) if os.path.isdir(logs) else []
        if any(os.path.isfile(os.path.join(logs, name)) for name in entries):
            runs = [(component.lower(), logs)]
        else:
            runs = [(name, os.path.join(logs, name)) for name in entries]
        for name, target in runs:
            found[name if name not in found else f"{component.lower()}-{name}"] = target
    if not found:
        return None
    view = tensorboard_view_dir(root, pipeline, run_id)
    for label, target in found.items():
        replace_symlink(target, os.path.join(view, label))
    return view
