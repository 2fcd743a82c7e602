"""A Beam ``FileSystem`` over ``tf.io.gfile`` for the schemes only TensorFlow serves (``ram://``).

Beam's sinks and sources (``fileio.WriteToFiles``, ``MatchFiles``) find a filesystem by scheme
among the subclasses of Beam's ``FileSystem``; defining this class registers it. So the data
steps, the filesystem layer (``storage.py``) and TensorFlow's own writers (SavedModel,
checkpoints, summaries) all reach the same files on such a root, through one Beam branch in
``storage``. TensorFlow is imported when a method first runs, never at import.

TensorFlow's in-memory filesystem (2.21) has three quirks this class works around: it lists a
directory only if it was created as one, so every file is created with its parent directories;
its listing matches names by prefix, so ``assets`` also "contains" ``.extra`` when
``assets.extra`` exists: ``_tree`` keeps only the entries that exist; and writing a file over a
longer one keeps the old tail, so ``create`` removes the old file first.
"""
from __future__ import annotations

from apache_beam.io.filesystem import (BeamIOError, CompressedFile, CompressionTypes, FileMetadata,
                                       FileSystem)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


class TensorFlowRamFileSystem(FileSystem):
    """TensorFlow's ``ram://`` filesystem: in-memory, visible only inside this process."""

    @classmethod
    def scheme(cls):
        return "ram"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/")] + [path.strip("/") for path in paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        if _gfile().exists(path):
            raise IOError(f"{path}: already exists")
        _gfile().makedirs(path)

    def has_dirs(self):
        return True

    def _list(self, dir_or_prefix):
        for file in self._tree(dir_or_prefix)[1]:
            yield self.metadata(file)

    def _tree(self, path):
        """(directories top down, files) under the directory ``path``: what really exists."""
        gfile = _gfile()
        if not gfile.isdir(path):
            return [], []
        directories, files = [], []
        for directory, _, names in gfile.walk(path):
            directories.append(directory)
            files += [file for file in (self.join(directory, name) for name in names) if gfile.exists(file)]
        return directories, files

    def _open(self, path, mode, compression_type):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        raw = _gfile().GFile(path, mode)
        if mode == "wb":
            raw.write(b"")  # GFile creates the file on its first write; an empty shard must exist too
        return raw if compression_type == CompressionTypes.UNCOMPRESSED else \
            CompressedFile(raw, compression_type=compression_type)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        gfile = _gfile()
        gfile.makedirs(self.split(path)[0])
        if gfile.exists(path):
            gfile.remove(path)
        return self._open(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return self._open(path, "rb", compression_type)

    def copy(self, source_file_names, destination_file_names):
        self._each("Copy", source_file_names, destination_file_names, self._copy)

    def rename(self, source_file_names, destination_file_names):
        self._each("Rename", source_file_names, destination_file_names, self._rename)

    def _copy(self, source, destination):
        gfile = _gfile()
        gfile.makedirs(self.split(destination)[0])
        gfile.copy(source, destination, overwrite=True)

    def _rename(self, source, destination):
        # The in-memory filesystem renames a directory's own entry only, not what is inside it:
        # move file by file.
        gfile = _gfile()
        if not gfile.isdir(source):
            gfile.makedirs(self.split(destination)[0])
            gfile.rename(source, destination, overwrite=True)
            return
        directories, files = self._tree(source)
        for file in files:
            self._rename(file, destination + file[len(source.rstrip("/")):])
        self._remove_tree(directories)

    @staticmethod
    def _each(what, sources, destinations, operation):
        if len(sources) != len(destinations):
            raise BeamIOError(f"{what}: {len(sources)} sources for {len(destinations)} destinations")
        failed = {}
        for source, destination in zip(sources, destinations):
            try:
                operation(source, destination)
            except Exception as error:  # pylint: disable=broad-except
                failed[(source, destination)] = error
        if failed:
            raise BeamIOError(f"{what} operation failed", failed)

    @staticmethod
    def _remove_tree(directories):
        """Removes emptied directories, deepest first (``rmtree`` trips over the listing quirk)."""
        for directory in reversed(directories):
            _gfile().remove(directory)

    def exists(self, path):
        return _gfile().exists(path)

    def size(self, path):
        return self.metadata(path).size_in_bytes

    def last_updated(self, path):
        return self.metadata(path).last_updated_in_seconds

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        try:
            stat = _gfile().stat(path)
        except Exception as error:  # pylint: disable=broad-except
            raise BeamIOError(f"Path does not exist: {path}", {path: error}) from error
        return FileMetadata(path, stat.length, stat.mtime_nsec / 1e9)

    def delete(self, paths):
        gfile, failed = _gfile(), {}
        for path in paths:
            try:
                directories, files = self._tree(path)
                for file in files:
                    gfile.remove(file)
                if directories:
                    self._remove_tree(directories)
                else:
                    gfile.remove(path)
            except Exception as error:  # pylint: disable=broad-except
                failed[path] = error
        if failed:
            raise BeamIOError("Delete operation failed", failed)
