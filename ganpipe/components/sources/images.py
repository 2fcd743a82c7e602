"""``images:<dir>``: image files under a directory (any depth); labels from the first level of
sub-folders. A file directly in the root of a tree with sub-folders has no label (Preprocess
rejects it unless ``preprocess.unlabelled: keep``). Hidden files and folders are skipped; other
files are not filtered by extension: a stray non-image is a rejected record, not skipped unseen.

The tree is listed on the workers (``fileio.MatchFiles``), so the job graph holds one pattern,
not every path, and reading is spread over the workers in batches.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import CompressionTypes, FileSystems

from ganpipe.components.base import ComponentError
from ganpipe.infra.beamio import BATCH_SIZE
from ganpipe.components.sources.common import CountRead, RawRecord, Rejected, SourcePlan, relative_name


def plan(root, params) -> SourcePlan:
    if not FileSystems.exists(root):
        raise ComponentError(f"ingest.source images:{root}: directory does not exist")
    if not FileSystems.match([_pattern(root)], limits=[1])[0].metadata_list:
        raise ComponentError(f"ingest.source images:{root}: empty source, no files in the directory")
    return SourcePlan(ReadImageFolder(root), "image", None, params["label_names"])


def _pattern(root: str) -> str:
    return root.rstrip("/") + "/**"


def folder_label(name: str) -> str | None:
    """The first sub-folder of a relative ``name`` is the label; a file in the root has none."""
    parts = name.split("/")
    return parts[0] if len(parts) > 1 else None


def is_hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


class _ReadFiles(beam.DoFn):
    def __init__(self, root: str):
        self.root = root

    def process(self, files):
        # Resolved once per batch: FileSystems.open looks the scheme up among every registered
        # filesystem class on each call, which cost more than reading a small image.
        filesystem = FileSystems.get_filesystem(self.root)
        named = ((file.path, relative_name(file.path, self.root)) for file in files)
        records = [self._read(filesystem, path, name) for path, name in named if not is_hidden(name)]
        if records:
            yield records

    @staticmethod
    def _read(filesystem, path: str, name: str) -> RawRecord:
        record = RawRecord(key=path, name=name, path=path, label=folder_label(name))
        try:
            with filesystem.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                record.image = f.read()
        except OSError as e:
            record.reject(Rejected("unreadable", f"{path}: cannot read ({e})"))
        return record


class ReadImageFolder(beam.PTransform):
    def __init__(self, root: str):
        super().__init__()
        self.root = root

    def expand(self, pipeline):
        return (
            pipeline
            | "MatchFiles" >> fileio.MatchFiles(_pattern(self.root))
            | "Batch" >> beam.BatchElements(min_batch_size=BATCH_SIZE, max_batch_size=BATCH_SIZE)
            | "SpreadBatches" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadFiles(self.root))
            | "CountRead" >> beam.ParDo(CountRead())
        )
