"""The ``ganpipe`` command line: run pipelines, inspect runs and lineage, sample, collect garbage.

Exit codes: 0 success, 1 a run (or gc) failed, 2 usage or configuration error, 130 interrupted
(Ctrl-C; the run is recorded as failed and resumes when run again). Nothing here imports
TensorFlow except ``sample`` and the components ``run`` loads. Output goes through
``console.echo``, so a reader closing the pipe (``ganpipe run | head``) never fails a step.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys

import click

from ganpipe import __version__
from ganpipe.infra import storage
from ganpipe.pipeline import cluster_commands, console, dag, lineage_command
from ganpipe.pipeline.cli_common import UsageFailure, existing_store, locations_arguments, open_store, root_option, table
from ganpipe.pipeline.config import ConfigError, load_config, resolve_locations
from ganpipe.pipeline.console import echo
from ganpipe.pipeline.metadata import ABANDONED, CACHED, COMPLETE, FAILED, RUNNING, ExecutionRecord, StoreError
from ganpipe.pipeline.runner import LocalRunner, RunResult, tensorboard_runs, tensorboard_view
from ganpipe.pipeline.trial import write_run_trial

# Artifact property conventions the summary reads (set by components):
SAMPLE_GRID = "sample_grid"  # a PNG of generated samples, relative to the artifact uri (or absolute)
PUSHED = "pushed"  # PushedModel: whether Export wrote a SavedModel
PUSHED_DESTINATION = "pushed_destination"  # PushedModel: absolute path of the SavedModel version dir
INTERRUPTED = 130  # the shell's code for a process ended by SIGINT

STATUS = {COMPLETE: "ran", CACHED: "cached", FAILED: "failed", ABANDONED: "abandoned", RUNNING: "running"}


class Commands(click.Group):
    """The command group; a store that cannot be used (damaged, newer, refused beside another
    store's artifacts) is a usage error of any command: its one line, exit 2, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StoreError as error:
            raise UsageFailure(str(error)) from error


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ganpipe")
def main() -> None:
    """Train GANs as a TFX-style batch pipeline: Ingest -> Preprocess -> Classifier -> Train ->
    Evaluate -> Export, with cached, resumable steps and a metadata store in the pipeline root."""


@main.command()
@click.argument("config_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value; VALUE is parsed as YAML; more dots reach into nested keys "
                   "(train.network.width=64) (repeatable).")
@click.option("--until", metavar="COMPONENT", help="Run only this component and what it depends on.")
@click.option("--force", multiple=True, metavar="COMPONENT",
              help="Re-run this component even on a cache hit, discarding a resumable one's partial attempt "
                   "('all' for every one; repeatable).")
@click.option("--beam-arg", "beam_args", multiple=True, metavar="ARG",
              help="Extra Beam pipeline option, e.g. --beam-arg=--direct_num_workers=2 (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the plan (each step cached or will run, and why); run nothing.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show TensorFlow, absl, Beam and Keras messages and debug lines (quiet by default).")
@root_option
def run(config_file, overrides, until, force, beam_args, dry_run, verbose, root, metadata) -> None:
    """Run the pipeline of CONFIG_FILE (default: the built-in digits data set with a class-conditional DCGAN).

    A component whose parameters, inputs and code are unchanged is a cache hit. Forcing a
    component re-runs it; downstream components then re-run only if its new outputs differ.
    Each execution's messages are also kept in <root>/<pipeline>/<Component>/logs/<execution>.log.
    """
    console.quiet_libraries(verbose)
    display = console.LiveDisplay(verbose) if sys.stdout.isatty() else console.PlainDisplay(verbose)
    console.configure_logging(verbose, display)
    try:
        config = load_config(config_file, overrides)
        if root or metadata:
            config.root, config.metadata = resolve_locations(root or config.root, metadata)
        runner = LocalRunner(config.root, config.name, config.nodes, config.parameters,
                             config.beam_args + list(beam_args), echo=console.component_logger("").info,
                             config={**config.as_dict(), "config_file": config_file}, metadata=config.metadata,
                             display=display)
        runner.plan(until, force)  # unknown component names fail here, before anything runs
    except (ConfigError, dag.PipelineError) as error:
        raise UsageFailure(str(error)) from error
    if dry_run:
        from ganpipe.pipeline.plan import dry_run as plan_steps

        table(("STEP", "COMPONENT", "PLAN", "WHY"), [(i, *step) for i, step in enumerate(plan_steps(runner, until, force), 1)])
        return
    try:
        result = runner.run(until, force)
    except KeyboardInterrupt:
        echo(f"\nInterrupted: the run is recorded as failed (resumable); run the same command again to resume "
             f"(ganpipe runs {locations_arguments(config.root, config.metadata)})", err=True)
        sys.exit(INTERRUPTED)
    _print_summary(result, config.root, config.name, config.parameters)
    if result.state != COMPLETE:
        echo(f"Error: {result.error} (details: ganpipe show {result.run_id} "
             f"{locations_arguments(config.root, config.metadata)})", err=True)
        sys.exit(1)


def _print_summary(result: RunResult, root: str, pipeline: str, parameters: dict) -> None:
    echo("")
    rows = [(s.component, s.status, f"{s.seconds:.1f}", s.error if s.status == "failed" else _step_result(s.outputs))
            for s in result.steps]
    table(("COMPONENT", "STATUS", "SECONDS", "RESULT"), rows)
    echo(f"\nRun {result.run_id} {result.state} in {result.seconds:.1f} s")
    artifacts = [(s.component, a) for s in result.steps for a in s.outputs.values()]
    view = tensorboard_view(root, pipeline, result.run_id, artifacts)
    if view:
        write_run_trial(view, pipeline, result.run_id, result.steps, parameters)
        echo(f"TensorBoard: tensorboard --logdir {view}")
    elif not storage.is_local(root):  # no symlinked view on a remote root: name each run's logs
        runs = tensorboard_runs(artifacts)
        if runs:
            echo("TensorBoard: tensorboard --logdir_spec " + ",".join(f"{name}:{logs}" for name, logs in runs.items()))
    for component, artifact in artifacts:
        if artifact.properties.get(PUSHED) and artifact.properties.get(PUSHED_DESTINATION):
            echo(f"SavedModel:  {artifact.properties[PUSHED_DESTINATION]}")
        if artifact.properties.get(SAMPLE_GRID):
            echo(f"Samples:     {storage.resolve(artifact.uri, artifact.properties[SAMPLE_GRID])} ({component})")


def _step_result(outputs: dict) -> str:
    """The answer a step gives: Evaluate's main metric beside its real-vs-real baseline and the
    blessing, Export's served version; else where its main output went (with a private model's
    (epsilon, delta))."""
    if not outputs:
        return "-"
    by_type = {artifact.type: artifact for artifact in outputs.values()}
    if "Evaluation" in by_type:
        return _evaluation_result(by_type["Evaluation"], by_type.get("Blessing"))
    if "PushedModel" in by_type:
        pushed = by_type["PushedModel"].properties
        if pushed.get(PUSHED):
            return f"served version {pushed.get('version')} of {pushed.get('model_name')}"
        return f"not exported: {pushed.get('reason') or 'not blessed'}"
    return _main_output(outputs)


def _evaluation_result(evaluation, blessing) -> str:
    summary = evaluation_summary(evaluation, blessing)
    if summary is None:
        return evaluation.uri
    text = f"{summary['metric']} {_plus_minus(summary['value'], summary['std'])}"
    if summary["baseline"] is not None:
        text += f" (real-vs-real {_plus_minus(summary['baseline'], summary['baseline_std'])}, {summary['better']} is better)"
    served = summary["served"]
    if served is None:
        text += "; nothing served to compare with"
    elif served.get("difference") is not None:
        text += (f"; served version {summary['served_version']} {_plus_minus(served['value'], served['std'])}, "
                 f"difference {served['difference']:+.4g} ± {served['difference_std']:.2g}")
    if summary["blessed"] is not None:
        text += "; BLESSED" if summary["blessed"] else "; NOT BLESSED"
    return text


def evaluation_summary(evaluation, blessing) -> dict | None:
    """Main metric, its value and baseline with their stds, the served model's value and the
    difference (from metrics.json), and the blessing verdict."""
    try:
        report = evaluation.read_json("metrics.json")
    except (OSError, ValueError):
        return None
    main = report.get("main_metric")
    entry = report.get("metrics", {}).get(main, {})
    served = report.get("served")
    return {"metric": main, "value": entry.get("value"), "std": entry.get("std"), "baseline": entry.get("baseline"),
            "baseline_std": entry.get("baseline_std"), "better": entry.get("better"),
            "served": None if served is None else entry.get("served") or {},
            "served_version": None if served is None else served.get("version"),
            "blessed": blessing.properties.get("blessed") if blessing else None}


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _plus_minus(value, std) -> str:
    return _number(value) + ("" if value is None or std is None else f" ± {std:.2g}")


def _main_output(outputs) -> str:
    """The first output's uri; a differentially private model's (epsilon, delta) beside it."""
    main = next(iter(outputs.values()))
    if "epsilon" in main.properties:
        return f"{main.uri} (epsilon {main.properties['epsilon']:.3g}, delta {main.properties['delta']:.3g})"
    return main.uri


@main.command("config")
@click.argument("section", required=False)
@click.option("-c", "--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Resolve this config file (default: the built-in run's config).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="As for run (repeatable).")
@click.option("--defaults", is_flag=True, help="Print the built-in run (configs/digits.yaml) resolved, ignoring --config and --set.")
def config_command(section, config_file, overrides, defaults) -> None:
    """Print the resolved config (or one SECTION) as YAML, each parameter's help as a comment.

    The output is a valid config file: `ganpipe config > my.yaml`, edit, `ganpipe run my.yaml`.
    """
    from ganpipe.pipeline.config import describe

    try:
        config = load_config(None if defaults else config_file, () if defaults else overrides)
        echo(describe(config, section))
    except (ConfigError, dag.PipelineError) as error:
        raise UsageFailure(str(error)) from error


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@main.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs to list.")
@json_option
@root_option
def runs(limit, as_json, root, metadata) -> None:
    """List runs, newest first: id, pipeline, state, start time, duration."""
    with open_store(root, metadata) as store:
        records = store.runs(limit)
    if as_json:
        echo(json.dumps([_run_json(r) for r in records], indent=2))
        return
    table(("RUN", "PIPELINE", "STATE", "STARTED", "DURATION"),
           [(r.id, r.pipeline, r.state, _when(r.started), _duration(r.started, r.ended)) for r in records])


@main.command()
@click.argument("run_id", type=int)
@json_option
@root_option
def show(run_id, as_json, root, metadata) -> None:
    """Show one run: each component, cached or ran, times, its result (Evaluate's main metric
    beside its baseline and the blessing, Export's served version), output uris and key metrics."""
    with open_store(root, metadata) as store:
        record = store.run(run_id)
        if record is None:
            raise UsageFailure(f"no run {run_id} in {store.path}")
        executions = store.executions(run_id)
        outputs = {e.id: store.execution_artifacts(e.id, "output") for e in executions}
    if as_json:
        echo(json.dumps(_show_json(record, executions, outputs), indent=2))
        return
    options = ", ".join(f"{k}: {record.config.get(k)}" for k in ("config_file", "until", "force")
                        if record.config.get(k))
    echo(f"Run {record.id}  pipeline {record.pipeline}  {record.state}  started {_when(record.started)}"
         f"  took {_duration(record.started, record.ended)}" + (f"\n{options}" if options else ""))
    if record.error:
        echo(f"Error: {record.error}")
    echo("")
    table(("COMPONENT", "STATUS", "SECONDS", "EXECUTION", "RESULT"),
           [(e.component, STATUS[e.state], _duration(e.started, e.ended, unit=""), _execution_label(e),
             _step_result(outputs[e.id]) if e.state in (COMPLETE, CACHED) else "-")
            for e in executions])
    echo("")
    table(("OUTPUT", "TYPE", "URI", "KEY METRICS"),
           [(f"{e.component}.{name}", a.type, a.uri, _key_metrics(a.properties))
            for e in executions for name, a in outputs[e.id].items()])
    for execution in executions:
        if execution.error:
            echo(f"\n{execution.component} (execution {execution.id}) {execution.state}:\n{execution.error}")


def _run_json(record) -> dict:
    return {"id": record.id, "pipeline": record.pipeline, "state": record.state, "started": record.started,
            "ended": record.ended, "seconds": None if record.ended is None else record.ended - record.started,
            "error": record.error, "config": record.config}


def _show_json(record, executions, outputs) -> dict:
    steps = []
    for e in executions:
        artifacts = outputs[e.id]
        by_type = {a.type: a for a in artifacts.values()}
        step = {"component": e.component, "status": STATUS[e.state], "execution_id": e.id,
                "cached_from": e.cached_from, "seconds": None if e.ended is None else e.ended - e.started,
                "parameters": e.parameters, "error": e.error,
                "outputs": {name: {"id": a.id, "type": a.type, "uri": a.uri, "properties": a.properties}
                            for name, a in artifacts.items()}}
        if "Evaluation" in by_type:
            step["evaluation"] = evaluation_summary(by_type["Evaluation"], by_type.get("Blessing"))
        if "PushedModel" in by_type:
            pushed = by_type["PushedModel"].properties
            step["export"] = {key: pushed.get(key) for key in ("pushed", "version", "model_name",
                                                                 PUSHED_DESTINATION, "reason")}
        steps.append(step)
    return {**_run_json(record), "steps": steps}


def _execution_label(execution: ExecutionRecord) -> str:
    return f"{execution.id} (reuses {execution.cached_from})" if execution.cached_from else str(execution.id)


def _key_metrics(properties: dict) -> str:
    """Scalar properties (counts, metrics, flags) in one line."""
    scalars = {k: v for k, v in sorted(properties.items()) if isinstance(v, (int, float, bool))}
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())


@main.command()
@click.argument("model_dir")
@click.option("-n", "count", type=click.IntRange(min=1), required=True, help="Number of samples.")
@click.option("-o", "--out", required=True, type=click.Path(),
              help="Output: a directory for png, a file for grid, tfrecord and csv.")
@click.option("--format", "fmt", type=click.Choice(["png", "grid", "tfrecord", "csv"]), default=None,
              help="[default: png for images, csv for vectors]")
@click.option("--seed", type=int, default=None, help="Seed of the latent noise (and so of the samples).")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's and Keras' messages (quiet by default).")
def sample(model_dir, count, out, fmt, seed, verbose) -> None:
    """Write N samples from a trained generator. MODEL_DIR is a Train Model artifact (generator.keras
    + model.json) or an exported SavedModel directory."""
    console.quiet_libraries(verbose)  # before TensorFlow loads, as in run
    from ganpipe.pipeline.sampling import SampleError, sample as write_samples

    # TensorFlow's C++ code prints some lines whatever the log level; run sends them to the step's
    # log file, sample (which has none) drops them unless --verbose.
    with contextlib.nullcontext() if verbose else console.native_stderr_to(os.devnull):
        try:
            fmt, kind = write_samples(model_dir, count, out, fmt, seed)
        except SampleError as error:  # printed by click once stderr is back
            raise UsageFailure(str(error)) from error
    echo(f"Wrote {count} {kind} samples as {fmt} to {out}")


@main.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--keep-last", type=click.IntRange(min=1), default=1, show_default=True,
              help="Newest artifacts kept per component output (with their lineage).")
@click.option("--older-than", metavar="AGE", default=None,
              help="Only delete what is older than AGE (e.g. 90s, 30m, 12h, 7d, 2w).")
@click.option("--include-partial", is_flag=True,
              help="Also delete resumable partial attempts (a killed Train's checkpoints).")
@root_option
def gc(dry_run, keep_last, older_than, include_partial, root, metadata) -> None:
    """Delete superseded artifacts, unfinished attempts and unrecorded outputs under the root.

    Kept with their whole upstream lineage: the newest artifacts of each component output, the
    newest blessed Blessing, every model version still served. Safe beside a running pipeline;
    deleted artifacts stay in the metadata store, marked deleted.
    """
    from ganpipe.pipeline.gc import GcInProgress, Policy, collect_garbage, parse_age

    store_dir = existing_store(root, metadata)
    try:
        policy = Policy(keep_last=keep_last, older_than=parse_age(older_than) if older_than else None,
                        include_partial=include_partial)
    except ValueError as error:
        raise UsageFailure(str(error)) from error
    try:
        garbage = collect_garbage(store_dir, dry_run, policy)
    except GcInProgress as error:
        echo(f"Error: {error}", err=True)
        sys.exit(1)
    verb = "would delete" if dry_run else "deleted"
    for item in garbage:
        echo(f"{verb}  {_megabytes(item.bytes):>9}  {item.reason:<32} {item.path}")
    total = sum(item.bytes for item in garbage)
    echo(f"{len(garbage)} item(s), {_megabytes(total)} {'would be ' if dry_run else ''}freed")


@main.command()
@root_option
def verify(root, metadata) -> None:
    """Recompute the fingerprints of all live artifacts and report any that changed or vanished
    (exit 1), and served versions that are gone. Read-only."""
    from ganpipe.pipeline.verify import verify as verify_root

    checked, problems = verify_root(existing_store(root, metadata))
    for problem in problems:
        echo(f"{problem.problem}: artifact {problem.artifact_id} {problem.path}")
    echo(f"{checked} live artifact(s) checked, {len(problems)} problem(s)")
    if problems:
        sys.exit(1)


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _duration(started: float, ended: float | None, unit: str = " s") -> str:
    return "-" if ended is None else f"{ended - started:.1f}{unit}"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# Developer D's commands for running past one machine live in their own module.
main.add_command(cluster_commands.execute_command)
main.add_command(cluster_commands.compile_command)
main.add_command(cluster_commands.worker_command)
main.add_command(lineage_command.lineage)

if __name__ == "__main__":
    main(prog_name="ganpipe")
