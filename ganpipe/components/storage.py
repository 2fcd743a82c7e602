"""The filesystem layer: every artifact read and write goes through here, so an artifact is a URI.

A local path is one scheme among others (``gs://``, ``s3://``, ``hdfs://``...). The driver and
the Beam workers use Beam's ``FileSystems``: the Beam sinks write through it anyway, workers do
not need TensorFlow for it, and its GCS client honours ``STORAGE_EMULATOR_HOST``. A scheme only
TensorFlow knows (``ram://``, TF filesystem plugins) goes through ``tf.io.gfile``; the TensorFlow
side (reader, Train, Evaluate, Export) uses ``tf.io.gfile`` directly because TF ops only see TF's
filesystems.
"""
from __future__ import annotations

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


def normalize_root(uri: str) -> str:
    """An absolute local path, or the URI without a trailing slash; fails for an unsupported
    scheme, naming it and what would support it."""
    uri = os.fspath(uri)
    if is_local(uri):
        return os.path.abspath(local_path(uri))
    check_supported(uri)
    return os.fspath(uri).rstrip("/")


def check_supported(uri: str) -> None:
    if is_local(uri) or _beam_supports(uri) or _tensorflow_supports(uri):
        return
    name = scheme(uri)
    fix = SCHEME_EXTRAS.get(name)
    hint = f"install {fix}" if fix else "no known Beam or TensorFlow filesystem serves it"
    raise UnsupportedScheme(f"{uri}: no installed filesystem supports the scheme {name}://; {hint}")


def _beam_supports(uri: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem(uri)
        return True
    except ValueError:
        return False


def _tensorflow_supports(uri: str) -> bool:
    if scheme(uri) != "ram":  # importing TensorFlow takes ~10 s: only for its own schemes
        return False
    import tensorflow as tf

    try:
        tf.io.gfile.exists(uri)
        return True
    except tf.errors.UnimplementedError:
        return False


def _uses_tensorflow(uri: str) -> bool:
    return not is_local(uri) and not _beam_supports(uri)


# ------------------------------------------------------------------------------ operations
def exists(uri: str) -> bool:
    if _uses_tensorflow(uri):
        import tensorflow as tf

        return tf.io.gfile.exists(uri)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(uri)


def directory_exists(uri: str) -> bool:
    """A local directory; on an object store (no directories) some object lies under ``uri``."""
    if is_local(uri):
        return os.path.isdir(local_path(uri))
    return bool(glob(join(uri, "**")))


def makedirs(uri: str) -> None:
    """Creates a directory and its parents (object stores have none: nothing to do)."""
    if is_local(uri):
        os.makedirs(local_path(uri), exist_ok=True)
    elif _uses_tensorflow(uri):
        import tensorflow as tf

        tf.io.gfile.makedirs(uri)


def read_bytes(uri: str) -> bytes:
    if _uses_tensorflow(uri):
        import tensorflow as tf

        with tf.io.gfile.GFile(uri, "rb") as f:
            return f.read()
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(uri, compression_type="uncompressed") as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Writes a whole file (parents are created on local disk)."""
    if is_local(uri):
        os.makedirs(os.path.dirname(local_path(uri)) or ".", exist_ok=True)
    if _uses_tensorflow(uri):
        import tensorflow as tf

        with tf.io.gfile.GFile(uri, "wb") as f:
            f.write(data)
        return
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(uri, compression_type="uncompressed") as f:
        f.write(data)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri).decode("utf-8"))


def write_json(uri: str, value: Any) -> None:
    write_bytes(uri, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))


def glob(pattern: str) -> list[str]:
    """Sorted paths matching ``pattern`` (``*`` within a name, ``**`` across directories)."""
    if _uses_tensorflow(pattern):
        import tensorflow as tf

        return sorted(tf.io.gfile.glob(pattern))
    from apache_beam.io.filesystems import FileSystems

    return sorted(meta.path for meta in FileSystems.match([pattern])[0].metadata_list)


def delete(uris: list[str]) -> None:
    """Deletes files and whole trees; a missing one is not an error."""
    for uri in uris:
        if is_local(uri):
            path = local_path(uri)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        elif _uses_tensorflow(uri):
            import tensorflow as tf

            if tf.io.gfile.isdir(uri):
                tf.io.gfile.rmtree(uri)
            elif tf.io.gfile.exists(uri):
                tf.io.gfile.remove(uri)
        else:  # an object store has objects, not directories
            from apache_beam.io.filesystems import FileSystems

            objects = glob(uri) + glob(join(uri, "**"))
            if objects:
                FileSystems.delete(objects)


# -- durability on a local disk (publish and Export make outputs durable before they are recorded)

def sync_tree(path: str) -> None:
    """fsync every file and directory under ``path`` (bottom up, links skipped), so a host crash
    after the metadata commit cannot leave a recorded artifact over empty or missing files."""
    for directory, _, files in os.walk(path, topdown=False):
        for name in files:
            full = os.path.join(directory, name)
            if not os.path.islink(full):
                _fsync(full, os.O_RDONLY)
        sync_directory(directory)


def sync_directory(path: str) -> None:
    """fsync a directory, making the renames and creations inside it durable."""
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
