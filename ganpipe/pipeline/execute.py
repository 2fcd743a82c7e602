"""One component by itself: what an orchestrator's container step runs (``ganpipe execute``).

Like TFX's container entrypoint, a step gets its inputs and outputs as URIs and its parameters as
JSON, runs the executor with no metadata store, no upstream resolution and no cache, and writes an
execution record (JSON) beside its outputs. The local runner runs executors through this module's
``run_executor``: in the runner's process (``run_here``, also what ``ganpipe execute`` runs),
except when a step needs a fresh process:
``MultiWorkerMirroredStrategy`` must be created before the process runs any TensorFlow op, which
earlier steps of a ``ganpipe run`` already did; such a step runs as ``python -m
ganpipe execute``.

With ``durable_staging`` (what compiled Kubeflow steps ask for), a resumable component (Train)
runs in ``<pipeline root>/<pipeline>/<Component>/.staging/<cache key>/``, as under the local
runner, and its outputs are copied to the given output paths once it succeeds: an orchestrator
that keeps a step's outputs only when it exits 0 (KFP's launcher) loses a preempted attempt's
files with the pod, while a retry or a resubmitted run with the same inputs and parameters finds
its checkpoints there.

Exit codes, as ``ganpipe run``: 0 done, 1 the executor failed (the record says whether a re-run
resumes), 2 usage error (unknown component, bad parameters, missing input).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable

from ganpipe import __version__
from ganpipe.infra import fingerprints, storage
from ganpipe.infra.references import load_reference
from ganpipe.components.base import Artifact, Component, ExecutionContext
from ganpipe.pipeline import cache, dag
from ganpipe.pipeline.layout import STAGING

RECORD_SUFFIX = ".execution.json"
COMPLETE, FAILED, FAILED_RESUMABLE = "COMPLETE", "FAILED", "FAILED_RESUMABLE"


class UsageError(ValueError):
    """The step cannot start: unknown component, bad parameters, missing or unknown artifacts."""


def needs_own_process(params: dict[str, Any]) -> bool:
    return params.get("strategy") == "multi_worker"


def run_executor(component: Component, inputs: dict[str, Artifact], outputs: dict[str, Artifact],
                 params: dict[str, Any], ctx: ExecutionContext) -> None:
    """The local runner's way to run a step: here, or in a process of its own when it needs one.
    Raises what the executor raises."""
    if needs_own_process(params):
        run_in_own_process(component, inputs, outputs, params, ctx)
    else:
        run_here(component, inputs, outputs, params, ctx)


def run_here(component: Component, inputs: dict[str, Artifact], outputs: dict[str, Artifact],
             params: dict[str, Any], ctx: ExecutionContext) -> None:
    """Runs the executor in this process (``ganpipe execute`` always does: it is the step's own
    process); outputs' properties must be JSON values."""
    component.execute(inputs, outputs, dict(params), ctx)
    for name, artifact in outputs.items():
        try:
            json.dumps(artifact.properties)
        except (TypeError, ValueError) as error:
            raise TypeError(f"output {name!r}: properties must be JSON values: {error}") from error


class StepFailed(RuntimeError):
    """The step's own process failed; ``resumable`` when it stopped on SIGTERM after a checkpoint."""

    def __init__(self, message: str, resumable: bool):
        super().__init__(message)
        self.resumable = resumable


def run_in_own_process(component: Component, inputs: dict[str, Artifact], outputs: dict[str, Artifact],
                       params: dict[str, Any], ctx: ExecutionContext) -> None:
    """Runs ``python -m ganpipe execute`` (inheriting ``TF_CONFIG``), streams its output to
    ``ctx.log`` and copies the outputs' properties back from its record."""
    reference = component_reference(component)
    handoff = handoff_path(ctx.pipeline_root, ctx.pipeline_name, component.name)
    with tempfile.TemporaryDirectory(prefix="ganpipe-execute-") as scratch:
        record_path = os.path.join(scratch, "record.json")
        command = [sys.executable, "-m", "ganpipe", "execute", *command_arguments(
            reference, inputs, outputs, params, record_path, ctx)]
        if cluster_size() > 1:  # the other workers (`ganpipe worker`) run the same step
            write_record(handoff, {"arguments": command_arguments(reference, inputs, outputs, params, None, ctx)})
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            with forwarding_sigterm(process):  # a preempted runner lets the step checkpoint
                for line in process.stdout:
                    ctx.log(line.rstrip("\n"))
                code = process.wait()
        finally:
            storage.delete([handoff])
        record = read_record(record_path) if os.path.exists(record_path) else {}
    if code != 0:
        raise StepFailed(record.get("error") or f"{component.name} exited with code {code}",
                         record.get("state") == FAILED_RESUMABLE)
    for name, artifact in outputs.items():
        artifact.properties.update(record["outputs"][name]["properties"])


@contextlib.contextmanager
def forwarding_sigterm(process: subprocess.Popen):
    """Passes SIGTERM on to ``process`` (installable from the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def component_reference(component: Component) -> str:
    """How ``--component`` names it: the default DAG's name, else its spec's ``module:ATTRIBUTE``."""
    if any(node.name == component.name for node in dag.DEFAULT_NODES):
        return component.name
    raise UsageError(f"{component.name}: only the default pipeline's components run in their own process")


def command_arguments(component: str, inputs: dict[str, Artifact], outputs: dict[str, Artifact],
                      params: dict[str, Any], record: str | None, ctx: ExecutionContext) -> list[str]:
    """The ``ganpipe execute`` arguments for one step."""
    arguments = ["--component", component, "--params", json.dumps(params, sort_keys=True),
                 "--pipeline-name", ctx.pipeline_name]
    if ctx.pipeline_root:
        arguments += ["--pipeline-root", ctx.pipeline_root]
    for name, artifact in inputs.items():
        arguments += ["--input", f"{name}={artifact.uri}"]
    for name, artifact in outputs.items():
        arguments += ["--output", f"{name}={artifact.uri}"]
    if record:
        arguments += ["--record", record]
    for beam_arg in ctx.beam_args:
        arguments.append(f"--beam-arg={beam_arg}")
    return arguments


def find_component(reference: str) -> Component:
    """A default-DAG component by name (any case), or a ``module:ATTRIBUTE`` naming a Component."""
    if ":" not in reference:
        try:
            return dag.find_node(dag.DEFAULT_NODES, reference).component
        except dag.PipelineError as error:
            raise UsageError(f"--component: {error}, or module:ATTRIBUTE") from error
    try:
        found = load_reference(reference)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"--component: cannot load {reference}: {error}") from error
    if not isinstance(found, Component):
        raise UsageError(f"--component: {reference} is not a ganpipe Component")
    return found


def parse_bindings(pairs: tuple[str, ...] | list[str], option: str) -> dict[str, str]:
    """``name=URI`` pairs to a dict; a bad or repeated pair is a usage error."""
    bindings: dict[str, str] = {}
    for pair in pairs:
        name, separator, uri = pair.partition("=")
        if not separator or not name or not uri:
            raise UsageError(f"{option} {pair!r}: expected NAME=URI")
        if name in bindings:
            raise UsageError(f"{option} {name}: given twice")
        bindings[name] = uri
    return bindings


def parse_params(text: str | None) -> dict[str, Any]:
    """``--params``: a JSON object, or ``@file`` holding one."""
    if not text:
        return {}
    where = "--params"
    if text.startswith("@"):
        where = text[1:]
        try:
            with open(where, encoding="utf-8") as f:
                text = f.read()
        except OSError as error:
            raise UsageError(f"--params: cannot read {where}: {error.strerror}") from error
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{where}: not JSON: {error}") from error
    if not isinstance(params, dict):
        raise UsageError(f"{where}: expected a JSON object of parameters, got {type(params).__name__}")
    return params


def bind_artifacts(component: Component, inputs: dict[str, str], outputs: dict[str, str]):
    """Artifacts for the given URIs; every required input and every output must be given."""
    for given, declared, kind in ((inputs, component.inputs, "--input"), (outputs, component.outputs, "--output")):
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise UsageError(f"{kind} {unknown[0]}: {component.name} has no such {kind[2:]}; "
                             f"it has {', '.join(declared) or 'none'}")
    missing = sorted(set(component.inputs) - set(inputs) - set(component.optional_inputs))
    if missing:
        raise UsageError(f"--input {missing[0]}=URI: required by {component.name}")
    missing = sorted(set(component.outputs) - set(outputs))
    if missing:
        raise UsageError(f"--output {missing[0]}=URI: required by {component.name}")
    for name, uri in inputs.items():
        if storage.is_local(uri) and not os.path.exists(uri):
            raise UsageError(f"--input {name}={uri}: no such file or directory")
    bound_inputs = {name: Artifact(component.inputs[name], uri) for name, uri in inputs.items()}
    bound_outputs = {name: Artifact(component.outputs[name], uri) for name, uri in outputs.items()}
    return bound_inputs, bound_outputs


def default_record_path(component: Component, outputs: dict[str, Artifact]) -> str:
    """``<first output>.execution.json``: beside the outputs, not inside them."""
    first = outputs[next(iter(component.outputs))].uri
    return first.rstrip("/") + RECORD_SUFFIX


def is_chief_task() -> bool:
    """Under ``TF_CONFIG`` only the chief (or worker 0 when there is no chief) records the step."""
    task, cluster = tf_config_task()
    if not task:
        return True
    return task.get("type") == "chief" or (task.get("type") == "worker" and int(task.get("index", 0)) == 0
                                           and "chief" not in cluster)


def cluster_size() -> int:
    """Tasks that train (chief and workers) in ``TF_CONFIG``'s cluster; 0 without one."""
    cluster = tf_config_task()[1]
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def handoff_path(pipeline_root: str, pipeline: str, component: str) -> str:
    """Where the chief's ``ganpipe run`` leaves a multi-worker step's arguments for the other
    workers' ``ganpipe worker`` (shared storage under the pipeline root); removed when it ends."""
    return storage.join(pipeline_root, pipeline, ".workers", f"{component}.json")


def announce_cached(pipeline_root: str, pipeline: str, component: str, execution_id: int,
                    params: dict[str, Any]) -> None:
    """The chief's multi-worker step is a cache hit: tells the workers waiting for it (``ganpipe
    worker`` with the same config) there is nothing to run. Left in place, so a worker that starts
    later exits at once too; the next run that runs the step replaces it with its arguments."""
    write_record(handoff_path(pipeline_root, pipeline, component),
                 {"cached_from": execution_id, "parameters": json.loads(json.dumps(params, default=str))})


def worker_scratch_root(pipeline_root: str, pipeline: str) -> str:
    """Where non-chief workers keep their throw-away files: under a local pipeline root (where
    ``ganpipe gc`` sweeps what a killed worker left), else in the system's temporary directory."""
    if storage.is_local(pipeline_root):
        return os.path.join(storage.local_path(pipeline_root), pipeline, ".workers", "scratch")
    return os.path.join(tempfile.gettempdir(), "ganpipe-workers", pipeline)


@contextlib.contextmanager
def worker_scratch(pipeline_root: str, pipeline: str):
    """A non-chief worker's temporary directory (Train's collective checkpoints and logs go to
    ``tempfile``), one per task, emptied when it starts and removed on any exit Python sees."""
    task = tf_config_task()[0]
    if is_chief_task():
        yield
        return
    scratch = os.path.join(worker_scratch_root(pipeline_root, pipeline), f"{task.get('type')}-{task.get('index')}")
    shutil.rmtree(scratch, ignore_errors=True)  # what a killed worker of this task left
    os.makedirs(scratch)
    previous, tempfile.tempdir = tempfile.tempdir, scratch
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(scratch, ignore_errors=True)


def tf_config_task() -> tuple[dict, dict]:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return config.get("task") or {}, config.get("cluster") or {}


def execute(component_reference: str, input_uris: dict[str, str], output_uris: dict[str, str],
            params: dict[str, Any], *, record_path: str | None = None, pipeline_name: str = "ganpipe",
            pipeline_root: str = "", beam_args: list[str] | None = None, durable_staging: bool = False,
            served_from: str | None = None, log: Callable[[str], None] = print) -> int:
    """Runs one step and writes its record; returns the exit code. Raises UsageError before running.
    ``served_from``: see ``served_input``."""
    component = find_component(component_reference)
    if durable_staging and not pipeline_root:
        raise UsageError("--durable-staging: needs --pipeline-root, storage every attempt of the step reaches")
    if served_from and not {"served", "model"} <= set(component.inputs):
        raise UsageError(f"--served-from: {component.name} measures no model beside the served one")
    try:
        resolved = component.resolve_parameters(params, component.name.lower())
    except ValueError as error:
        raise UsageError(f"--params: {error}") from error
    inputs, outputs = bind_artifacts(component, input_uris, output_uris)
    record_path = record_path or default_record_path(component, outputs)
    for artifact in outputs.values():
        storage.makedirs(artifact.uri)
    ctx = ExecutionContext(pipeline_name=pipeline_name, component=component.name, execution_id=0,
                           beam_args=list(beam_args or []), pipeline_root=pipeline_root or os.getcwd(), log=log)
    started = time.time()
    state, error = COMPLETE, None
    staging = durable_staging_dir(component, resolved, inputs, ctx) if durable_staging else None
    try:
        with worker_scratch(ctx.pipeline_root, pipeline_name), served_input(served_from, inputs, log):
            if staging:
                run_in_staging(component, inputs, outputs, resolved, ctx, staging)
            else:
                run_here(component, inputs, outputs, resolved, ctx)
    except Exception as failure:  # the record and exit code carry it; the traceback goes to stderr
        state = FAILED_RESUMABLE if getattr(failure, "resumable", False) else FAILED
        if state == FAILED:
            traceback.print_exc()
        error = f"{type(failure).__name__}: {failure}"
    if is_chief_task():
        write_record(record_path, {
            "component": component.name, "state": state, "error": error, "parameters": resolved,
            "inputs": {name: {"type": a.type, "uri": a.uri} for name, a in inputs.items()},
            "outputs": {name: {"type": a.type, "uri": a.uri, "properties": a.properties} for name, a in outputs.items()},
            "started": started, "ended": time.time(), "ganpipe_version": __version__, "task": tf_config_task()[0],
        })
    if error:
        log(f"{component.name} failed: {error}")
    return 0 if state == COMPLETE else 1


@contextlib.contextmanager
def served_input(directory: str | None, inputs: dict[str, Artifact], log: Callable[[str], None]):
    """Evaluate's ``served`` input where no metadata store resolves it (compiled steps): the version
    ``resolvers.served_version`` finds under ``directory`` (``<root>/serving/<model_name>``), as a
    PushedModel naming it (what Export writes), for the step's duration. Nothing when ``served`` is
    given, or nothing else is served."""
    if not directory or "served" in inputs:
        yield
        return
    from ganpipe.pipeline.resolvers import served_version

    found = served_version(directory, fingerprints.artifact_fingerprint(inputs["model"].uri))
    if found is None:
        yield
        return
    version, destination = found
    log(f"served: version {version} under {directory}")
    with tempfile.TemporaryDirectory(prefix="served-") as scratch:
        inputs["served"] = Artifact("PushedModel", scratch)
        inputs["served"].write_json("pushed.json", {"pushed": True, "destination": destination, "version": version})
        try:
            yield
        finally:  # gone with the scratch; Evaluate's report names the version it measured
            del inputs["served"]


def durable_staging_dir(component: Component, params: dict[str, Any], inputs: dict[str, Artifact],
                        ctx: ExecutionContext) -> str | None:
    """``<pipeline root>/<pipeline>/<Component>/.staging/<cache key>/`` of a resumable component
    (None for others): the same inputs and parameters give the same directory on every attempt."""
    if not component.resumable:
        return None
    for artifact in inputs.values():
        artifact.fingerprint = fingerprints.artifact_fingerprint(artifact.uri)
    key = cache.cache_key(component, params, inputs)
    return storage.join(ctx.pipeline_root, ctx.pipeline_name, component.name, STAGING, key)


def run_in_staging(component: Component, inputs: dict[str, Artifact], outputs: dict[str, Artifact],
                   params: dict[str, Any], ctx: ExecutionContext, staging: str) -> None:
    """Runs the executor with its outputs in ``staging`` (keeping what an earlier attempt left
    there), then copies them to ``outputs`` and removes ``staging``; a failure leaves it in place."""
    staged = {name: Artifact(artifact.type, storage.join(staging, name)) for name, artifact in outputs.items()}
    for artifact in staged.values():
        storage.makedirs(artifact.uri)
    ctx.log(f"{component.name} runs in {staging} (resumes from what an earlier attempt left there)")
    run_here(component, inputs, staged, params, ctx)
    if not is_chief_task():  # the chief alone writes outputs, and copies them when they are whole
        return
    for name, artifact in outputs.items():
        copy_files(staged[name].uri, artifact.uri)
        artifact.properties.update(staged[name].properties)
    storage.delete([staging])


def copy_files(source: str, target: str) -> None:
    """Every file under ``source`` to the same place under ``target``, across schemes (a store's
    staging to the step's local output path)."""
    if storage.scheme(source) == storage.scheme(target):
        storage.copy_tree(source, target)
        return
    for directory, _, files in storage.walk(source):
        relative = directory[len(source.rstrip("/")):].lstrip("/")
        storage.makedirs(storage.join(target, relative))
        for name in files:
            storage.write_bytes(storage.join(target, relative, name), storage.read_bytes(storage.join(directory, name)))


def write_record(path: str, record: dict) -> None:
    """Written whole, then renamed (locally; an object store shows an object only once it is
    whole): a reader never sees half a record."""
    data = json.dumps(record, indent=2, sort_keys=True, default=str).encode("utf-8")
    if not storage.is_local(path):
        storage.write_bytes(path, data)
        return
    temporary = f"{path}.tmp-{os.getpid()}"
    storage.write_bytes(temporary, data)
    os.replace(temporary, path)


def read_record(path: str) -> dict:
    return storage.read_json(path)

