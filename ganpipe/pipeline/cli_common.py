"""What the ``ganpipe`` commands share: the usage error, where runs are found (``--root`` and
``--metadata``, as ``ganpipe run`` was given them), the metadata store, tables."""
from __future__ import annotations

import os
import shlex

import click

from ganpipe.pipeline.config import ConfigError, default_root, resolve_locations
from ganpipe.pipeline.console import echo
from ganpipe.pipeline.metadata import STORE_FILE, MetadataStore
from ganpipe.pipeline.layout import run_is_alive


class UsageFailure(click.ClickException):
    """A usage or configuration error: message on stderr, exit code 2, no usage dump."""

    exit_code = 2


def root_option(command):
    """``--root`` (the artifact root, a path or URI) and ``--metadata`` (the local directory of the
    metadata store), on every command that finds runs: as ``ganpipe run`` was given them."""
    command = click.option(
        "--metadata", default=None, metavar="DIR",
        help="Local directory of the metadata store [default: the root when local, else $GANPIPE_ROOT or "
             "./ganpipe_runs].")(command)
    return click.option(
        "--root", default=None, metavar="PATH|URI",
        help="Artifact root, a local path or a URI such as gs://bucket/runs [default: $GANPIPE_ROOT or "
             "./ganpipe_runs].")(command)


def locations_arguments(root: str, metadata: str) -> str:
    """The ``--root``/``--metadata`` arguments that find this root's runs again from anywhere."""
    arguments = f"--root {shlex.quote(root)}"
    if metadata != root:
        arguments += f" --metadata {shlex.quote(metadata)}"
    return arguments


def existing_store(root: str | None, metadata: str | None) -> str:
    """The metadata directory of ``root`` (or ``metadata``), which must hold a store."""
    try:
        metadata = resolve_locations(root or default_root(), metadata)[1]
    except ConfigError as error:
        raise UsageFailure(f"--root/--metadata: {error}") from error
    if not os.path.isfile(os.path.join(metadata, STORE_FILE)):
        raise UsageFailure(f"{metadata}: no {STORE_FILE} here (no runs yet?); pass the --root (and --metadata) "
                           f"the run was given, or set $GANPIPE_ROOT")
    return metadata


def open_store(root: str | None, metadata: str | None) -> MetadataStore:
    """Opens an existing store read-only; runs whose process died show as ABANDONED."""
    metadata = existing_store(root, metadata)
    return MetadataStore(metadata, read_only=True, is_alive=run_is_alive(metadata))


def table(headers: tuple[str, ...], rows: list[tuple]) -> None:
    cells = [tuple(map(str, headers))] + [tuple(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
