"""``csv:<file>``: rows of a CSV file with a header; every column but the label column is a
feature."""
from __future__ import annotations

import csv
import io

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from ganpipe.components.base import ComponentError
from ganpipe.components.beamio import batched
from ganpipe.components.sources.common import CountRead, RawRecord, SourcePlan


def plan(path, params) -> SourcePlan:
    if not FileSystems.exists(path):
        raise ComponentError(f"ingest.source csv:{path}: file does not exist")
    header = read_csv_header(path, params["csv_delimiter"])
    label_column = params["label_column"]
    if label_column and label_column not in header:
        raise ComponentError(
            f"ingest.label_column: {label_column!r} is not a column of {path}; columns: {', '.join(header)}"
        )
    feature_names = csv_feature_columns(header, label_column)
    if not feature_names:
        raise ComponentError(f"ingest.source csv:{path}: no feature columns besides the label")
    read = ReadCsv(path, params["csv_delimiter"], label_column)
    return SourcePlan(read, "vector", None, params["label_names"], feature_names)


def read_csv_header(path: str, delimiter: str) -> list[str]:
    """The column names; fails at once on a missing file, no header or no data row."""
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            rows = csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline=""), delimiter=delimiter)
            header = next(rows, None)
            first_row = next(rows, None)
    except OSError as e:
        raise ComponentError(f"ingest.source csv:{path}: cannot read ({e})") from e
    if not header:
        raise ComponentError(f"ingest.source csv:{path}: empty file (expected a header row)")
    if first_row is None:
        raise ComponentError(f"ingest.source csv:{path}: empty source, a header and no data rows")
    return [name.strip() for name in header]


def csv_feature_columns(header: list[str], label_column: str | None) -> list[str]:
    return [name for name in header if name != label_column]


class _ReadCsvRows(beam.DoFn):
    def __init__(self, delimiter: str, label_column: str | None):
        self.delimiter, self.label_column = delimiter, label_column

    def process(self, path):
        with FileSystems.open(path, compression_type="uncompressed") as f:
            rows = csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline=""), delimiter=self.delimiter)
            header = [name.strip() for name in next(rows)]
            records = (self._record(path, rows.line_num, header, cells) for cells in rows if cells)
            yield from batched(records)

    def _record(self, path, line, header, cells) -> RawRecord:
        key = f"{path}:{line}"
        if len(cells) != len(header):
            return RawRecord(key=key, error=f"line {line}: {len(cells)} cells, expected {len(header)}")
        row = dict(zip(header, (cell.strip() for cell in cells)))
        label = None
        if self.label_column:
            label = row.pop(self.label_column)
            if not label:
                return RawRecord(key=key, error=f"line {line}: missing label in column {self.label_column!r}")
        values = []
        for column, text in row.items():
            if not text:
                return RawRecord(key=key, label=label, error=f"line {line}: missing value in column {column!r}")
            try:
                values.append(float(text))
            except ValueError:
                return RawRecord(
                    key=key, label=label, error=f"line {line}: column {column!r}: {text!r} is not a number"
                )
        return RawRecord(key=key, features=values, label=label)


class ReadCsv(beam.PTransform):
    """Rows of a CSV file with a header; every column but the label column is a feature."""

    def __init__(self, path: str, delimiter: str = ",", label_column: str | None = None):
        super().__init__()
        self.path = path
        self.read = _ReadCsvRows(delimiter, label_column)

    def expand(self, pipeline):
        return (
            pipeline
            | "File" >> beam.Create([self.path])
            | "ReadRows" >> beam.ParDo(self.read)
            | "Redistribute" >> beam.Reshuffle()
            | "CountRead" >> beam.ParDo(CountRead())
        )

