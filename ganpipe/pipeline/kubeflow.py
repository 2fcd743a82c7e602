"""Compiles a ganpipe pipeline into a Kubeflow Pipelines v2 spec (``ganpipe compile --target kubeflow``).

Each node becomes a container step running ``ganpipe execute`` in the user's image; its inputs
are the upstream steps' output artifacts and its outputs are KFP artifacts under the pipeline
root, passed to ``ganpipe execute`` as local paths (the launcher downloads inputs there and
uploads outputs from there), so the steps need no object-store client for them; the execution
record is one more output artifact. The node's resolved parameters are one constant JSON
parameter (``params``), which the compiled spec shows and a run may override. KFP's step caching
is on or off for every step alike; ganpipe's own cache is not used there (no metadata store).

Every argument is a constant or a string holding plain ``{{$.inputs...}}``/``{{$.outputs...}}``
placeholders, the only kind the open-source backend substitutes (its driver resolves input
parameters and ``IfPresent``; its launcher replaces these strings, see
backend/src/v2/component/launcher_v2.go ``getPlaceholders``); a ``Concat`` would reach the step as
literal JSON there.

``root`` is ganpipe's own root on storage every step reaches: Export serves under
``<root>/serving``, where Evaluate finds the served version itself (``ganpipe execute
--served-from``: no metadata store resolves it), and Train keeps its checkpoints in
``<root>/<pipeline>/Train/.staging/<cache key>/`` while it runs (``ganpipe execute
--durable-staging``), because the launcher uploads a step's outputs only when it exits 0 and a
preempted pod's disk is lost.

Needs the ``kubeflow`` extra (the ``kfp`` SDK); imported only by ``ganpipe compile``.
"""
from __future__ import annotations

import json
import re

import yaml
from kfp import compiler, components, dsl

from ganpipe.pipeline import dag, resolvers
from ganpipe.pipeline.config import PipelineConfig

PARAMS_INPUT = "params"
# `ganpipe execute`'s execution record as a KFP artifact of its own, so the orchestrator keeps it
# (a file beside the outputs would stay on the step's disk where KFP stages artifacts).
RECORD_OUTPUT = "execution_record"
_KFP_NAME = re.compile(r"[^a-z0-9-]+")


def kfp_name(name: str) -> str:
    """KFP pipeline names are lower-case letters, digits and '-'."""
    return _KFP_NAME.sub("-", name.lower()).strip("-") or "ganpipe"


def input_path(name: str) -> str:
    """The local path of input artifact ``name``, as the launcher substitutes it."""
    return f"{{{{$.inputs.artifacts['{name}'].path}}}}"


def output_path(name: str) -> str:
    """The local path the launcher uploads output artifact ``name`` from (on exit 0)."""
    return f"{{{{$.outputs.artifacts['{name}'].path}}}}"


def input_parameter(name: str) -> str:
    return f"{{{{$.inputs.parameters['{name}']}}}}"


def step_spec(node: dag.Node, image: str, pipeline_name: str, beam_args: list[str], root: str,
              served_from: str) -> dict:
    """The container component of one node, in the SDK's component YAML format: one input per
    wired artifact, one output per artifact the component writes, plus ``params``. A node whose
    ``served`` input the local runner resolves finds it under ``served_from`` instead."""
    component = node.component
    command = ["ganpipe", "execute", "--component", node.name, "--pipeline-name", pipeline_name,
               "--params", input_parameter(PARAMS_INPUT), "--pipeline-root", root]
    for name in node.wiring:
        command += ["--input", f"{name}={input_path(name)}"]
    for name in component.outputs:
        command += ["--output", f"{name}={output_path(name)}"]
    command += ["--record", output_path(RECORD_OUTPUT)]
    if component.resumable:
        command.append("--durable-staging")
    if "served" in node.resolved:
        command += ["--served-from", served_from]
    command += [f"--beam-arg={arg}" for arg in beam_args]
    return {
        "name": node.name,
        "description": component.description,
        "inputs": [{"name": name, "type": component.inputs[name]} for name in node.wiring]
                  + [{"name": PARAMS_INPUT, "type": "String"}],
        "outputs": [{"name": name, "type": artifact_type} for name, artifact_type in component.outputs.items()]
                   + [{"name": RECORD_OUTPUT, "type": "ExecutionRecord"}],
        "implementation": {"container": {"image": image, "command": command}},
    }


def build_pipeline(config: PipelineConfig, image: str, *, root: str, pipeline_root: str | None = None,
                   caching: bool = True):
    """The KFP pipeline function of ``config``'s DAG (steps in ganpipe's topological order)."""
    ordered = dag.topological_order(config.nodes)
    dag.check_wiring(ordered)
    served_from = resolvers.served_directory(root, config.parameters, config.name)
    steps = {node.name: components.load_component_from_text(yaml.safe_dump(
        step_spec(node, image, config.name, config.beam_args, root, served_from))) for node in ordered}

    @dsl.pipeline(name=kfp_name(config.name), description=f"ganpipe pipeline {config.name}",
                  pipeline_root=pipeline_root)
    def pipeline():
        tasks = {}
        for node in ordered:
            parameters = config.parameters.get(node.section) or node.component.resolve_parameters({}, node.section)
            arguments = {PARAMS_INPUT: json.dumps(parameters, sort_keys=True)}
            for name, reference in node.wiring.items():
                producer, _, output = reference.partition(".")
                arguments[name] = tasks[producer].outputs[output]
            task = steps[node.name](**arguments)
            task.set_display_name(node.name)
            task.set_caching_options(caching)
            tasks[node.name] = task

    return pipeline


def compile_pipeline(config: PipelineConfig, image: str, output: str, **options) -> None:
    """Writes the KFP v2 pipeline spec (YAML) of ``config`` to ``output``."""
    compiler.Compiler().compile(build_pipeline(config, image, **options), output)
