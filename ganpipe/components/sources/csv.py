"""``csv:<file>``: rows of a CSV file with a header; every column but the label column is a feature.

The file is read in byte ranges on the workers (a splittable read: one range per
``RANGE_BYTES``, each starting at the first line that begins inside it), so a large file is
spread over the workers. Line numbers come from a first pass that counts the line ends of each
range. Each physical line is one row: it is decoded with ``csv_encoding`` and parsed on its own,
so an undecodable or unparsable row is one rejected record naming its line, and the rest of the
file is read. A quoted field may therefore not contain a line break (both halves are rejected).
"""
from __future__ import annotations

import codecs
import csv
import posixpath

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from ganpipe.components.base import ComponentError
from ganpipe.infra.beamio import batched
from ganpipe.components.sources.common import CountRead, RawRecord, Rejected, SourcePlan

RANGE_BYTES = 16 << 20
GZIP_MAGIC = b"\x1f\x8b"


def plan(path, params) -> SourcePlan:
    if not FileSystems.exists(path):
        raise ComponentError(f"ingest.source csv:{path}: file does not exist")
    encoding, delimiter, label_column = params["csv_encoding"], params["csv_delimiter"], params["label_column"]
    _check_encoding(encoding)
    header = read_header(path, encoding, delimiter)
    if label_column and label_column not in header:
        raise ComponentError(
            f"ingest.label_column: {label_column!r} is not a column of {path}; columns: {', '.join(header)}"
        )
    feature_names = [name for name in header if name != label_column]
    if not feature_names:
        raise ComponentError(f"ingest.source csv:{path}: no feature columns besides the label")
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    ranges = [(start, min(start + RANGE_BYTES, size)) for start in range(0, size, RANGE_BYTES)]
    read = ReadCsv(path, ranges, _Parser(header, label_column, encoding, delimiter))
    return SourcePlan(read, "vector", None, params["label_names"], feature_names)


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ComponentError(f"ingest.csv_encoding: unknown encoding {encoding!r}") from None
    try:  # rows are found by their b"\n" bytes: the encoding must write ASCII as ASCII
        ascii_compatible = b"\n,a".decode(encoding) == "\n,a"
    except UnicodeDecodeError:
        ascii_compatible = False
    if not ascii_compatible:
        raise ComponentError(
            f"ingest.csv_encoding: {encoding!r} does not write a line end as the byte \\n; "
            f"convert the file to UTF-8 (e.g. iconv -f {encoding} -t utf-8)"
        )


def read_header(path: str, encoding: str, delimiter: str) -> list[str]:
    """The column names; fails at once on a compressed or empty file, an undecodable header,
    duplicate or empty column names, or no data row."""
    with FileSystems.open(path, compression_type="uncompressed") as f:
        first, second = f.readline(), f.readline()
        while second and not second.strip():
            second = f.readline()
    if first.startswith(GZIP_MAGIC):
        raise ComponentError(f"ingest.source csv:{path}: the file is GZIP-compressed; decompress it (gunzip)")
    try:
        text = first.decode(encoding)
    except UnicodeDecodeError as e:
        raise ComponentError(
            f"ingest.source csv:{path}: the header (line 1) is not {encoding} ({e.reason} at byte {e.start}); "
            f"set ingest.csv_encoding to the file's encoding (e.g. cp1252, latin-1)"
        ) from None
    header = [name.strip() for name in next(csv.reader([text], delimiter=delimiter), [])]
    if not any(header):
        raise ComponentError(f"ingest.source csv:{path}: empty file (expected a header row)")
    if not second:
        raise ComponentError(f"ingest.source csv:{path}: empty source, a header and no data rows")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ComponentError(
            f"ingest.source csv:{path}: duplicate column names in the header: {', '.join(map(repr, duplicates))}; "
            f"rename them so every column has its own name"
        )
    if "" in header:
        raise ComponentError(f"ingest.source csv:{path}: column {header.index('') + 1} of the header has no name")
    return header


class _Parser:
    """One physical line -> a RawRecord (features and raw label), or one carrying its rejection."""

    def __init__(self, header, label_column, encoding, delimiter):
        self.header, self.label_column = header, label_column
        self.encoding, self.delimiter = encoding, delimiter

    def record(self, path: str, line: int, data: bytes) -> RawRecord:
        record = RawRecord(key=f"{path}:{line}", name=f"{posixpath.basename(path)}:{line}", path=path, index=line)
        try:
            self._parse(record, self._cells(line, data))
        except Rejected as rejected:
            record.reject(rejected)
        return record

    def _cells(self, line: int, data: bytes) -> list[str]:
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError as e:
            raise Rejected(
                "bad_encoding", f"line {line}: not {self.encoding} ({e.reason}: byte 0x{data[e.start]:02x} at "
                f"byte {e.start + 1} of the line); set ingest.csv_encoding to the file's encoding"
            ) from None
        try:
            cells = next(csv.reader([text], delimiter=self.delimiter, strict=True))
        except csv.Error as e:
            raise Rejected("bad_row", f"line {line}: {e}") from None
        if len(cells) != len(self.header):
            raise Rejected("bad_row", f"line {line}: {len(cells)} cells, expected {len(self.header)}")
        return [cell.strip() for cell in cells]

    def _parse(self, record: RawRecord, cells: list[str]) -> None:
        row = dict(zip(self.header, cells))
        if self.label_column:
            record.label = row.pop(self.label_column)
        values = []
        for column, text in row.items():
            if not text:
                raise Rejected("bad_value", f"line {record.index}: missing value in column {column!r}")
            try:
                values.append(float(text))
            except ValueError:
                raise Rejected("bad_value", f"line {record.index}: column {column!r}: {text!r} is not a number") from None
        record.features = values


def _count_line_ends(path: str, bounds: tuple[int, int]):
    start, stop = bounds
    with FileSystems.open(path, compression_type="uncompressed") as f:
        f.seek(start)
        yield start, f.read(stop - start).count(b"\n")


class _ReadRange(beam.DoFn):
    """The rows whose line starts in [start, stop), numbered with the line ends before it."""

    def __init__(self, path: str, parser: _Parser):
        self.path, self.parser = path, parser

    def process(self, bounds, line_ends):
        start, stop = bounds
        line = 1 + sum(count for range_start, count in line_ends.items() if range_start < start)
        with FileSystems.open(self.path, compression_type="uncompressed") as f:
            if start == 0:
                position = len(f.readline())  # the header
                line += 1
            else:  # the line that began before this range belongs to the previous one
                f.seek(start - 1)
                skipped = f.readline()
                position = start - 1 + len(skipped)
                line += len(skipped) > 1
            yield from batched(self._records(f, position, stop, line))

    def _records(self, f, position, stop, line):
        while position < stop:
            data = f.readline()
            if not data:
                return
            if data.strip():
                yield self.parser.record(self.path, line, data.rstrip(b"\r\n"))
            position += len(data)
            line += 1


class ReadCsv(beam.PTransform):
    def __init__(self, path: str, ranges: list[tuple[int, int]], parser: _Parser):
        super().__init__()
        self.path, self.ranges, self.parser = path, ranges, parser

    def expand(self, pipeline):
        ranges = pipeline | "Ranges" >> beam.Create(self.ranges)
        line_ends = ranges | "CountLineEnds" >> beam.FlatMap(lambda bounds, path: _count_line_ends(path, bounds), self.path)
        return (
            ranges
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(_ReadRange(self.path, self.parser), line_ends=beam.pvalue.AsDict(line_ends))
            | "Redistribute" >> beam.Reshuffle()
            | "CountRead" >> beam.ParDo(CountRead())
        )
