"""What a file source is made of: one listing that the reader reads and the cache key fingerprints.

A pattern is matched as Beam's ``FileSystems.match`` matches it (``FileSystem.translate_pattern``:
``*`` within a name, ``**`` across directories, hidden names matched like any other), so a cache
key sees exactly the files Ingest reads. Beam's own local listing (``os.walk``) skips symbolic
links to directories and drops a file that fails ``stat``; this one walks local directories
itself so that nothing is dropped unseen:

- a link to a directory is followed; a link back to a directory being walked (a cycle) is not,
  and is a *rejected* entry naming the link;
- a dangling link, a file that vanished or cannot be stat'ed, an entry that is neither a file nor
  a directory, and a directory that cannot be listed are rejected entries with the reason, never
  a crash; the reader turns each into a rejected record;
- a file's identity is what a user cannot keep the same by accident when replacing it: size,
  modification time, inode and status-change time (``cp -p``, ``rsync -t`` and ``touch -r``
  restore the mtime, not the inode or ctime). On an object store it is the size and the update
  time of the match metadata (set by the store on every write) and the generation or etag when
  the filesystem's metadata carries one.
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat

from ganpipe.infra import storage

GLOB_CHARACTERS = "*?["
_OBJECT_VERSION_FIELDS = ("generation", "etag", "version_id")


@dataclasses.dataclass(frozen=True)
class Entry:
    """A listed file (``identity`` set) or a rejected entry (``problem`` says why)."""

    path: str
    identity: str = ""
    problem: str | None = None


@dataclasses.dataclass
class Listing:
    """The files a pattern matches, the entries it could not use and the directories walked
    (a new, still empty directory counts: a TFDS version being prepared)."""

    files: list[Entry]
    rejected: list[Entry]
    directories: list[str]

    def entries(self) -> list[Entry]:
        """Files and rejected entries in path order: what the reader turns into records."""
        return sorted(self.files + self.rejected, key=lambda entry: entry.path)

    def without(self, skip) -> "Listing":
        """The listing without entries whose path ``skip(path)`` is true (e.g. hidden names)."""
        return Listing([e for e in self.files if not skip(e.path)], [e for e in self.rejected if not skip(e.path)],
                       [d for d in self.directories if not skip(d)])


def has_glob(pattern: str) -> bool:
    return any(character in pattern for character in GLOB_CHARACTERS)


def list_files(pattern: str) -> Listing:
    """The files ``pattern`` matches (a path, a glob, ``dir/**``), local or at any URI."""
    if storage.scheme(pattern):
        return _list_objects(pattern)
    if not has_glob(pattern):  # one file; nothing there is an empty listing, the planner's error to name
        entry = _stat_entry(pattern)
        if entry.problem is None:
            return Listing([entry], [], [])
        return Listing([], [entry] if os.path.lexists(pattern) else [], [])
    matches = _matcher(pattern)
    top = walk_root(pattern)
    files, rejected, directories = [], [], []
    for entry, is_directory in _walk(top, frozenset()):
        if is_directory:
            directories.append(entry.path)
        elif matches(entry.path) or (entry.problem and _may_hold_matches(entry.path, pattern)):
            (rejected if entry.problem else files).append(entry)
    return Listing(files, rejected, directories)


def walk_root(pattern: str) -> str:
    """The directory Beam lists for a glob: the part before the first wildcard, up to its last ``/``."""
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    return prefix.rstrip("/") if prefix.endswith("/") else os.path.dirname(prefix)


def _matcher(pattern: str):
    from apache_beam.io.filesystem import FileSystem  # the reader's own pattern rule; Beam only for globs

    return re.compile(FileSystem.translate_pattern(pattern)).match


def _may_hold_matches(path: str, pattern: str) -> bool:
    """A directory that could not be listed may hide matches when the pattern crosses directories
    (``**``) or reaches below its depth."""
    return "**" in pattern or path.count("/") < pattern.count("/")


def _walk(directory: str, walking: frozenset):
    """(entry, is a directory) for everything under ``directory``, links followed, cycles cut."""
    try:
        with os.scandir(directory) as scanned:
            names = sorted(entry.name for entry in scanned)
        walking = walking | {_directory_id(os.stat(directory))}
    except OSError as error:
        yield Entry(directory, problem=f"{directory}: cannot list the directory ({error.strerror})"), False
        return
    for name in names:
        path = os.path.join(directory, name)
        try:
            status = os.stat(path)
        except OSError:
            yield _stat_entry(path), False
            continue
        if not stat.S_ISDIR(status.st_mode):
            yield _stat_entry(path), False
        elif _directory_id(status) in walking:
            yield Entry(path, problem=f"{path}: link to {os.path.realpath(path)}, a directory it is inside "
                                      "(a cycle), not followed"), False
        else:
            yield Entry(path), True
            yield from _walk(path, walking)


def _directory_id(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _stat_entry(path: str) -> Entry:
    """A file's entry with its identity, or the reason it cannot be read."""
    try:
        status = os.stat(path)
    except OSError as error:
        if os.path.islink(path):
            return Entry(path, problem=f"{path}: dangling link to {os.readlink(path)}")
        return Entry(path, problem=f"{path}: unreadable, vanished? ({error.strerror})")
    if not stat.S_ISREG(status.st_mode):
        return Entry(path, problem=f"{path}: not a regular file")
    return Entry(path, identity=f"{status.st_size}:{status.st_mtime_ns}:{status.st_ino}:{status.st_ctime_ns}")


def _list_objects(pattern: str) -> Listing:
    """The filesystem's own match on an object store (no links, no directories there)."""
    return Listing([Entry(meta.path, object_identity(meta))
                    for meta in sorted(storage.match(pattern), key=lambda meta: meta.path)], [], [])


def object_identity(meta) -> str:
    """Size, update time and, where the filesystem's ``FileMetadata`` carries one, the object's
    generation, etag or version id."""
    versions = [f"{field}={getattr(meta, field)}" for field in _OBJECT_VERSION_FIELDS
                if getattr(meta, field, None) is not None]
    return ":".join([str(meta.size_in_bytes), repr(meta.last_updated_in_seconds), *versions])
