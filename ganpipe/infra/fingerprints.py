"""Fingerprints: of an artifact's semantic content, and of the files outside the pipeline a
component reads (a source directory, a weights file). Light on purpose: the runner computes them
before deciding a cache hit, so nothing here imports TensorFlow, nor Beam for a local path. An
artifact is read through ``storage``, so one function serves local and remote roots.

Artifact content (scheme 2) is what downstream steps read, not how or when it was written:

- directories named ``logs`` (TensorBoard event files: wall times) and ``checkpoints`` (resume
  state, whose number and index timestamps follow ``checkpoint_every``) are left out;
- a ``.keras`` file counts by its members' names and bytes without ``metadata.json`` (which holds
  the save date), with the ``shared_object_id`` values of ``config.json`` (Python object
  addresses) renumbered in order of appearance, so re-saving identical weights, in this process
  or another, gives the same fingerprint;
- in a ``.json`` file, keys ending in ``_seconds`` (durations) and string values that are
  absolute paths or URIs (where an input or this output lives, which the lineage records) are
  left out, so the same content has the same fingerprint under any root and execution id;
- everything else counts by relative path, size and bytes; a symlink by its target.

Scheme 1 (stores written before schema version 2) hashed every file byte for byte; ``ganpipe
verify`` recomputes each artifact with the scheme recorded for it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Any

from ganpipe.infra import listing, storage

WHOLE_TREE, SEMANTIC = 1, 2
SCHEME = SEMANTIC  # what new artifacts are fingerprinted with
VOLATILE_DIRECTORIES = ("logs", "checkpoints")
VOLATILE_KEY_SUFFIX = "_seconds"
KERAS_VOLATILE_MEMBER = "metadata.json"
KERAS_CONFIG_MEMBER, KERAS_OBJECT_ID = "config.json", "shared_object_id"
SMALL_FILE_BYTES = 16 * 2 ** 20  # external single files up to this size are hashed, not listed
CHUNK_BYTES = 2 ** 20  # files are hashed in chunks of this size (a weights file needs no copy in memory)


def artifact_fingerprint(uri: str, scheme: int = SCHEME) -> str:
    """sha256 over the tree at ``uri`` (a local path or any URI ``storage`` serves), walked in
    sorted order (see the module docstring)."""
    digest = hashlib.sha256()
    root = storage.local_path(uri) if storage.is_local(uri) else uri.rstrip("/")
    for directory, subdirs, files in storage.walk(root):
        relative_dir = _relative(directory, root)
        digest.update(b"D" + relative_dir.encode() + b"\0")
        links = [d for d in subdirs if storage.link_target(storage.join(directory, d))]
        subdirs[:] = [d for d in subdirs if d not in links
                      and not (scheme == SEMANTIC and d in VOLATILE_DIRECTORIES)]
        for name in sorted(files + links):
            full = storage.join(directory, name)
            relative = f"{relative_dir}/{name}".encode()
            target = storage.link_target(full)
            if target is not None:
                digest.update(b"L" + relative + b"\0" + target.encode() + b"\0")
            else:
                digest.update(b"F" + relative + b"\0" + _file_digest(full, scheme) + b"\0")
    return digest.hexdigest()


def _relative(directory: str, root: str) -> str:
    """``os.path.relpath`` of a walked directory: "." for the root itself."""
    return "." if directory == root else directory[len(root.rstrip("/")) + 1:]


def _file_digest(uri: str, scheme: int) -> bytes:
    if scheme == SEMANTIC and uri.endswith(".keras"):
        content = storage.read_bytes(uri)
        if zipfile.is_zipfile(io.BytesIO(content)):
            return _keras_digest(content)
    if scheme == SEMANTIC and uri.endswith(".json"):
        try:
            content = json.loads(storage.read_bytes(uri).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            pass  # not JSON after all: its bytes count
        else:
            stable = json.dumps(_without_durations(content), sort_keys=True).encode()
            return hashlib.sha256(stable).digest()
    digest, size = hashlib.sha256(), 0
    with storage.open_file(uri) as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            size += len(chunk)
    return str(size).encode() + b":" + digest.digest()


def _keras_digest(content: bytes) -> bytes:
    digest = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for member in sorted(archive.namelist()):
            if member == KERAS_VOLATILE_MEMBER:
                continue
            content = archive.read(member)
            if member == KERAS_CONFIG_MEMBER:
                content = json.dumps(_renumbered(json.loads(content), {}), sort_keys=True).encode()
            digest.update(member.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.digest()


def _renumbered(value: Any, ids: dict) -> Any:
    """``value`` with each ``shared_object_id`` replaced by its order of first appearance."""
    if isinstance(value, dict):
        return {k: ids.setdefault(v, len(ids)) if k == KERAS_OBJECT_ID else _renumbered(v, ids)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_renumbered(item, ids) for item in value]
    return value


def _without_durations(value: Any) -> Any:
    """JSON content without durations and locations (see the module docstring)."""
    if isinstance(value, dict):
        return {k: _without_durations(v) for k, v in value.items()
                if not (isinstance(k, str) and k.endswith(VOLATILE_KEY_SUFFIX)) and not _is_location(v)}
    if isinstance(value, list):
        return [_without_durations(item) for item in value if not _is_location(item)]
    return value


def _is_location(value: Any) -> bool:
    return isinstance(value, str) and (os.path.isabs(value) or storage.scheme(value) is not None)


# -------------------------------------------------------------------------- external inputs


def file_content(path: str | None) -> str | None:
    """sha256 of a file the component reads (weights): its content, whatever its name or date.
    None when no file is configured; a missing file is the component's error to report."""
    if not path:
        return None
    if not os.path.isfile(path):
        return f"missing:{path}"
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def listing_digest(found: listing.Listing) -> str:
    """sha256 over a listing (``infra.listing``): each file's path and identity (size, mtime, inode
    and ctime locally; size, update time and generation on an object store), each rejected
    entry's path and reason, each directory walked. Adding, removing, replacing or touching a
    file changes it, and so does mending or breaking a link."""
    digest = hashlib.sha256()
    for entry in found.files:
        digest.update(f"F{entry.path}\0{entry.identity}\n".encode())
    for entry in found.rejected:
        digest.update(f"R{entry.path}\0{entry.problem}\n".encode())
    for directory in found.directories:
        digest.update(f"D{directory}\n".encode())
    return digest.hexdigest()


def source_files(location: str, found: listing.Listing) -> str:
    """The fingerprint of the files behind a file source: the content of a single local file up
    to ``SMALL_FILE_BYTES`` (a ``touch`` is no change), else the listing the reader reads."""
    if (not found.rejected and [entry.path for entry in found.files] == [location] and storage.is_local(location)
            and os.path.getsize(location) <= SMALL_FILE_BYTES):
        return file_content(location)
    return listing_digest(found)


def tfds_data(name: str, data_dir: str | None) -> dict[str, str]:
    """A prepared TFDS data set: its data dir and the listing of ``<data_dir>/<name>/`` (builder
    configs and versions are its sub-directories, so a new version or re-prepared files show)."""
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    builder = name.split("/", 1)[0].split(":", 1)[0]
    location = data_dir.rstrip("/") + "/" + builder
    return {"data_dir": data_dir, "files": listing_digest(listing.list_files(location + "/**"))}
