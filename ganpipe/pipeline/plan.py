"""``ganpipe run --dry-run``: what a run would do, step by step, and why, without running anything.

A thin walk over the runner's own cache-key code (``cache.cache_key``, the nodes' resolvers): a
step whose inputs are all known (published artifacts of cache hits) gets its real cache key, and
a COMPLETE execution with that key whose outputs are present is a hit; otherwise the reason is the first difference from the component's last execution in this
pipeline (parameters, code, upstream outputs).
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from ganpipe.pipeline import cache, dag
from ganpipe.pipeline.layout import key_material_path
from ganpipe.pipeline.metadata import COMPLETE, MetadataStore, STORE_FILE
from ganpipe.pipeline.publish import artifact_problem
from ganpipe.pipeline.runner import LocalRunner, check_store_has_root_history

CACHED, WILL_RUN = "cached", "will run"


def dry_run(runner: LocalRunner, until: str | None = None, force: Iterable[str] = ()) -> list[tuple[str, str, str]]:
    """``(component, CACHED | WILL_RUN, why)`` for each step the run would take, in order."""
    ordered, forced = runner.plan(until, force)
    store_path = os.path.join(runner.metadata, STORE_FILE)
    if not os.path.isfile(store_path) or not _has_executions(runner.metadata):
        check_store_has_root_history(False, store_path, runner.root, runner.pipeline)
        return [(node.name, WILL_RUN, f"no runs yet under {runner.metadata}") for node in ordered]
    known: dict[str, object] = {}  # "Producer.output" -> Artifact, for steps that would be cache hits
    steps = []
    with MetadataStore(runner.metadata, read_only=True) as store:
        for node in ordered:
            component = node.component
            parameters = runner.parameters.get(node.section) or component.resolve_parameters({}, node.section)
            missing = sorted({ref.split(".")[0] for ref in node.wiring.values() if ref not in known})
            if node.name in forced:
                steps.append((node.name, WILL_RUN, "forced (--force)"))
                continue
            if missing:
                steps.append((node.name, WILL_RUN, f"if the new output of {', '.join(missing)} differs"))
                continue
            upstream = {name: known[ref] for name, ref in node.wiring.items()}
            inputs = {**upstream, **dag.resolve_inputs(node, store, runner.pipeline, upstream, parameters, runner.root,
                                                       runner.parameters)}
            material = cache.key_material(component, parameters, inputs)
            lookup = store.find_cached(runner.pipeline, cache.key_of(material), artifact_problem)
            if lookup.source:
                known.update({f"{node.name}.{name}": artifact for name, artifact in lookup.outputs.items()})
                steps.append((node.name, CACHED, f"same parameters, inputs and code as execution "
                                                 f"{lookup.source.id} (run {lookup.source.run_id})"))
                continue
            why = lookup.damaged[0] if lookup.damaged else _why(store, runner, component.name, parameters, material)
            steps.append((node.name, WILL_RUN, why))
    return steps


def _has_executions(metadata: str) -> bool:
    with MetadataStore(metadata, read_only=True) as store:
        return store.has_executions()


def _why(store: MetadataStore, runner: LocalRunner, component: str, parameters: dict, material: dict) -> str:
    last = next((e for e in reversed(store.executions(state=COMPLETE))
                 if e.pipeline == runner.pipeline and e.component == component), None)
    if last is None:
        return "never ran in this pipeline"
    changed = sorted(key for key in set(parameters) | set(last.parameters)
                     if parameters.get(key) != last.parameters.get(key))
    if changed:
        shown = ", ".join(f"{key} {last.parameters.get(key)!r} -> {parameters.get(key)!r}" for key in changed[:3])
        return f"parameters changed since execution {last.id}: {shown}" + (" ..." if len(changed) > 3 else "")
    if last.code_fingerprint != material["code"]:
        return f"code changed since execution {last.id}"
    recorded = key_material_path(runner.metadata, runner.pipeline, component, last.id)
    if os.path.exists(recorded):
        with open(recorded) as handle:
            changed = cache.what_changed(json.load(handle), material)
        if changed:
            return f"{changed} since execution {last.id}"
    return f"inputs changed since execution {last.id} (or its outputs were deleted)"
