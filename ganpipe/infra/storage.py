"""The filesystem layer: every artifact read and write goes through here, so an artifact is a URI.

A local path is one scheme among others (``gs://``, ``s3://``, ``hdfs://``, ``ram://``...). Local
paths use ``os`` directly (no Beam import, and publish keeps its atomic renames and fsyncs there).
Every other scheme goes through Beam's ``FileSystems``, on the driver and on the workers: the Beam
sinks write through it anyway, workers do not need TensorFlow for it, and its GCS client honours
``STORAGE_EMULATOR_HOST``. A scheme only TensorFlow serves (``ram://``) reaches Beam through the
adapter in ``tf_filesystem.py``, so the data steps run on it too. TensorFlow's own writers and
readers (SavedModel export, checkpoints, summary files, ``.keras`` files, ``tf.data``) take the
same URIs directly; before TF writes a file into a directory, ``makedirs`` it (TF's in-memory
filesystem lists only directories that were created).
"""
from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import shutil
from typing import Any

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# Which install brings a scheme's Beam filesystem: named in the error for an unsupported root.
SCHEME_EXTRAS = {
    "gs": "apache-beam[gcp] (pip install 'ganpipe[gcp]')",
    "s3": "apache-beam[aws]",
    "azfs": "apache-beam[azure]",
    "hdfs": "apache-beam with the hdfs package (pip install hdfs)",
}


class UnsupportedScheme(ValueError):
    """No installed filesystem serves this URI scheme."""


def scheme(uri: str) -> str | None:
    """``gs`` for ``gs://b/p``; None for a local path."""
    match = _SCHEME.match(os.fspath(uri))
    return match.group(1).lower() if match else None


def is_local(uri: str) -> bool:
    return scheme(uri) in (None, "file")


def local_path(uri: str) -> str:
    uri = os.fspath(uri)
    return uri[len("file://"):] if uri.startswith("file://") else uri


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def dirname(uri: str) -> str:
    return os.path.dirname(uri) if is_local(uri) else posixpath.dirname(uri.rstrip("/"))


def resolve(base: str, path: str) -> str:
    """``path`` itself when it is absolute or a URI, else ``path`` under ``base``."""
    return path if scheme(path) or os.path.isabs(path) else join(base, path)


def normalize(uri: str) -> str:
    """An absolute local path, or the URI without a trailing slash: one spelling per place."""
    uri = os.fspath(uri)
    return os.path.abspath(local_path(uri)) if is_local(uri) else uri.rstrip("/")


def normalize_root(uri: str) -> str:
    """``normalize(uri)``; fails for an unsupported scheme, naming it and what would support it."""
    check_supported(os.fspath(uri))
    return normalize(uri)


def check_supported(uri: str) -> None:
    if is_local(uri) or _beam_supports(uri):
        return
    name = scheme(uri)
    fix = SCHEME_EXTRAS.get(name)
    hint = f"install {fix}" if fix else "no known Beam or TensorFlow filesystem serves it"
    raise UnsupportedScheme(f"{uri}: no installed filesystem supports the scheme {name}://; {hint}")


def _filesystems():
    """Beam's ``FileSystems``, with TensorFlow's own schemes registered (``tf_filesystem``)."""
    from apache_beam.io.filesystems import FileSystems

    from ganpipe.infra import tf_filesystem  # noqa: F401  defining its class registers ram://

    return FileSystems


def _beam_supports(uri: str) -> bool:
    try:
        _filesystems().get_filesystem(uri)
        return True
    except (ValueError, OSError):  # OSError: Beam's BeamIOError when the scheme's package is missing
        return False


# ------------------------------------------------------------------------------ operations
def exists(uri: str) -> bool:
    if is_local(uri):
        return os.path.exists(local_path(uri))
    return _filesystems().exists(uri)


def directory_exists(uri: str) -> bool:
    """A local directory; on an object store (no directories) some object lies under ``uri``."""
    if is_local(uri):
        return os.path.isdir(local_path(uri))
    return bool(glob(join(uri, "**")))


def makedirs(uri: str) -> None:
    """Creates a directory and its parents (object stores have none: nothing to do)."""
    if is_local(uri):
        os.makedirs(local_path(uri), exist_ok=True)
        return
    filesystem = _filesystems().get_filesystem(uri)
    if filesystem.has_dirs() and not filesystem.exists(uri):
        filesystem.mkdirs(uri)


def open_file(uri: str, mode: str = "rb"):
    """A binary file object for reading (``rb``) or writing a whole new file (``wb``; parents are
    created)."""
    if mode not in ("rb", "wb"):
        raise ValueError(f"open_file: mode {mode!r} is not rb or wb")
    if is_local(uri):
        if mode == "wb":
            os.makedirs(os.path.dirname(local_path(uri)) or ".", exist_ok=True)
        return open(local_path(uri), mode)
    filesystems = _filesystems()
    if mode == "wb":
        return filesystems.create(uri, compression_type="uncompressed")
    return filesystems.open(uri, compression_type="uncompressed")


def read_bytes(uri: str) -> bytes:
    with open_file(uri) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Writes a whole file (parents are created)."""
    with open_file(uri, "wb") as f:
        f.write(data)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri).decode("utf-8"))


def write_json(uri: str, value: Any) -> None:
    write_bytes(uri, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))


def glob(pattern: str) -> list[str]:
    """Sorted paths of the files matching ``pattern`` (``*`` within a name, ``**`` across
    directories)."""
    return sorted(meta.path for meta in match(pattern))


def match(pattern: str) -> list:
    """Beam ``FileMetadata`` (path, size, last update) of the files matching ``pattern``."""
    return _filesystems().match([pattern])[0].metadata_list


def listdir(uri: str) -> list[str]:
    """Sorted names of what lies directly under ``uri`` (files and directories; on an object
    store, the first path segments below it)."""
    if is_local(uri):
        path = local_path(uri)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    return sorted({relative.split("/", 1)[0] for relative in _relative_files(uri)})


def _relative_files(uri: str) -> list[str]:
    prefix = uri.rstrip("/") + "/"
    return [path[len(prefix):] for path in glob(prefix + "**")]


def walk(uri: str):
    """``os.walk`` for any scheme: top down, ``(directory, subdirectories, files)`` with sorted
    names; prune by editing the subdirectory list in place. Local links are listed as
    ``os.walk`` lists them (``link_target`` tells them apart); on an object store a directory is
    a prefix of some object, so empty ones do not exist."""
    if is_local(uri):
        for directory, subdirs, files in os.walk(local_path(uri)):
            subdirs.sort()
            yield directory, subdirs, sorted(files)
        return
    tree: dict[str, tuple[set, list]] = {}
    for relative in _relative_files(uri):
        parts = relative.split("/")
        for depth in range(len(parts)):
            tree.setdefault("/".join(parts[:depth]), (set(), []))
            if depth < len(parts) - 1:
                tree["/".join(parts[:depth])][0].add(parts[depth])
        tree["/".join(parts[:-1])][1].append(parts[-1])
    pending = [""] if tree else []
    while pending:
        relative = pending.pop()
        subdirs, files = sorted(tree[relative][0]), sorted(tree[relative][1])
        yield join(uri, relative) if relative else uri, subdirs, files
        pending += [f"{relative}/{name}" if relative else name for name in reversed(subdirs)]


def link_target(uri: str) -> str | None:
    """Where a local symbolic link points; None for anything else."""
    return os.readlink(local_path(uri)) if is_local(uri) and os.path.islink(local_path(uri)) else None


def size(uri: str) -> int:
    """Bytes of a file, or of every file under a directory (local links count as themselves);
    0 when nothing is there."""
    if is_local(uri):
        path = local_path(uri)
        if not os.path.lexists(path):
            return 0
        if not os.path.isdir(path) or os.path.islink(path):
            return os.lstat(path).st_size
        return sum(os.lstat(os.path.join(d, name)).st_size for d, _, names in os.walk(path) for name in names)
    return sum(m.size_in_bytes for m in _objects(uri))


def modified(uri: str) -> float:
    """Modification time: locally of the path itself, on an object store of its newest object;
    0.0 when nothing is there."""
    if is_local(uri):
        path = local_path(uri)
        return os.lstat(path).st_mtime if os.path.lexists(path) else 0.0
    return max((m.last_updated_in_seconds for m in _objects(uri)), default=0.0)


def _objects(uri: str) -> list:
    """Metadata of every object under ``uri``, or of the object ``uri`` itself."""
    return match(join(uri, "**")) or (match(uri) if exists(uri) else [])


def copy_tree(source: str, target: str) -> None:
    """Copies every file under the directory ``source`` to the same place under ``target``
    (object by object on a store; server-side where the store can)."""
    if is_local(source):
        shutil.copytree(local_path(source), local_path(target), symlinks=True, dirs_exist_ok=True)
        return
    relative = _relative_files(source)
    if relative:
        _filesystems().copy([join(source, r) for r in relative], [join(target, r) for r in relative])


def move_tree(source: str, target: str, commit_last: str | None = None) -> None:
    """Moves the directory ``source`` to ``target``, which must not exist yet (FileExistsError,
    or OSError locally). Locally one atomic rename; an object store has no rename, so object by
    object (a reader may see a partial ``target`` meanwhile), the file named ``commit_last``
    (relative to ``source``) after all others: a reader that waits for it sees a complete tree."""
    if is_local(source):
        try:
            os.rename(local_path(source), local_path(target))
        except OSError as error:  # a non-empty target directory
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(error.errno, f"{target}: already exists") from error
            raise
        return
    if directory_exists(target):
        raise FileExistsError(f"{target}: already exists")
    relative = _relative_files(source)
    for batch in ([r for r in relative if r != commit_last], [r for r in relative if r == commit_last]):
        if batch:
            _filesystems().rename([join(source, r) for r in batch], [join(target, r) for r in batch])
    delete([source])


def delete(uris: list[str]) -> None:
    """Deletes files and whole trees; a missing one is not an error."""
    for uri in uris:
        if is_local(uri):
            path = local_path(uri)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
            continue
        filesystem = _filesystems().get_filesystem(uri)
        if filesystem.has_dirs():  # deletes a directory with what is inside
            if filesystem.exists(uri):
                filesystem.delete([uri])
            continue
        objects = glob(uri) + glob(join(uri, "**"))
        if objects:
            _filesystems().delete(objects)


# -- durability on a local disk (publish and Export make outputs durable before they are recorded)

def sync_tree(path: str) -> None:
    """fsync every file and directory under ``path`` (bottom up, links skipped), so a host crash
    after the metadata commit cannot leave a recorded artifact over empty or missing files. A
    remote store has made a file durable when its write closed: nothing to do."""
    if not is_local(path):
        return
    for directory, _, files in os.walk(path, topdown=False):
        for name in files:
            full = os.path.join(directory, name)
            if not os.path.islink(full):
                _fsync(full, os.O_RDONLY)
        sync_directory(directory)


def sync_directory(path: str) -> None:
    """fsync a directory, making the renames and creations inside it durable (local only)."""
    if not is_local(path):
        return
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def move_into_place(source: str, target: str) -> None:
    """Atomic rename (same filesystem), then fsync both parents so the rename itself is durable."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(source, target)
    for directory in {os.path.dirname(target), os.path.dirname(source)}:
        sync_directory(directory)


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
