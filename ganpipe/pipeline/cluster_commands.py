"""``ganpipe execute`` and ``ganpipe compile``: the commands for running past one machine.

Registered on the ``ganpipe`` group by cli.py. Neither imports TensorFlow or kfp until it runs.
"""
from __future__ import annotations

import json
import sys

import click

from ganpipe.infra import storage
from ganpipe.components.base import absolute_path
from ganpipe.pipeline.cli_common import UsageFailure


@click.command("execute")
@click.option("--component", "component", required=True, metavar="NAME",
              help="Component of the default pipeline (Ingest, Preprocess, Classifier, Train, Evaluate, Export) "
                   "or module:ATTRIBUTE naming a Component.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=URI", help="An input artifact (repeatable).")
@click.option("--output", "outputs", multiple=True, metavar="NAME=URI",
              help="Where an output artifact is written (repeatable; created if missing).")
@click.option("--params", "params", metavar="JSON|@FILE", default=None,
              help="The component's parameters as a JSON object, or @file holding one; missing ones take defaults.")
@click.option("--record", "record", type=click.Path(dir_okay=False), default=None,
              help="Where the execution record (JSON) goes [default: <first output>.execution.json].")
@click.option("--pipeline-name", default="ganpipe", show_default=True,
              help="Pipeline name the executor sees (Export's default model name).")
@click.option("--pipeline-root", default=None,
              help="Base of pipeline-wide places such as Export's serving/ [default: the current directory].")
@click.option("--beam-arg", "beam_args", multiple=True, metavar="ARG", help="Extra Beam pipeline option (repeatable).")
@click.option("--durable-staging", is_flag=True,
              help="A resumable component (Train) runs in <pipeline-root>/<pipeline>/<Component>/.staging/<cache key>/ "
                   "and its outputs are copied to --output when it succeeds, so a re-run after a lost pod resumes "
                   "from its checkpoints (for orchestrators that keep outputs only on exit 0).")
@click.option("--served-from", default=None, metavar="URI",
              help="Evaluate's served input when none is given: the newest version under URI "
                   "(<root>/serving/<model_name>), as the local runner's resolver picks it.")
def execute_command(component, inputs, outputs, params, record, pipeline_name, pipeline_root, beam_args,
                    durable_staging, served_from) -> None:
    """Run one component by itself: no metadata store, no cache, inputs and outputs given as URIs.

    What an orchestrator's step runs (see `ganpipe compile`). Under TF_CONFIG, every worker of a
    multi-worker Train runs the same command; only the chief writes the outputs and the record.
    Exit codes: 0 done, 1 the component failed (the record's state FAILED_RESUMABLE means a re-run
    resumes from its checkpoint), 2 usage error.
    """
    from ganpipe.pipeline import execute

    try:
        code = execute.execute(
            component, execute.parse_bindings(inputs, "--input"), execute.parse_bindings(outputs, "--output"),
            execute.parse_params(params), record_path=record, pipeline_name=pipeline_name,
            pipeline_root=absolute_path(pipeline_root) or "", beam_args=list(beam_args),
            durable_staging=durable_staging, served_from=served_from, log=click.echo)
    except execute.UsageError as error:
        raise UsageFailure(str(error)) from error
    sys.exit(code)


@click.command("worker")
@click.argument("config_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, as given to the chief's `ganpipe run` (repeatable).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="The pipeline root the chief runs in, on storage shared with it.")
@click.option("--timeout", type=click.FloatRange(min=0), default=3600, show_default=True,
              help="Seconds to wait for the chief to reach the multi-worker step.")
def worker_command(config_file, overrides, root, timeout) -> None:
    """Join a multi-worker `ganpipe run` as a non-chief worker (TF_CONFIG names this task).

    The chief runs `ganpipe run CONFIG_FILE` as usual; every other worker runs `ganpipe worker
    CONFIG_FILE` with the same config and root. A worker waits until the chief reaches the
    multi-worker step (Train with strategy multi_worker), runs it with the chief's inputs and
    outputs, and exits with its exit code; when the chief's step is a cache hit (same parameters),
    it exits 0 at once. It never opens the metadata store and writes no output.
    """
    import time

    from ganpipe.pipeline import execute
    from ganpipe.pipeline.config import ConfigError, load_config

    try:
        config = load_config(config_file, overrides)
    except ConfigError as error:
        raise UsageFailure(str(error)) from error
    if execute.cluster_size() < 2:
        raise UsageFailure("TF_CONFIG names no cluster of two or more workers; run `ganpipe run` instead")
    if execute.is_chief_task():
        raise UsageFailure("TF_CONFIG names this task the chief: run `ganpipe run` here")
    pipeline_root = absolute_path(root) if root else config.root
    steps = [node.name for node in config.nodes if execute.needs_own_process(config.parameters.get(node.section, {}))]
    if not steps:
        raise UsageFailure("no step of this pipeline trains with strategy multi_worker (set train.strategy)")
    node = next(node for node in config.nodes if node.name == steps[0])
    handoff = execute.handoff_path(pipeline_root, config.name, steps[0])
    click.echo(f"Waiting for the chief to start {steps[0]} ({handoff})")
    deadline = time.monotonic() + timeout
    while True:
        decision = execute.read_record(handoff) if storage.exists(handoff) else {}
        if "arguments" in decision:
            execute_command.main(decision["arguments"], standalone_mode=True)
        if decision.get("parameters") == json.loads(json.dumps(config.parameters[node.section], default=str)):
            click.echo(f"{steps[0]} is a cache hit on the chief (reuses execution {decision['cached_from']}): "
                       f"nothing to train here")
            sys.exit(0)
        if time.monotonic() > deadline:
            click.echo(f"Error: the chief did not start {steps[0]} within {timeout:g} s", err=True)
            sys.exit(1)
        time.sleep(0.5)


@click.command("compile")
@click.argument("config_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value; VALUE is parsed as YAML (repeatable).")
@click.option("--target", type=click.Choice(["kubeflow"]), default="kubeflow", show_default=True,
              help="Orchestrator to compile for.")
@click.option("--image", required=True, metavar="IMAGE",
              help="Container image with ganpipe installed; every step runs `ganpipe execute` in it.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Where the pipeline spec (YAML) is written.")
@click.option("--pipeline-root", default=None, metavar="URI",
              help="KFP pipeline root for the artifacts, e.g. gs://bucket/ganpipe [default: the KFP server's].")
@click.option("--root", default=None, metavar="URI",
              help="ganpipe's root on storage every step reaches: Export serves under <root>/serving, Train keeps "
                   "its checkpoints under <root>/<pipeline>/Train/.staging/ [default: --pipeline-root].")
@click.option("--caching/--no-caching", default=True, show_default=True,
              help="KFP's own step caching, for every step alike.")
def compile_command(config_file, overrides, target, image, output, pipeline_root, root, caching) -> None:
    """Compile the pipeline of CONFIG_FILE for an orchestrator (Kubeflow Pipelines v2 spec).

    Needs the kubeflow extra: pip install 'ganpipe[kubeflow]'.
    """
    from ganpipe.pipeline import dag
    from ganpipe.pipeline.config import ConfigError, load_config

    given_root, root = root, steps_root(root, pipeline_root)
    try:
        config = load_config(config_file, overrides)
        dag.check_wiring(dag.topological_order(config.nodes))
    except (ConfigError, dag.PipelineError) as error:
        raise UsageFailure(str(error)) from error
    try:
        from ganpipe.pipeline import kubeflow
    except ImportError as error:
        raise UsageFailure(f"{error}; install the extra: pip install 'ganpipe[kubeflow]'") from error
    kubeflow.compile_pipeline(config, image, output, root=root, pipeline_root=pipeline_root, caching=caching)
    source = "--root" if given_root else "--pipeline-root, as no --root was given"
    click.echo(f"Served models go to {storage.join(root, 'serving')}, Train's checkpoints to "
               f"{storage.join(root, config.name, 'Train', '.staging')} (under {source})")
    click.echo(f"Wrote the Kubeflow Pipelines spec of {config.name} ({len(config.nodes)} steps) to {output}")


def steps_root(root: str | None, pipeline_root: str | None) -> str:
    """Where compiled steps keep served models and checkpoints: ``--root``, else the KFP pipeline
    root; without either a step would write them into its container, lost with the pod."""
    chosen = root or pipeline_root
    if not chosen:
        raise UsageFailure("no place for served models and Train's checkpoints: give --root URI (storage every "
                           "step reaches), or --pipeline-root URI to keep them under it")
    if storage.is_local(chosen) and not chosen.startswith("/"):
        raise UsageFailure(f"--root {chosen}: a relative path would resolve in each step's working directory; "
                           "give an absolute path or a URI")
    try:
        return storage.normalize_root(chosen)
    except storage.UnsupportedScheme as error:
        raise UsageFailure(f"--root {chosen}: {error}") from error
