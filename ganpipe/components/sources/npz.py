"""``npz:<file>``: rows of an array in an ``.npz`` file, [N, D] vectors or [N, H, W(, C)] uint8
images, with an optional label array of the same length.

Workers read rows by ranges straight from the archive member (a seek to the first row of the
range, then only that range's bytes), never the whole array: an uncompressed archive
(``np.savez``) costs no more than a memory map; a compressed one (``np.savez_compressed``)
decompresses up to the range on each reader.
"""
from __future__ import annotations

import dataclasses
import math
import posixpath
import zipfile

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from ganpipe.components.base import ComponentError
from ganpipe.infra.beamio import chunks
from ganpipe.components.sources.common import CountRead, RawRecord, SourcePlan

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
    (3, 0): np.lib.format.read_array_header_2_0,  # version 3 only allows UTF-8 field names
}
_NUMBER_KINDS = "biuf"  # bool, signed, unsigned, float
_LABEL_KINDS = "biufUS"  # numbers, str, bytes: canonicalised by the label rule


@dataclasses.dataclass(frozen=True)
class ArrayInfo:
    """Where an array's rows are in the archive: member name, shape, dtype, data offset."""

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


def plan(path, params) -> SourcePlan:
    if not FileSystems.exists(path):
        raise ComponentError(f"ingest.source npz:{path}: file does not exist")
    features_key, label_key = params["features_key"], params["label_column"]
    arrays = read_array_infos(path)
    for key in filter(None, (features_key, label_key)):
        if key not in arrays:
            raise ComponentError(f"ingest.source npz:{path}: no array {key!r}; it has {', '.join(arrays)}")
    data = arrays[features_key]
    labels = arrays[label_key] if label_key else None
    _check_data(path, features_key, data)
    if labels is not None:
        _check_labels(path, label_key, labels, len_data=data.shape[0])
    count = data.shape[0]
    if count == 0:
        raise ComponentError(f"ingest.source npz:{path}: empty source, array {features_key!r} has no rows")
    kind = "vector" if len(data.shape) == 2 else "image"
    feature_names = [f"{features_key}[{i}]" for i in range(data.shape[1])] if kind == "vector" else None
    read = ReadNpz(path, count, data, labels)
    return SourcePlan(read, kind, count, params["label_names"], feature_names)


def read_array_infos(path: str) -> dict[str, ArrayInfo]:
    """Every array of the archive, from the .npy headers only."""
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f, zipfile.ZipFile(f) as archive:
            return {
                member[: -len(".npy")]: _array_info(archive, member)
                for member in archive.namelist()
                if member.endswith(".npy")
            }
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ComponentError(f"ingest.source npz:{path}: not a readable .npz archive ({e})") from e


def _array_info(archive: zipfile.ZipFile, member: str) -> ArrayInfo:
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        shape, fortran_order, dtype = _HEADER_READERS[version](stream)
        return ArrayInfo(member, shape, dtype, fortran_order, stream.tell())


def _check_data(path: str, key: str, data: ArrayInfo) -> None:
    where = f"ingest.source npz:{path}: array {key!r}"
    if len(data.shape) not in (2, 3, 4):
        raise ComponentError(f"{where} has shape {data.shape}; expected [N, D] vectors or [N, H, W(, C)] images")
    if data.dtype.kind not in _NUMBER_KINDS:
        raise ComponentError(f"{where} holds {data.dtype} values; expected numbers")
    if len(data.shape) > 2 and data.dtype != np.uint8:
        raise ComponentError(f"{where}: image arrays must be uint8, got {data.dtype}")
    if len(data.shape) == 4 and data.shape[3] not in (1, 3, 4):
        raise ComponentError(
            f"{where} has {data.shape[3]} channels per pixel; expected 1 (grey), 3 (RGB) or 4 (RGBA)"
        )
    if data.fortran_order and len(data.shape) > 1:
        raise ComponentError(f"{where} is stored in Fortran order; save np.ascontiguousarray(...) instead")


def _check_labels(path: str, key: str, labels: ArrayInfo, len_data: int) -> None:
    where = f"ingest.source npz:{path}: label array {key!r}"
    if labels.shape != (len_data,):
        raise ComponentError(f"{where} has shape {labels.shape}, expected ({len_data},)")
    if labels.dtype.kind not in _LABEL_KINDS:
        raise ComponentError(f"{where} holds {labels.dtype} values; expected numbers or strings")


def read_rows(archive: zipfile.ZipFile, array: ArrayInfo, start: int, stop: int) -> np.ndarray:
    with archive.open(array.member) as stream:
        stream.seek(array.offset + start * array.row_bytes)
        data = stream.read((stop - start) * array.row_bytes)
    return np.frombuffer(data, array.dtype).reshape((stop - start,) + array.shape[1:])


class _NpzRange(beam.DoFn):
    def __init__(self, path: str, data: ArrayInfo, labels: ArrayInfo | None):
        self.path, self.data, self.labels = path, data, labels

    def setup(self):
        self.file = FileSystems.open(self.path, compression_type="uncompressed")
        self.archive = zipfile.ZipFile(self.file)

    def teardown(self):
        self.archive.close()
        self.file.close()

    def process(self, bounds):
        start, stop = bounds
        rows = read_rows(self.archive, self.data, start, stop)
        labels = read_rows(self.archive, self.labels, start, stop) if self.labels else [None] * len(rows)
        name = posixpath.basename(self.path)
        yield [self._record(start + i, name, row, label) for i, (row, label) in enumerate(zip(rows, labels))]

    def _record(self, i: int, name: str, row: np.ndarray, label) -> RawRecord:
        record = RawRecord(key=f"{self.path}[{i}]", name=f"{name}[{i}]", path=self.path, index=i, label=label)
        if row.ndim == 1:
            record.features = row.astype(np.float64).tolist()
        else:
            record.image, record.image_shape = row.tobytes(), row.shape
        return record


class ReadNpz(beam.PTransform):
    def __init__(self, path: str, count: int, data: ArrayInfo, labels: ArrayInfo | None):
        super().__init__()
        self.count = count
        self.read = _NpzRange(path, data, labels)

    def expand(self, pipeline):
        return (
            pipeline
            | "Ranges" >> beam.Create(chunks(self.count))
            | "ReadRows" >> beam.ParDo(self.read)
            | "CountRead" >> beam.ParDo(CountRead())
        )
