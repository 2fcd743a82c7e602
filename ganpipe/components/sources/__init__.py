"""Data sources of Ingest: one module per source kind, under this registry.

The registry declares, for each kind, the argument it takes after ``kind:``, the Ingest parameters
it reads and the module implementing it. That module provides ``plan(argument, params)``, which
checks the source in the driver (a missing path, an empty source or a wrong file type fails
here, before any pipeline runs) and returns a ``common.SourcePlan`` holding the Beam reader.

This module imports nothing heavy, so config validation (``specs``) can read the parameters
without importing Beam or TensorFlow; a kind's module is imported only when a source is planned:

    from ganpipe.components import sources
    plan = sources.plan_source("csv:table.csv", params)   # -> common.SourcePlan
    pipeline | plan.read                                  # batches of common.RawRecord
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from ganpipe.components.base import ComponentError, Parameter, absolute_path, did_you_mean
from ganpipe.infra import listing  # light: Beam is imported only to match a glob

if TYPE_CHECKING:  # Never run. Names the kind modules, imported by name below, for Ingest's cache
    # key: pipeline/cache.py finds a step's code by reading import statements, not strings.
    from ganpipe.components.sources import csv, digits, images, npz, photos, tfds, tfrecord  # noqa: F401


@dataclasses.dataclass(frozen=True)
class SourceKind:
    """A registry entry: how a source of this kind is written and which parameters it reads."""

    name: str
    argument: str | None  # how to write the part after "kind:" (e.g. "<dir>"); None: no argument
    parameters: tuple[Parameter, ...]
    module: str  # provides plan(argument, params) -> SourcePlan
    # File kinds: the pattern the argument is listed with ("{}/**": every file under a directory)
    # and whether hidden names under it are left out. The reader and the cache key both read
    # ``listing(argument)``, so the key sees exactly the files that are read.
    pattern: str = "{}"
    skip_hidden: bool = False

    @property
    def takes_path(self) -> bool:
        """The argument names files (made absolute at config time, fingerprinted in the key)."""
        return self.argument in ("<dir>", "<glob>", "<file>")

    @property
    def syntax(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.argument}"

    def plan(self, argument: str, params: dict):
        return importlib.import_module(self.module).plan(argument, params)

    def listing(self, argument: str) -> listing.Listing:
        """The files behind a file source (``infra.listing``): what its reader reads."""
        pattern = argument if self.pattern == "{}" else self.pattern.format(argument.rstrip("/"))
        found = listing.list_files(pattern)
        return found.without(lambda path: is_hidden(path, argument)) if self.skip_hidden else found


def is_hidden(path: str, root: str) -> bool:
    """A name under ``root`` with a part starting with "." (``.git/x``, ``a/.DS_Store``)."""
    relative = path[len(root.rstrip("/")) + 1:] if path.startswith(root.rstrip("/") + "/") else path
    return any(part.startswith(".") for part in relative.split("/"))


# Parameters read by more than one kind are declared once.
IMAGE_FEATURE = Parameter("image_feature", str, "image",
                          "tfds/tfrecord feature holding the image (bytes) or vector (float/int list)")
LABEL_FEATURE = Parameter("label_feature", str, "label", "tfds/tfrecord label feature; empty: no labels",
                          nullable=True)
LABEL_COLUMN = Parameter("label_column", str, None, "csv column / npz array holding labels", nullable=True)

KINDS: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        SourceKind("digits", None, (), f"{__name__}.digits"),
        SourceKind("photos", None, (
            Parameter("patch_size", int, 64, "photos: side of the square patches in pixels", min=4),
            Parameter("patch_stride", int, 32, "photos: step between patches (< patch_size: overlapping)", min=1),
        ), f"{__name__}.photos"),
        SourceKind("images", "<dir>", (), f"{__name__}.images", pattern="{}/**", skip_hidden=True),
        SourceKind("tfds", "<name>", (
            Parameter("tfds_data_dir", str, None, "TensorFlow Datasets data_dir (tfds default if empty)",
                      nullable=True, normalize=absolute_path),
            Parameter("tfds_download", bool, False, "let tfds download and prepare the data set"),
            Parameter("tfds_split", str, "train", "tfds split to read, e.g. train or train[:10%]"),
            IMAGE_FEATURE,
            LABEL_FEATURE,
        ), f"{__name__}.tfds"),
        SourceKind("tfrecord", "<glob>", (
            IMAGE_FEATURE,
            LABEL_FEATURE,
            Parameter("compression", str, "auto", "tfrecord files: auto (by extension, .gz = gzip) | none | gzip",
                      choices=("auto", "none", "gzip")),
        ), f"{__name__}.tfrecord"),
        SourceKind("npz", "<file>", (
            Parameter("features_key", str, "x", "npz array holding the data"),
            LABEL_COLUMN,
        ), f"{__name__}.npz"),
        SourceKind("csv", "<file>", (
            LABEL_COLUMN,
            Parameter("csv_delimiter", str, ",", "csv field delimiter"),
            Parameter("csv_encoding", str, "utf-8-sig", "csv text encoding (utf-8-sig: UTF-8, byte-order mark "
                      "skipped); an undecodable row is a rejected record"),
        ), f"{__name__}.csv"),
    )
}


def source_parameters() -> tuple[Parameter, ...]:
    """Every kind's parameters, each once, in registry order."""
    seen: dict[str, Parameter] = {}
    for kind in KINDS.values():
        for parameter in kind.parameters:
            if seen.setdefault(parameter.name, parameter) is not parameter:
                raise AssertionError(f"source parameter {parameter.name!r} is declared twice")
    return tuple(seen.values())


def source_syntax() -> str:
    return " | ".join(kind.syntax for kind in KINDS.values())


def split_source(source: str) -> tuple[str, str]:
    """``kind:argument`` -> (kind name, argument): the one place the string is split (a URI
    argument keeps its own colons)."""
    name, _, argument = source.partition(":")
    return name, argument


def parse_source(source: str) -> tuple[SourceKind, str]:
    """Splits ``kind:argument``; unknown kinds and a missing or extra argument fail at once."""
    name, argument = split_source(source)
    kind = KINDS.get(name)
    if kind is None:
        raise ComponentError(
            f"ingest.source: unknown source kind {name!r} in {source!r}; use one of {source_syntax()}"
            + did_you_mean(name, KINDS)
        )
    if kind.argument is None and argument:
        raise ComponentError(f"ingest.source: {name!r} takes no argument, got {source!r}")
    if kind.argument is not None and not argument:
        raise ComponentError(f"ingest.source: {name!r} needs a path or name: {kind.syntax}")
    return kind, argument


def plan_source(source: str, params: dict):
    """Checks ``source`` in the driver and returns its ``common.SourcePlan``."""
    kind, argument = parse_source(source)
    return kind.plan(argument, params)
