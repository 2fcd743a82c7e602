"""The train/eval split: stable wherever the data lives, duplicates kept together.

A record goes to eval when ``blake2b-128(salt + NUL + key) / 2**128 < eval_fraction``. The key is
the record's name relative to the source root (``split_key: path``: ``cat/a.png``,
``table.csv:5``, normalised, so ``imgs``, ``./imgs/``, an absolute path or another disk or bucket
give the same split) or its content (``split_key: content``: the encoded file, the pixels or the
vector). Records with identical content always share a split: under ``split_key: path`` a
duplicate group takes the split of its smallest path key (a small extra Beam stage). Sources
with a natural split (``photos``: held-out regions) keep it.
"""
from __future__ import annotations

import collections
import hashlib

import apache_beam as beam
import numpy as np

from ganpipe.components.sources.common import RawRecord

SPLIT_KEYS = ("path", "content")
_BUCKETS = 16  # content digests are grouped in this many buckets to find duplicates


def digest(salt: str, *parts: bytes) -> bytes:
    """A 128-bit key hash of ``parts`` joined (collisions: ~1e-20 for a billion records), as 16
    big-endian bytes: bytes order like the number, and Beam encodes bytes without pickling."""
    hasher = hashlib.blake2b(salt.encode("utf-8") + b"\0", digest_size=16)
    for part in parts:  # fed in pieces: an image is hashed where it lies, never copied
        hasher.update(part)
    return hasher.digest()


def content_of(record: RawRecord) -> tuple[bytes, ...] | None:
    """The parts of a record's content, hashed as if joined."""
    if record.image is not None:
        shape = ",".join(map(str, record.image_shape or ()))
        return shape.encode(), b"|", record.image
    if record.features is not None:
        return (np.asarray(record.features, np.float64).tobytes(),)
    return None


class Splitter:
    """Decides a record's split from its key hash (see the module docstring)."""

    def __init__(self, eval_fraction: float, split_key: str = "path", salt: str = ""):
        if split_key not in SPLIT_KEYS:
            raise ValueError(f"split_key {split_key!r} is not one of {', '.join(SPLIT_KEYS)}")
        self.eval_fraction, self.split_key, self.salt = eval_fraction, split_key, salt
        self.threshold = int(eval_fraction * 2**64) << 64

    def rule(self) -> dict:
        """What the artifact's metadata records, enough to re-derive every record's split."""
        return {
            "rule": "eval if blake2b-128(salt + NUL + key) / 2**128 < eval_fraction",
            "key": "name relative to the source root" if self.split_key == "path" else "record content",
            "split_key": self.split_key,
            "salt": self.salt,
            "eval_fraction": self.eval_fraction,
            "duplicates": "records with identical content share a split",
        }

    def digests(self, record: RawRecord) -> tuple[bytes, bytes | None]:
        """(key hash, content hash for duplicate grouping): the content hash is None when
        duplicates need no grouping (``split_key: content``, a natural split, no content)."""
        content = content_of(record)
        content_hash = None if content is None else digest(self.salt, *content)
        if self.split_key == "content" and content_hash is not None:
            return content_hash, None
        key_hash = digest(self.salt, record.name.encode("utf-8"))
        return key_hash, None if record.split else content_hash

    def split_of_hash(self, key_hash: bytes) -> str:
        return "eval" if int.from_bytes(key_hash, "big") < self.threshold else "train"


def _bucketed_pairs(encoded: list[tuple]):
    """(bucket, [(content hash, key hash)]) for a batch of encoded records (``(key hash,
    content hash, natural split, data)``): few elements, not one per record."""
    buckets = collections.defaultdict(list)
    for key_hash, content_hash, _, _ in encoded:
        if content_hash is not None:
            buckets[content_hash[0] % _BUCKETS].append((content_hash, key_hash))
    return buckets.items()


def _duplicate_groups(bucket_and_pairs):
    """(content hash, smallest key hash) for every content seen more than once."""
    _, pair_lists = bucket_and_pairs
    smallest, seen = {}, collections.Counter()
    for pairs in pair_lists:
        for content, key_hash in pairs:
            seen[content] += 1
            smallest[content] = min(smallest.get(content, key_hash), key_hash)
    return ((content, smallest[content]) for content, count in seen.items() if count > 1)


class DuplicateGroups(beam.PTransform):
    """Batches of encoded records (see ``_bucketed_pairs``) -> (content hash, key hash the
    group's split follows), for ``split_key: path`` (under ``content`` duplicates share a key
    already)."""

    def expand(self, batches):
        return (
            batches
            | "BucketContent" >> beam.FlatMap(_bucketed_pairs)
            | "GroupBuckets" >> beam.GroupByKey()
            | "FindDuplicates" >> beam.FlatMap(_duplicate_groups)
        )
