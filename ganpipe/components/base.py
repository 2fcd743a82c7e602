"""The small types every component is made of: Parameter, Artifact, Component, ExecutionContext.

A component is a spec (typed inputs, outputs and parameters) plus an executor function. The
executor never chooses where its outputs go: the runner hands it one staging directory per output
(``outputs[name].uri``), the executor writes files there and may set ``properties``; the runner
fingerprints and publishes them atomically. Components never import ``ganpipe.pipeline``.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import time
from typing import Any, Callable

# YAML 1.1 (PyYAML) reads 2e-4 and 1e3 as strings: its float rule wants a dot and a signed exponent.
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
from ganpipe.infra import storage
from ganpipe.infra.references import load_reference
from ganpipe.infra.errors import ComponentError  # noqa: F401  components raise it from here too


def absolute_path(path: str | None) -> str | None:
    """A local path made absolute against the working directory at config time; URIs as given,
    so a cache key names the same files whatever the working directory of a later run."""
    return path if not path or not storage.is_local(path) else os.path.abspath(os.path.expanduser(path))


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
    # check(value, where) raises ValueError naming ``where`` for a value of the right type that the
    # step would refuse anyway (a name with "/", an unknown policy): refused at config time instead.
    check: Callable[[Any, str], Any] | None = None

    def validate(self, value: Any, where: str) -> Any:
        """Returns ``value`` (ints widened to float where a float is wanted) or raises ValueError."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{where}: must not be empty")
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        value = _as_number(value, types)
        if isinstance(value, bool) and bool not in types:
            raise ValueError(f"{where}: expected {_type_names(types)}, got {value!r}")
        if not isinstance(value, types):
            raise ValueError(f"{where}: expected {_type_names(types)}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}"
                             + did_you_mean(value, self.choices))
        if self.min is not None and value < self.min:
            raise ValueError(f"{where}: {value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{where}: {value!r} is above the maximum {self.max}")
        if self.check is not None:
            self.check(value, where)
        return self.normalize(value) if self.normalize else value


def check_plain_name(value: str, where: str) -> None:
    """A name used as one directory level: no separator, not empty, "." or ".."."""
    if not value or value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"{where}: {value!r} must be a plain directory name (no '/', not '.' or '..')")


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def _as_number(value: Any, types: tuple[type, ...]) -> Any:
    """Numbers in the form the parameter wants: int -> float, '2e-4' -> 0.0002, '1e3' or 1000.0 -> 1000
    for an int; anything else unchanged (so the type check names it)."""
    if isinstance(value, bool) or not (float in types or int in types):
        return value
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    if float in types and isinstance(value, int):
        return float(value)
    if int in types and float not in types and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def did_you_mean(word: Any, choices) -> str:
    """" (did you mean 'steps'?)" when ``word`` is close to one of ``choices``, else ""."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(given: dict, known, where: str) -> None:
    """Raises ValueError naming the first unknown key of ``given``, what is allowed and the closest match."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key{did_you_mean(unknown[0], known)}; "
                         f"allowed keys are {', '.join(sorted(known))}")


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


class Progress:
    """How far a component's long loop is: ``update(done, **fields)`` with a few compact metrics.

    This plain form logs a line at every tenth of the total (and at the end) with the rate and
    the ETA, as wanted when stdout is a file or a pipe; the CLI swaps in a live bar on a terminal.
    Use as a context manager so the last line is always written.
    """

    STEPS = 10  # plain lines per loop

    def __init__(self, log: Callable[[str], None], description: str, total: int, unit: str):
        self.log, self.description, self.total, self.unit = log, description, max(int(total), 1), unit
        self.started, self.done, self.first = time.monotonic(), 0, None
        self.fields: dict[str, Any] = {}
        self._next_line = max(1, self.total // self.STEPS)

    def update(self, done: int, **fields: Any) -> None:
        if self.first is None:  # a resumed loop starts part-way: the rate counts only this session
            self.first, self.started = done, time.monotonic()
        self.done = done
        self.fields.update(fields)
        if done >= self._next_line or done >= self.total:
            self._next_line = (done * self.STEPS // self.total + 1) * self.total // self.STEPS
            self.log(self.line())

    def rate(self) -> float | None:
        seconds = time.monotonic() - self.started
        return (self.done - (self.first or 0)) / seconds if seconds > 0 and self.done > (self.first or 0) else None

    def line(self) -> str:
        rate = self.rate()
        eta = f"ETA {format_seconds((self.total - self.done) / rate)}" if rate else "ETA -"
        shown = ", ".join(f"{name} {format_field(value)}" for name, value in self.fields.items())
        rate_text = f"{rate:.3g} {self.unit}/s" if rate else f"- {self.unit}/s"
        return (f"{self.description} {self.done}/{self.total} ({100 * self.done // self.total}%)"
                + (f", {shown}" if shown else "") + f", {rate_text}, {eta}")

    def close(self) -> None:
        pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def format_field(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass
class ExecutionContext:
    """What the runner gives an executor besides its artifacts and parameters."""

    pipeline_name: str
    component: str
    execution_id: int
    beam_args: list[str] = dataclasses.field(default_factory=list)
    pipeline_root: str = ""  # where relative, pipeline-wide places (e.g. Export's serving/) live
    log: Callable[[str], None] = print
    # progress(description, total, unit) -> Progress; the runner gives a live bar on a terminal.
    progress: Callable[[str, int, str], Progress] | None = None

    def __post_init__(self):
        if self.progress is None:
            self.progress = lambda description, total, unit: Progress(self.log, description, total, unit)


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
    # Checks across parameters (e.g. Train's ``network`` against its ``family``); returns the
    # resolved parameters or raises ValueError naming the key. Runs at config time, before TF loads.
    check: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    # TensorBoard run name -> log directory relative to the execution's outputs ("model/logs/train"):
    # the runner links them into the run's TensorBoard view while the component is still writing.
    tensorboard_logs: dict[str, str] = dataclasses.field(default_factory=dict)
    # Distributions whose installed versions shape the output: their versions are in the cache key.
    dependencies: tuple[str, ...] = ()
    # parameters -> JSON value fingerprinting what the step reads from outside the pipeline (source
    # files, weights); computed before the cache key, so it must not import TensorFlow or Beam.
    external_inputs: Callable[[dict[str, Any]], Any] | None = None
    # parameters -> names of modules the executor runs without importing them (a custom model
    # family's module, registered when the DAG module was imported): in the code closure too.
    code_modules: Callable[[dict[str, Any]], tuple[str, ...]] | None = None

    def semantic_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` without the ones declared not to affect the output."""
        volatile = {p.name for p in self.parameters if not p.semantic}
        return {key: value for key, value in params.items() if key not in volatile}

    def execute(self, inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict[str, Any],
                ctx: ExecutionContext) -> None:
        executor = self.executor
        if isinstance(executor, str):
            executor = load_reference(executor)
        executor(inputs, outputs, params, ctx)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.parameters}

    def resolve_parameters(self, given: dict[str, Any], section: str | None = None) -> dict[str, Any]:
        """Validates ``given`` against the spec and fills in defaults; names the bad key on error."""
        section = section or self.name
        known = {p.name: p for p in self.parameters}
        check_keys(given, known, section)
        resolved = self.defaults()
        for key, value in given.items():
            resolved[key] = known[key].validate(value, f"{section}.{key}")
        return self.check(resolved, section) if self.check else resolved
