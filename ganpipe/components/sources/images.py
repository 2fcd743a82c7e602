"""``images:<dir>``: image files under a directory; labels from the first level of sub-folders."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from ganpipe.components.base import ComponentError
from ganpipe.components.beamio import chunks
from ganpipe.components.sources.common import CountRead, RawRecord, SourcePlan


def plan(root, params) -> SourcePlan:
    if not FileSystems.exists(root):
        raise ComponentError(f"ingest.source images:{root}: directory does not exist")
    paths = list_image_files(root)
    if not paths:
        raise ComponentError(f"ingest.source images:{root}: empty source, no files in the directory")
    folders = sorted({label for label in (folder_label(root, p) for p in paths) if label})
    names = params["label_names"] or folders or None
    return SourcePlan(ReadImageFolder(root, paths), "image", len(paths), names)


def list_image_files(root: str) -> list[str]:
    """All non-hidden files under ``root`` (any depth), sorted.

    Files are not filtered by extension: a stray non-image is rejected by Preprocess with a
    reason rather than skipped unseen.
    """
    root = root.rstrip("/")
    matches = FileSystems.match([root + "/**"])[0].metadata_list
    paths = (meta.path for meta in matches)
    return sorted(p for p in paths if not any(part.startswith(".") for part in p[len(root) + 1 :].split("/")))


def folder_label(root: str, path: str) -> str | None:
    """The first sub-folder under ``root`` names the label; files directly in root have none."""
    relative = path[len(root.rstrip("/")) + 1 :]
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else None


class _ReadFiles(beam.DoFn):
    def __init__(self, root: str):
        self.root = root

    def process(self, paths):
        yield [self._read(path) for path in paths]

    def _read(self, path: str) -> RawRecord:
        label = folder_label(self.root, path)
        try:
            with FileSystems.open(path, compression_type="uncompressed") as f:
                return RawRecord(key=path, image=f.read(), label=label)
        except OSError as e:
            return RawRecord(key=path, label=label, error=f"unreadable file: {e}")


class ReadImageFolder(beam.PTransform):
    """Image files under ``root``; labels from the first level of sub-folders, if any."""

    def __init__(self, root: str, paths: list[str]):
        super().__init__()
        self.root = root
        self.paths = paths

    def expand(self, pipeline):
        path_chunks = [self.paths[start:stop] for start, stop in chunks(len(self.paths))]
        return (
            pipeline
            | "PathChunks" >> beam.Create(path_chunks)
            | "ReadFiles" >> beam.ParDo(_ReadFiles(self.root))
            | "CountRead" >> beam.ParDo(CountRead())
        )

