"""What a cache key is made of: everything that shapes a step's output and nothing else.

    component   the component's name
    parameters  its resolved parameters without the non-semantic ones (``Parameter.semantic``:
                logging and checkpoint cadence); paths were made absolute at config time
    inputs      the semantic fingerprint of each input artifact (resolved inputs included, e.g.
                Evaluate's blessed baseline)
    external    the component's ``external_inputs(parameters)``: the files behind a source
                (listing of path, size, mtime; content hash of a small single file), the prepared
                TFDS data, the content hash of weight files
    versions    installed versions of the distributions the component declares (TensorFlow,
                Keras, Beam, numpy, Pillow, scikit-learn, ...)
    code        sha256 of the component's code closure: the executor's module, the modules its
                ``code_modules(parameters)`` names (a custom model family's module) and every
                module of their packages or of ganpipe they import, transitively, found by
                reading the source (``ast``), never by importing it, so no TensorFlow is loaded
                to decide a hit
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import sys
from typing import Any

from ganpipe.components.base import Artifact, Component
from ganpipe.infra.references import split_reference

PACKAGE = "ganpipe"


def cache_key(component: Component, parameters: dict[str, Any], inputs: dict[str, Artifact]) -> str:
    return key_of(key_material(component, parameters, inputs))


def key_of(material: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(material).encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def what_changed(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    """In words, which part of a key's material changed between an execution and now (dependency
    versions, inputs, external files), for ``--dry-run``; None when none of them did."""
    old_versions, versions = before.get("versions") or {}, now.get("versions") or {}
    bumped = sorted(name for name in set(old_versions) | set(versions) if old_versions.get(name) != versions.get(name))
    if bumped:
        return "dependency versions changed: " + ", ".join(
            f"{name} {old_versions.get(name)} -> {versions.get(name)}" for name in bumped)
    old_inputs, inputs = before.get("inputs") or {}, now.get("inputs") or {}
    changed = sorted(name for name in set(old_inputs) | set(inputs) if old_inputs.get(name) != inputs.get(name))
    if changed:
        return f"input{'s' if len(changed) > 1 else ''} {', '.join(changed)} changed"
    if _canonical(before.get("external")) != _canonical(now.get("external")):
        return "files read from outside the pipeline changed (e.g. the source's listing)"
    return None


def key_material(component: Component, parameters: dict[str, Any], inputs: dict[str, Artifact]) -> dict[str, Any]:
    external = component.external_inputs(parameters) if component.external_inputs else None
    return {"component": component.name, "parameters": component.semantic_parameters(parameters),
            "inputs": {name: artifact.fingerprint for name, artifact in inputs.items()},
            "external": external, "versions": dependency_versions(component.dependencies),
            "code": code_fingerprint(component, parameters)}


def dependency_versions(distributions: tuple[str, ...]) -> dict[str, str | None]:
    return {name: _installed_version(name) for name in distributions}


@functools.lru_cache(maxsize=None)
def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def code_fingerprint(component: Component, parameters: dict[str, Any] | None = None) -> str:
    """sha256 over the (name, content) of every file in the step's code closure."""
    digest = hashlib.sha256()
    for name, path in sorted(code_closure(component, parameters).items()):
        digest.update(name.encode() + b"\0" + _parsed(path, *_stamp(path))[0])
    return digest.hexdigest()


def _stamp(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def code_closure(component: Component, parameters: dict[str, Any] | None = None) -> dict[str, str]:
    """{module name: source file} of the executor's module, the component's ``code_modules`` and
    what they import, transitively, within ganpipe and their own top-level packages."""
    module, path = _executor_module(component.executor)
    extra = component.code_modules(parameters) if component.code_modules and parameters is not None else ()
    packages = {PACKAGE: _package_dir(PACKAGE)}
    for name in filter(None, (module, *extra)):
        packages.setdefault(name.split(".")[0], _package_dir(name.split(".")[0]))
    closure: dict[str, str] = {}
    pending = [(module, path), *((name, _module_file(name, packages)) for root in extra for name in _with_parents(root))]
    while pending:
        name, source = pending.pop()
        if name in closure or not source:
            continue
        closure[name] = source
        for imported in _imports(name, source):
            pending.extend((candidate, _module_file(candidate, packages))
                           for candidate in _with_parents(imported) if candidate.split(".")[0] in packages)
    return closure


def _executor_module(executor) -> tuple[str, str | None]:
    if isinstance(executor, str):
        name = split_reference(executor)[0]
        top = name.split(".")[0]
        return name, _module_file(name, {top: _package_dir(top)})
    name = getattr(executor, "__module__", None) or ""
    try:
        return name, inspect.getsourcefile(executor)
    except TypeError:  # a builtin
        return name, None


@functools.lru_cache(maxsize=None)
def _package_dir(top: str) -> str | None:
    """The directory of a top-level package or the file of a top-level module (no import)."""
    loaded = sys.modules.get(top)
    origin = getattr(loaded, "__file__", None)
    if origin is None:
        spec = importlib.util.find_spec(top)  # a top-level find_spec imports nothing
        origin = spec.origin if spec else None
    if not origin:
        return None
    return os.path.dirname(origin) if os.path.basename(origin) == "__init__.py" else origin


def _module_file(name: str, packages: dict[str, str | None]) -> str | None:
    top, *rest = name.split(".")
    base = packages.get(top)
    if base is None:
        return None
    if base.endswith(".py"):
        return base if not rest else None
    candidate = os.path.join(base, *rest)
    for path in (candidate + ".py", os.path.join(candidate, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> a, a.b, a.b.c: importing a module runs its packages' ``__init__`` too."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imports(module: str, path: str) -> set[str]:
    """Module names ``path`` imports (``from p import x`` yields p and p.x: x may be a module)."""
    package = module if os.path.basename(path) == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for level, base, names in _parsed(path, *_stamp(path))[1]:
        if level is None:
            found.update(names)
            continue
        base = _absolute(base, level, package)
        found.add(base)
        found.update(f"{base}.{name}" for name in names if name != "*")
    return found


@functools.lru_cache(maxsize=None)
def _parsed(path: str, mtime_ns: int, size: int) -> tuple[bytes, tuple]:
    """(sha256 of the source, its import statements), cached per file version: parsing is the
    slow part of deciding a cache hit."""
    with open(path, "rb") as f:
        source = f.read()
    statements = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            statements.append((None, None, tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            statements.append((node.level, node.module, tuple(alias.name for alias in node.names)))
    return hashlib.sha256(source).digest(), tuple(statements)


def _absolute(module: str | None, level: int, package: str) -> str:
    if not level:
        return module or ""
    parts = package.split(".")
    base = ".".join(parts[:len(parts) - level + 1])
    return f"{base}.{module}" if module else base
