"""Pipeline wiring: which component consumes which upstream output, in dependency order.

A node names its component by module path and imports it only when asked (``Node.component``):
component modules pull in TensorFlow and Beam, which ``ganpipe --help``, ``ganpipe runs`` and
config errors must not pay for.

An input can also be *resolved*: picked from the metadata store by a resolver function before the
step's cache key is computed (TFX's Resolver node), e.g. Evaluate's ``served``, the model served
under the export's model name. It is then an input like any other: in the key and in the lineage.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ganpipe.components.base import Component
from ganpipe.infra.references import load_reference, split_reference

DEFAULT_DAG = "ganpipe.pipeline.dag:DEFAULT_NODES"


class PipelineError(ValueError):
    """The wiring is wrong: an unknown producer, a type mismatch, a cycle, an unknown name."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One step: its component (a ``Component``, a ``"module:ATTRIBUTE"`` naming one, or a module
    holding ``COMPONENT``) and its wiring ``{input_name: "Producer.output"}``."""

    name: str
    source: str | Component
    wiring: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # {input_name: "module:function"}: function(store, pipeline, upstream_inputs, parameters, *, root,
    # sections) returns an Artifact from the store or None (the input is then absent; it must be
    # optional); ``sections`` holds every component's parameters by config section.
    resolved: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, component: Component, wiring: Mapping[str, str] | None = None) -> "Node":
        return cls(component.name, component, dict(wiring or {}))

    @property
    def section(self) -> str:
        """The config section holding this component's parameters."""
        return self.name.lower()

    @property
    def component(self) -> Component:
        if isinstance(self.source, Component):
            return self.source
        try:
            component = load_reference(self.source, default_attribute="COMPONENT")
        except (ImportError, AttributeError) as error:
            raise PipelineError(f"{self.name}: cannot load {self.source}: {error}") from error
        if component.name != self.name:
            raise PipelineError(f"{self.source}.COMPONENT is named {component.name!r}, expected {self.name!r}")
        return component

    def producers(self) -> set[str]:
        return {reference.split(".", 1)[0] for reference in self.wiring.values()}


def _component_module(name: str) -> str:
    """The light spec module: reading a spec never imports TensorFlow or Beam (see specs.py)."""
    return f"ganpipe.components.specs:{name.upper()}"


DEFAULT_NODES: tuple[Node, ...] = (
    Node("Ingest", _component_module("Ingest")),
    Node("Preprocess", _component_module("Preprocess"), {"examples": "Ingest.examples"}),
    Node("Classifier", _component_module("Classifier"),
         {"examples": "Preprocess.examples", "schema": "Preprocess.schema"}),
    Node("Train", _component_module("Train"),
         {"examples": "Preprocess.examples", "schema": "Preprocess.schema",
          "statistics": "Preprocess.statistics", "classifier": "Classifier.classifier"}),
    Node("Evaluate", _component_module("Evaluate"),
         {"model": "Train.model", "examples": "Preprocess.examples", "schema": "Preprocess.schema",
          "classifier": "Classifier.classifier"},
         resolved={"served": "ganpipe.pipeline.resolvers:served_model"}),
    Node("Export", _component_module("Export"),
         {"model": "Train.model", "blessing": "Evaluate.blessing", "schema": "Preprocess.schema"}),
)


def resolve_inputs(node: Node, store, pipeline: str, upstream: Mapping[str, Any], parameters: Mapping[str, Any],
                   root: str, sections: Mapping[str, dict]) -> dict[str, Any]:
    """The node's resolved inputs that its resolvers found (absent ones are left out)."""
    found = {}
    for name, spec in node.resolved.items():
        artifact = load_reference(spec)(store, pipeline, dict(upstream), dict(parameters), root=root, sections=sections)
        if artifact is not None:
            found[name] = artifact
    return found


def load_nodes(spec: str) -> tuple[Node, ...]:
    """Imports ``"package.module:ATTRIBUTE"``, a sequence of nodes (lets users run their own DAG)."""
    if not all(split_reference(spec)):
        raise PipelineError(f"pipeline.dag: {spec!r} is not of the form 'package.module:ATTRIBUTE'")
    try:
        nodes = load_reference(spec)
    except (ImportError, AttributeError) as error:
        raise PipelineError(f"pipeline.dag: cannot load {spec!r}: {error}") from error
    if not all(isinstance(node, Node) for node in nodes):
        raise PipelineError(f"pipeline.dag: {spec!r} must be a sequence of ganpipe.pipeline.dag.Node")
    return tuple(nodes)


def find_node(nodes: Sequence[Node], name: str) -> Node:
    """Case-insensitive lookup, so ``--until train`` works as well as ``--until Train``."""
    for node in nodes:
        if node.name.lower() == name.lower():
            return node
    raise PipelineError(f"unknown component {name!r}; the pipeline has {', '.join(n.name for n in nodes)}")


def topological_order(nodes: Sequence[Node]) -> list[Node]:
    """Producers before consumers; ties keep the declared order so runs print the same way."""
    by_name = {node.name: node for node in nodes}
    for node in nodes:
        for producer in node.producers():
            if producer not in by_name:
                raise PipelineError(f"{node.name}: input from unknown component {producer!r}")
    ordered: list[Node] = []
    placed: set[str] = set()
    while len(ordered) < len(nodes):
        ready = [n for n in nodes if n.name not in placed and n.producers() <= placed]
        if not ready:
            stuck = sorted(n.name for n in nodes if n.name not in placed)
            raise PipelineError(f"the wiring has a cycle among {', '.join(stuck)}")
        ordered.append(ready[0])
        placed.add(ready[0].name)
    return ordered


def upstream_closure(nodes: Sequence[Node], name: str) -> list[Node]:
    """``name`` and every node it depends on, in topological order (what ``--until`` runs)."""
    by_name = {node.name: node for node in nodes}
    wanted, pending = set(), [find_node(nodes, name).name]
    while pending:
        current = pending.pop()
        if current not in wanted:
            wanted.add(current)
            pending.extend(by_name[current].producers())
    return [node for node in topological_order(nodes) if node.name in wanted]


def check_wiring(nodes: Sequence[Node]) -> None:
    """Every required input wired, every reference naming a real output of the right type."""
    components = {node.name: node.component for node in nodes}
    for node in nodes:
        component = components[node.name]
        for input_name, reference in node.wiring.items():
            if input_name not in component.inputs:
                raise PipelineError(
                    f"{node.name}: no input named {input_name!r}; inputs are {', '.join(component.inputs)}")
            producer, _, output = reference.partition(".")
            produced = components[producer].outputs
            if output not in produced:
                raise PipelineError(f"{node.name}.{input_name}: {producer} has no output {output!r}")
            if produced[output] != component.inputs[input_name]:
                raise PipelineError(
                    f"{node.name}.{input_name}: expects {component.inputs[input_name]}, "
                    f"{reference} is {produced[output]}")
        for input_name in node.resolved:
            if input_name not in component.optional_inputs or input_name in node.wiring:
                raise PipelineError(f"{node.name}.{input_name}: a resolved input must be an optional input "
                                    "that is not also wired")
        missing = set(component.inputs) - set(node.wiring) - set(component.optional_inputs)
        if missing:
            raise PipelineError(f"{node.name}: required input {sorted(missing)[0]!r} is not wired")
