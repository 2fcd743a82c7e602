"""LocalRunner: runs a DAG of components in one process, with caching and atomic publishing.

For each node in topological order the runner resolves its inputs (upstream outputs, plus inputs
a resolver picks from the store, such as the model Evaluate compares with), computes the cache key
(``cache.py``: semantic parameters, input fingerprints, external files, dependency versions, code
closure) and, in one store transaction, looks for a COMPLETE execution with that key whose
artifacts are LIVE and whole (``publish.artifact_problem``) and records the cache hit. Otherwise
the executor writes where the root's publisher says and the publisher publishes (``publish.py``);
only then does the store record the outputs (the commit point).

A run holds a lock for its lifetime (a RUNNING run whose lock is free is abandoned), and a
component holds the lock of its cache key while it runs, so two runs wanting the same work do it
once: the second waits, then finds a cache hit (``layout.py``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
import uuid
from typing import Any, Callable, Iterable, Sequence

from ganpipe.infra import faults, storage
from ganpipe.components.base import Artifact, Component, ExecutionContext
from ganpipe.pipeline import cache, console, dag, execute
from ganpipe.pipeline.layout import (EVENT_FILE_PREFIX, LOCKS, FileLock, execution_log_path, key_material_path,
                                     run_is_alive, tensorboard_view_path)
from ganpipe.pipeline.metadata import COMPLETE, FAILED, MetadataStore, StoreError
from ganpipe.pipeline.publish import Publisher, artifact_problem, publisher_for


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
        self.publisher: Publisher = publisher_for(self.root, self.metadata, pipeline)

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
            check_store_has_root_history(store.has_executions(), store.path, self.root, self.pipeline)
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
        material = cache.key_material(component, parameters, inputs)
        key = cache.key_of(material)
        started = time.time()
        key_lock = self.publisher.key_lock(component.name, key)
        if not key_lock.acquire(blocking=False):
            self.echo(f"      waiting for another run computing {component.name} ({key[:12]})")
            key_lock.acquire()
        try:
            # A run that held this key's lock before us may have died mid-execution: mark it now.
            store.reap_abandoned(run_is_alive(self.metadata))
            if not forced:
                lookup = store.claim_cached(run_id, self.pipeline, key, inputs, artifact_problem)
                for damage in lookup.damaged:
                    self.echo(f"      not reusable: {damage}")
                if lookup.source:
                    self.echo(f"      cached: reusing execution {lookup.source.id} (run {lookup.source.run_id})")
                    link_tensorboard_logs(view, component, lookup.outputs)
                    if execute.needs_own_process(parameters) and execute.cluster_size() > 1:  # workers wait for it
                        execute.announce_cached(self.root, self.pipeline, component.name, lookup.source.id, parameters)
                    return StepResult(component.name, "cached", lookup.execution_id, time.time() - started,
                                      lookup.outputs)
            execution_id = store.start_execution(run_id, component.name, parameters, key,
                                                 cache.code_fingerprint(component, parameters), inputs)
            self.echo(f"      running: execution {execution_id}, cache key {key[:12]}")
            write_key_material(key_material_path(self.metadata, self.pipeline, component.name, execution_id), material)
            return self._execute(store, component, inputs, parameters, key, execution_id, forced, started, view)
        finally:
            key_lock.release()

    def _execute(self, store: MetadataStore, component: Component, inputs: dict[str, Artifact],
                 parameters: dict[str, Any], key: str, execution_id: int, forced: bool,
                 started: float, view: str | None = None) -> StepResult:
        """Runs the executor where the publisher says, publishes, commits; a failure is recorded,
        not raised."""
        outputs = self.publisher.prepare(store, component, key, execution_id, forced, self.echo)
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
            manifests = self.publisher.publish(outputs, component.name, execution_id)
            link_tensorboard_logs(view, component, outputs)
        except BaseException as error:
            store.fail_execution(execution_id, failure_text(error, component.resumable) + "\n"
                                 + traceback.format_exc() + f"log: {log_file}")
            if not isinstance(error, Exception):
                raise
            self.echo(f"      failed: {type(error).__name__}: {error}")
            return StepResult(component.name, "failed", execution_id, time.time() - started, {},
                              f"{type(error).__name__}: {error}")
        faults.point(f"{component.name}:before-commit")
        store.complete_execution(execution_id, outputs, manifests)
        faults.point(f"{component.name}:after-commit")
        self.publisher.finish(component.name, key)
        return StepResult(component.name, "ran", execution_id, time.time() - started, outputs)


def check_store_has_root_history(has_executions: bool, store_path: str, root: str, pipeline: str) -> None:
    """Refuses a store that records nothing (new, or emptied) beside published outputs of
    ``pipeline`` under ``root``: its execution ids would start again at 1 and collide with them."""
    if has_executions:
        return
    pipeline_dir = storage.join(root, pipeline)
    published = [storage.join(pipeline_dir, component, output, run)
                 for component in storage.listdir(pipeline_dir)
                 for output in storage.listdir(storage.join(pipeline_dir, component))
                 for run in storage.listdir(storage.join(pipeline_dir, component, output)) if run.isdigit()]
    if published:
        raise StoreError(
            f"{store_path} records no runs, but {pipeline_dir} holds {len(published)} published output(s) "
            f"(e.g. {published[0]}) of a store that was lost or emptied: put that store back (or recover it with "
            f"`sqlite3 <damaged store> .recover`), or move {pipeline_dir} aside to start afresh")


def failure_text(error: BaseException, resumable: bool = True) -> str:
    """What the store records for a failed execution or run; Ctrl-C says how to go on."""
    if isinstance(error, KeyboardInterrupt):
        again = "run it again to resume from the last checkpoint" if resumable else "run it again to resume"
        return f"interrupted (Ctrl-C); resumable: {again}"
    return f"{type(error).__name__}: {error}"


def tensorboard_view_dir(root: str, pipeline: str, run_id: int) -> str | None:
    """``<root>/<pipeline>/tensorboard/run-<id>/``, created at the start of the run (local roots:
    the view is symlinks)."""
    if not storage.is_local(root):
        return None
    view = tensorboard_view_path(root, pipeline, run_id)
    os.makedirs(view, exist_ok=True)
    return view


def _remove_if_empty(view: str | None) -> None:
    """A run none of whose steps has TensorBoard logs leaves no view behind."""
    if view and os.path.isdir(view) and not os.listdir(view):
        os.rmdir(view)


def write_key_material(path: str, material: dict) -> None:
    """The local metadata directory's record of what a key hashed (never an artifact)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(material, handle, sort_keys=True, default=str)


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
