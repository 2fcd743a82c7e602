"""``images:<dir>``: image files under a directory (any depth); labels from the first level of
sub-folders. A file directly in the root of a tree with sub-folders has no label (Preprocess
rejects it unless ``preprocess.unlabelled: keep``). Hidden files and folders are skipped; other
files are not filtered by extension: a stray non-image is a rejected record, not skipped unseen.

The tree is listed on the workers by the source's listing (``infra.listing``, the one the cache
key fingerprints): links to folders are followed, and a dangling link, a cycle or an unreadable
entry is a rejected record. The job graph holds one path, not every file, and reading is spread
over the workers in batches.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import CompressionTypes, FileSystems

from ganpipe.components import sources
from ganpipe.components.base import ComponentError
from ganpipe.infra.beamio import BATCH_SIZE
from ganpipe.infra.listing import Entry
from ganpipe.components.sources.common import CountRead, RawRecord, Rejected, SourcePlan, relative_name


def plan(root, params) -> SourcePlan:
    if not FileSystems.exists(root):
        raise ComponentError(f"ingest.source images:{root}: directory does not exist")
    if not list_entries(root):
        raise ComponentError(f"ingest.source images:{root}: empty source, no files in the directory")
    return SourcePlan(ReadImageFolder(root), "image", None, params["label_names"])


def list_entries(root: str) -> list[Entry]:
    return sources.KINDS["images"].listing(root).entries()


def folder_label(name: str) -> str | None:
    """The first sub-folder of a relative ``name`` is the label; a file in the root has none."""
    parts = name.split("/")
    return parts[0] if len(parts) > 1 else None


class _ReadFiles(beam.DoFn):
    def __init__(self, root: str):
        self.root = root

    def process(self, entries):
        # Resolved once per batch: FileSystems.open looks the scheme up among every registered
        # filesystem class on each call, which cost more than reading a small image.
        filesystem = FileSystems.get_filesystem(self.root)
        yield [self._read(filesystem, entry, relative_name(entry.path, self.root)) for entry in entries]

    @staticmethod
    def _read(filesystem, entry: Entry, name: str) -> RawRecord:
        record = RawRecord(key=entry.path, name=name, path=entry.path, label=folder_label(name))
        if entry.problem:
            return record.reject(Rejected("unreadable", entry.problem))
        try:
            with filesystem.open(entry.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                record.image = f.read()
        except OSError as e:
            record.reject(Rejected("unreadable", f"{entry.path}: cannot read ({e})"))
        return record


class ReadImageFolder(beam.PTransform):
    def __init__(self, root: str):
        super().__init__()
        self.root = root

    def expand(self, pipeline):
        return (
            pipeline
            | "Root" >> beam.Create([self.root])
            | "ListFiles" >> beam.FlatMap(list_entries)
            | "Batch" >> beam.BatchElements(min_batch_size=BATCH_SIZE, max_batch_size=BATCH_SIZE)
            | "SpreadBatches" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadFiles(self.root))
            | "CountRead" >> beam.ParDo(CountRead())
        )
