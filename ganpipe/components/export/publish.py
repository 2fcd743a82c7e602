"""Export's versions under ``<export_base>/<model_name>/``: listing, reading, publishing one."""
from __future__ import annotations

import os

from ganpipe.components import specs
from ganpipe.components.base import ComponentError
from ganpipe.infra import faults, storage

VERSION_ATTEMPTS = 20  # concurrent exporters may take a version between our listing and rename
EXTRA = specs.SERVED_EXTRA
SAVED_MODEL_FILE = "saved_model.pb"










def read_extra(version_dir: str, name: str) -> dict:
    try:
        return storage.read_json(storage.join(version_dir, EXTRA, name))
    except (OSError, ValueError):
        return {}


def read_card(version_dir: str) -> str:
    return storage.read_bytes(storage.join(version_dir, EXTRA, "README.md")).decode("utf-8")


def publish_version(incoming: str, model_root: str, before_rename) -> str:
    """Moves the complete ``incoming`` to the next integer version under ``model_root``, after
    ``before_rename(version)`` (which writes the card naming it) and an fsync of everything;
    returns what ``before_rename`` returned for the version that was claimed. On a local disk
    the move is one atomic rename; on an object store it goes object by object."""
    version = next_version(model_root)
    for _ in range(VERSION_ATTEMPTS):
        written = before_rename(version)
        storage.sync_tree(incoming)
        faults.point("Export:before-version")
        try:
            # saved_model.pb last: TF Serving and tf.saved_model.load recognise a SavedModel by it, so
            # on an object store a version is never loaded while its variables are still arriving.
            storage.move_tree(incoming, storage.join(model_root, str(version)), commit_last=SAVED_MODEL_FILE)
        except FileExistsError:  # taken meanwhile
            version = max(version + 1, next_version(model_root))
            continue
        storage.sync_directory(model_root)
        return written
    raise ComponentError(f"{model_root}: could not claim a version directory after {VERSION_ATTEMPTS} attempts")


def versions(model_root: str) -> list[int]:
    return [int(name) for name in storage.listdir(model_root) if name.isdigit()]


def newest_first(model_root: str) -> list[int]:
    """The versions under ``model_root``, the served one first: TF Serving serves the newest."""
    return sorted(versions(model_root), reverse=True)


def next_version(model_root: str) -> int:
    return max(versions(model_root), default=0) + 1


def check_model_name(name: str) -> None:
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ComponentError(f"export.model_name: {name!r} must be a plain directory name")

