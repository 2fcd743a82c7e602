"""The one label rule every source follows.

A label is a string. A source's raw label value is canonicalised: text is stripped; bytes are
decoded as UTF-8; integers (Python, numpy, booleans as 0/1) and integral floats become their
decimal digits (``7.0`` -> ``"7"``). The empty string and ``"-1"`` (TFDS's convention) mean
*no label*. Non-integral floats, NaN, infinities, bytes that are not UTF-8 and other types
(arrays, ...) are rejected records naming the value.

Labels are names, never indices: ``"007"`` and ``"7"`` are two classes. The vocabulary is the set
of names actually seen, in natural sort order (``"2"`` before ``"10"``), unless ``label_names``
is given: then it is exactly that list (scalars coerced by the same rule, duplicates refused)
and any other label is a rejected record.
"""
from __future__ import annotations

import math
import numbers
import re

from ganpipe.components.base import ComponentError

UNLABELLED = ("", "-1")


class BadLabel(ValueError):
    """A raw label value that the rule refuses; the message names the value."""


def canonical_label(value) -> str | None:
    """The label name of a raw value, None for no label; ``BadLabel`` for a refused value."""
    if value is None:
        return None
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
        value = value.item()
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadLabel(f"label {value!r} is not UTF-8 text") from None
    if isinstance(value, str):
        name = value.strip()
    elif isinstance(value, numbers.Integral):
        name = str(int(value))
    elif isinstance(value, numbers.Real):
        if not math.isfinite(value) or not float(value).is_integer():
            raise BadLabel(f"label {value!r} is not an integer (labels are names or whole numbers)")
        name = str(int(value))
    else:
        raise BadLabel(f"label {value!r} of type {type(value).__name__} is not a name or a whole number")
    return None if name in UNLABELLED else name


def natural_key(name: str) -> tuple:
    """Sorts ``"2"`` before ``"10"`` and ``"img9"`` before ``"img10"``; ties by the plain string."""
    parts = re.split(r"([0-9]+)", name)
    return tuple((0, int(part), "") if part.isascii() and part.isdigit() else (1, 0, part) for part in parts), name


def vocabulary(names) -> list[str]:
    return sorted(set(names), key=natural_key)


def declared_label_names(values: list | None) -> list[str] | None:
    """``ingest.label_names`` checked: a list of unique labels (``[0, 1]`` means ``["0", "1"]``)."""
    try:
        return check_label_names(values, "ingest.label_names")
    except ValueError as e:
        raise ComponentError(str(e)) from None


def check_label_names(values: list | None, where: str) -> list[str] | None:
    """The canonical names of a label list, or ValueError naming ``where`` and the bad entry."""
    if values is None:
        return None
    names = []
    for value in values:
        try:
            name = canonical_label(value)
        except BadLabel as e:
            raise ValueError(f"{where}: {e}") from None
        if name is None:
            raise ValueError(f"{where}: {value!r} means 'no label' and cannot name a class")
        names.append(name)
    duplicates = sorted({name for name in names if names.count(name) > 1}, key=natural_key)
    if duplicates:
        raise ValueError(f"{where}: {', '.join(map(repr, duplicates))} given more than once")
    return names
