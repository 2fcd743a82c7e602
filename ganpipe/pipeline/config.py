"""Pipeline configuration: YAML file + ``--set section.key=value`` overrides, validated up front.

Sections: ``pipeline`` (name, root, dag), ``beam`` (args) and one per component, named after the
component in lower case, whose keys are that component's Parameters. Every mistake (unknown
section or key, wrong type, value out of range) is a ``ConfigError`` naming the key and what is
allowed, raised before anything runs.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterable

import yaml

from ganpipe.infra import storage
from ganpipe.components import specs
from ganpipe.components.base import check_keys, did_you_mean
from ganpipe.pipeline import dag
from ganpipe.pipeline.metadata import STORE_FILE

DEFAULT_ROOT = "./ganpipe_runs"
ROOT_ENV = "GANPIPE_ROOT"  # the default pipeline root when neither config nor --root gives one
PIPELINE_DEFAULTS = {"name": "digits_cgan", "root": None, "metadata": None, "dag": dag.DEFAULT_DAG}
# ``ganpipe run`` without a config file (and with the built-in DAG) runs this shipped file.
BUILT_IN_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "digits.yaml")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What the root holds beside the pipelines' directories: the store with SQLite's side files and
# Export's default serving directory. A pipeline of one of these names would write over them.
RESERVED_NAMES = (*(STORE_FILE + suffix for suffix in ("", "-journal", "-wal", "-shm")), specs.SERVING_DIR)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file or key and what is allowed."""


@dataclasses.dataclass
class PipelineConfig:
    name: str
    root: str  # artifacts: an absolute local path or a URI (gs://bucket/runs)
    metadata: str  # the metadata store and locks: an absolute local path
    dag: str
    beam_args: list[str]
    nodes: tuple[dag.Node, ...]
    parameters: dict[str, dict[str, Any]]  # section -> resolved parameters

    def as_dict(self) -> dict[str, Any]:
        """The resolved configuration, as recorded with each run."""
        return {"pipeline": {"name": self.name, "root": self.root, "metadata": self.metadata, "dag": self.dag},
                "beam": {"args": list(self.beam_args)}, **self.parameters}


def default_root() -> str:
    return os.environ.get(ROOT_ENV) or DEFAULT_ROOT


def load_config(path: str | None = None, overrides: Iterable[str] = (),
                nodes: tuple[dag.Node, ...] | None = None) -> PipelineConfig:
    """Reads ``path`` (None with the built-in DAG: ``BUILT_IN_CONFIG``), applies overrides and
    validates everything.

    ``nodes`` replaces the DAG named by ``pipeline.dag`` (tests run toy pipelines this way).
    """
    if path is None and nodes is None and _dag_named(overrides) == dag.DEFAULT_DAG:
        path = BUILT_IN_CONFIG
    raw = _read_yaml(path) if path else {}
    for override in overrides:
        _apply_override(raw, override)
    where = path or "config"
    pipeline = _pipeline_section(raw.get("pipeline", {}))
    beam_args = _beam_args(raw.get("beam", {}))
    try:
        nodes = nodes if nodes is not None else dag.load_nodes(pipeline["dag"])
    except dag.PipelineError as error:
        raise ConfigError(str(error)) from error
    sections = {node.section: node for node in nodes}
    unknown = sorted(set(raw) - {"pipeline", "beam"} - set(sections))
    if unknown:
        allowed = ", ".join(["pipeline", "beam", *sections])
        raise ConfigError(f"{where}: unknown section {unknown[0]!r}{did_you_mean(unknown[0], ['pipeline', 'beam', *sections])}; "
                          f"allowed sections are {allowed}")
    parameters = {}
    for section, node in sections.items():
        given = raw.get(section) or {}
        _require_mapping(given, section)
        try:
            parameters[section] = node.component.resolve_parameters(given, section)
        except ValueError as error:
            raise ConfigError(str(error)) from error
    root, metadata = resolve_locations(pipeline["root"] or default_root(), pipeline["metadata"])
    return PipelineConfig(name=pipeline["name"], root=root, metadata=metadata,
                          dag=pipeline["dag"], beam_args=beam_args, nodes=tuple(nodes),
                          parameters=parameters)


def resolve_locations(root: str, metadata: str | None = None) -> tuple[str, str]:
    """(artifact root, metadata directory). The root may be any URI an installed filesystem
    serves; the metadata store (SQLite) and locks need a local disk: by default the root itself
    when it is local, else ``$GANPIPE_ROOT`` or ./ganpipe_runs."""
    try:
        root = storage.normalize_root(root)
    except storage.UnsupportedScheme as error:
        raise ConfigError(f"pipeline.root: {error}") from error
    if metadata is not None and not storage.is_local(metadata):
        raise ConfigError(f"pipeline.metadata: {metadata!r} must be a local directory (SQLite and file locks)")
    if metadata is None:
        metadata = root if storage.is_local(root) else default_root()
    return root, os.path.abspath(storage.local_path(metadata))


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _apply_override(raw: dict[str, Any], override: str) -> None:
    """``section.key=value`` with ``value`` parsed as YAML (``3`` is an int, ``[a, b]`` a list);
    more dots reach into nested mappings (``train.network.width=64`` sets one key of ``network``)."""
    target, sep, text = override.partition("=")
    path = target.strip().split(".")
    if not sep or len(path) < 2 or not all(path):
        raise ConfigError(f"--set {override!r}: expected section.key=value, e.g. train.steps=200")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {override!r}: value is not valid YAML: {error}") from error
    mapping = raw
    for depth, key in enumerate(path[:-1]):
        if mapping.get(key) is None:
            mapping[key] = {}
        mapping = mapping[key]
        _require_mapping(mapping, ".".join(path[:depth + 1]))
    mapping[path[-1]] = value


def _require_mapping(value: Any, section: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{section}: must be a mapping of keys to values, got {value!r}")


def _dag_named(overrides: Iterable[str]) -> str:
    """The DAG the overrides name (``pipeline.dag``), else the built-in one."""
    raw: dict[str, Any] = {}
    for override in overrides:
        _apply_override(raw, override)
    return (raw.get("pipeline") or {}).get("dag") or dag.DEFAULT_DAG


def _pipeline_section(given: Any) -> dict[str, Any]:
    given = given or {}
    _require_mapping(given, "pipeline")
    _reject_unknown(given, PIPELINE_DEFAULTS, "pipeline")
    section = {**PIPELINE_DEFAULTS, **given}
    for key, value in section.items():
        if key in ("root", "metadata") and value is None:
            continue  # root falls back to $GANPIPE_ROOT, then ./ganpipe_runs; metadata see resolve_locations
        if not isinstance(value, str) or not value:
            raise ConfigError(f"pipeline.{key}: expected a non-empty string, got {value!r}")
    if not _NAME_PATTERN.match(section["name"]):
        raise ConfigError(f"pipeline.name: {section['name']!r} must be letters, digits, '_', '.' or '-' "
                          "(it names a directory)")
    if section["name"] in RESERVED_NAMES:
        raise ConfigError(f"pipeline.name: {section['name']!r} is a name the root holds for itself "
                          f"({', '.join(RESERVED_NAMES)}); choose another")
    return section


def _beam_args(given: Any) -> list[str]:
    given = given or {}
    _require_mapping(given, "beam")
    _reject_unknown(given, {"args": None}, "beam")
    args = given.get("args") or []
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise ConfigError(f"beam.args: expected a list of strings like ['--direct_num_workers=2'], got {args!r}")
    return list(args)


def _reject_unknown(given: dict[str, Any], known: dict[str, Any], section: str) -> None:
    try:
        check_keys(given, known, section)
    except ValueError as error:
        raise ConfigError(str(error)) from error


# ----------------------------------------------------------------------------- ganpipe config


def describe(config: PipelineConfig, section: str | None = None) -> str:
    """The resolved config as YAML, every parameter followed by its help (and choices) as a comment."""
    sections = {node.section: node.component for node in config.nodes}
    known = ["pipeline", "beam", *sections]
    if section is not None and section not in known:
        raise ConfigError(f"unknown section {section!r}{did_you_mean(section, known)}; sections are {', '.join(known)}")
    blocks = []
    if section in (None, "pipeline"):
        blocks.append(_block("pipeline", [("name", config.name, "names the pipeline's directory under root"),
                                          ("root", config.root, f"artifacts (a path or URI); ${ROOT_ENV} or "
                                                                f"{DEFAULT_ROOT} when empty"),
                                          ("metadata", config.metadata, "local directory of the metadata store "
                                                                        "and locks; the root when it is local"),
                                          ("dag", config.dag, "the components and their wiring (module:NODES)")]))
    if section in (None, "beam"):
        blocks.append(_block("beam", [("args", config.beam_args, "Beam pipeline options, e.g. --runner=...")]))
    for name, component in sections.items():
        if section in (None, name):
            values = config.parameters[name]
            entries = [(p.name, values[p.name], _help(p)) for p in component.parameters]
            blocks.append(f"# {component.name}: {component.description}\n" + _block(name, entries, component, values))
    return "\n\n".join(blocks)


def _help(parameter) -> str:
    choices = f" [{' | '.join(map(str, parameter.choices))}]" if parameter.choices else ""
    return parameter.help + choices


def _block(name: str, entries, component=None, values=None) -> str:
    lines = [f"{name}:"]
    for key, value, help_text in entries:
        if isinstance(value, dict) and value:
            lines.append(f"  {key}:{'  # ' + help_text if help_text else ''}")
            nested = _nested_help(component, values)
            lines += [f"    {k}: {_yaml(v)}" + (f"  # {nested[k]}" if nested.get(k) else "") for k, v in value.items()]
        else:
            lines.append(f"  {key}: {_yaml(value)}" + (f"  # {help_text}" if help_text else ""))
    return "\n".join(lines)


def _nested_help(component, values) -> dict[str, str]:
    """Help of Train's network options (the family's schema); empty for other mappings."""

    if component is None or values is None or "family" not in values:
        return {}
    return {p.name: _help(p) for p in specs.FAMILY_NETWORKS.get(values["family"], ())}


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()
