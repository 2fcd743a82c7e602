"""The small types every component is made of: Parameter, Artifact, Component, ExecutionContext.

A component is a spec (typed inputs, outputs and parameters) plus an executor function. The
executor never chooses where its outputs go: the runner hands it one staging directory per output
(``outputs[name].uri``), the executor writes files there and may set ``properties``; the runner
fingerprints and publishes them atomically. Components never import ``ganpipe.pipeline``.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Callable

from ganpipe.components import storage


def absolute_path(path: str | None) -> str | None:
    """A local path made absolute against the working directory at config time; URIs as given,
    so a cache key names the same files whatever the working directory of a later run."""
    return path if not path or not storage.is_local(path) else os.path.abspath(os.path.expanduser(path))


class ComponentError(RuntimeError):
    """A component failed for a reason the user can act on (bad input, diverged training...)."""


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One configurable parameter: its type, default and allowed values, validated on load."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    # False for knobs that do not change the output (logging and checkpoint cadence): left out of
    # the cache key, so changing them neither re-runs the step nor loses a resumable attempt.
    semantic: bool = True
    # Applied to a valid value at config time, e.g. making a path absolute so the cache key names
    # the same files whatever the working directory of a later run.
    normalize: Callable[[Any], Any] | None = None

    def validate(self, value: Any, where: str) -> Any:
        """Returns ``value`` (ints widened to float where a float is wanted) or raises ValueError."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{where}: must not be empty")
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types:
            raise ValueError(f"{where}: expected {_type_names(types)}, got {value!r}")
        if not isinstance(value, types):
            raise ValueError(f"{where}: expected {_type_names(types)}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{where}: {value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{where}: {value!r} is above the maximum {self.max}")
        return self.normalize(value) if self.normalize else value


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


@dataclasses.dataclass
class Artifact:
    """A typed output of an execution: a directory (``uri``) plus small JSON-able properties."""

    type: str
    uri: str
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    fingerprint: str = ""
    id: int | None = None

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    def read_json(self, name: str) -> Any:
        return storage.read_json(self.path(name))

    def write_json(self, name: str, value: Any) -> str:
        target = self.path(name)
        storage.write_json(target, value)
        return target


@dataclasses.dataclass
class ExecutionContext:
    """What the runner gives an executor besides its artifacts and parameters."""

    pipeline_name: str
    component: str
    execution_id: int
    beam_args: list[str] = dataclasses.field(default_factory=list)
    pipeline_root: str = ""  # where relative, pipeline-wide places (e.g. Export's serving/) live
    log: Callable[[str], None] = print


Executor = Callable[[dict[str, Artifact], dict[str, Artifact], dict[str, Any], ExecutionContext], None]


@dataclasses.dataclass(frozen=True)
class Component:
    """A pipeline step: ``inputs`` / ``outputs`` map names to artifact types.

    ``executor`` is a function or its ``"module:function"`` name; the name is imported only when
    the step runs, so a spec can be read without importing TensorFlow or Beam.
    """

    name: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    parameters: tuple[Parameter, ...]
    executor: Executor | str
    optional_inputs: tuple[str, ...] = ()
    description: str = ""
    # A resumable executor (Train) finds its previous attempt's files in the staging directory and
    # continues from them; for the others the runner empties the staging directory first.
    resumable: bool = False
    # Distributions whose installed versions shape the output: their versions are in the cache key.
    dependencies: tuple[str, ...] = ()
    # parameters -> JSON value fingerprinting what the step reads from outside the pipeline (source
    # files, weights); computed before the cache key, so it must not import TensorFlow or Beam.
    external_inputs: Callable[[dict[str, Any]], Any] | None = None

    def semantic_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` without the ones declared not to affect the output."""
        volatile = {p.name for p in self.parameters if not p.semantic}
        return {key: value for key, value in params.items() if key not in volatile}

    def execute(self, inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict[str, Any],
                ctx: ExecutionContext) -> None:
        executor = self.executor
        if isinstance(executor, str):
            module, _, function = executor.partition(":")
            executor = getattr(importlib.import_module(module), function)
        executor(inputs, outputs, params, ctx)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.parameters}

    def resolve_parameters(self, given: dict[str, Any], section: str | None = None) -> dict[str, Any]:
        """Validates ``given`` against the spec and fills in defaults; names the bad key on error."""
        section = section or self.name
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(
                f"{section}.{unknown[0]}: unknown key; allowed keys are {', '.join(sorted(known))}"
            )
        resolved = self.defaults()
        for key, value in given.items():
            resolved[key] = known[key].validate(value, f"{section}.{key}")
        return resolved
