"""Building blocks of the model file's schema: the error, the caps, and checks of single JSON fields.

:class:`ModelFileError` is what every refusal raises (shown as ``sk_htlnet.io.ModelFileError``);
:func:`fail` raises it naming the field, what was expected and a short repr of the value.  The
``as_*`` checks take a parsed JSON value and a field name and return the value when it has the
expected type and range (numbers as floats or float64 arrays).  :func:`encode_value` and
:func:`decode_value` store a category value or column label as ``[kind, value]``, so that 1,
1.0, True and "1" stay apart.  The ``MAX_*`` caps bound sizes that the parameter constraints
allow but a model file must not declare.
"""

import math
import reprlib

import numpy as np
import pandas as pd

# Caps on sizes that the parameter constraints allow but a model file must not declare: they bound
# the time and memory of building the network from the settings, before the weights are compared.
MAX_THREADS = 1024  # n_threads
MAX_WIDTH = 65536  # embedding_dim, label_embedding_dim, fusion_dim, and each layer of tower_units
MAX_LAYERS = 64  # layers of tower_units
MAX_BINS = 65536  # n_bins
MAX_EXPERTS = 1024  # n_experts
MAX_STAGES = 256  # binary stages (targets - 1)

_SCALAR_KINDS = {"bool": bool, "int": int, "float": float, "str": str}

short_repr = reprlib.Repr()
short_repr.maxlevel, short_repr.maxlist, short_repr.maxdict, short_repr.maxstring = 2, 4, 4, 40
short_repr.maxother = 40


class ModelFileError(ValueError):
    """The file is not a valid, intact sk_htlnet model file (the message names what is wrong)."""


ModelFileError.__module__ = "sk_htlnet.io"


def fail(field, expected, value):
    """Raise a :class:`ModelFileError`: ``field: expected <expected>, got <short repr of value>``."""
    raise ModelFileError(f"{field}: expected {expected}, got {short_repr.repr(value)}")


# ---- one field of a parsed JSON value -------------------------------------------------------
def as_object(value, field, keys=None, optional=()):
    """A JSON object; with ``keys``, exactly those keys (those in ``optional`` may be absent)."""
    if not isinstance(value, dict):
        fail(field, "a JSON object", value)
    if keys is not None:
        missing = sorted(set(keys) - set(value) - set(optional))
        unknown = sorted(set(value) - set(keys))
        if missing or unknown:
            raise ModelFileError(f"{field}: missing keys {missing[:5]}, unknown keys {unknown[:5]}")
    return value


def as_list(value, field, length=None):
    """A JSON array (of ``length`` items where given)."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        fail(field, "a list" if length is None else f"a list of {length} items", value)
    return value


def as_int(value, field, low, high):
    """An int (not a bool) in ``[low, high]``."""
    if type(value) is not int or not low <= value <= high:
        fail(field, f"an int in [{low}, {high}]", value)
    return value


def as_bool(value, field):
    """``true`` or ``false``."""
    if type(value) is not bool:
        fail(field, "true or false", value)
    return value


def as_str(value, field, options=None):
    """A string (one of ``options`` where given)."""
    if type(value) is not str or (options is not None and value not in options):
        fail(field, "a string" if options is None else f"one of {sorted(options)}", value)
    return value


def as_number(value, field, positive=False):
    """A finite int or float (not a bool), as float."""
    try:
        ok = type(value) in (int, float) and math.isfinite(value) and (value > 0 or not positive)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        fail(field, "a finite positive number" if positive else "a finite number", value)
    return float(value)


def as_numbers(value, field, length=None, positive=False, increasing=False, non_decreasing=False):
    """A list of finite numbers, as a float64 array."""
    as_list(value, field, length)
    if not all(type(v) in (int, float) for v in value):
        bad = next(v for v in value if type(v) not in (int, float))
        fail(f"{field} items", "numbers", bad)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except OverflowError:
        fail(f"{field} items", "finite numbers", value)
    if not np.isfinite(arr).all() or (positive and (arr <= 0).any()):
        fail(f"{field} items", "finite positive numbers" if positive else "finite numbers", value)
    if increasing and (np.diff(arr) <= 0).any():
        fail(field, "strictly increasing numbers", value)
    if non_decreasing and (np.diff(arr) < 0).any():
        fail(field, "non-decreasing numbers", value)
    return arr


# ---- category values and column labels -------------------------------------------------------------------
def encode_value(value, tuples=False):
    """A category value or column label as ``[kind, value]``; where ``tuples``, a tuple of them (a
    MultiIndex label) as ``["tuple", [items]]``.  Raises TypeError naming the type for anything else."""
    if tuples and isinstance(value, tuple):
        return ["tuple", [_encode_scalar(v) for v in value]]
    return _encode_scalar(value)


def _encode_scalar(value):
    if isinstance(value, (bool, np.bool_)):
        return ["bool", bool(value)]
    if isinstance(value, (int, np.integer)):
        return ["int", int(value)]
    if isinstance(value, (float, np.floating)):
        return ["float", float(value)]
    if isinstance(value, str):
        return ["str", str(value)]
    raise TypeError(type(value).__name__)


def decode_value(item, field, tuples=False):
    """The inverse of :func:`encode_value` (tuples only where ``tuples``)."""
    if tuples and isinstance(item, list) and len(item) == 2 and item[0] == "tuple":
        parts = as_list(item[1], f"{field} (a tuple)")
        if not parts:
            fail(field, "a non-empty tuple", item)
        return tuple(decode_value(part, f"{field}[{i}]") for i, part in enumerate(parts))
    if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is str and item[0] in _SCALAR_KINDS):
        fail(field, '[kind, value] with kind "str", "int", "float" or "bool"' + (' (or "tuple")' if tuples else ""),
             item)
    kind, value = item
    if kind == "float" and type(value) is int:
        try:
            value = float(value)
        except OverflowError:
            fail(field, "a float", item)
    if type(value) is not _SCALAR_KINDS[kind]:
        fail(field, f"[kind, value] whose value is a {kind}", item)
    return value


def unique_index(values, field):
    """``values`` as an object Index, refused if two of them are equal (1, 1.0 and True are)."""
    index = pd.Index(values, dtype=object, tupleize_cols=False)
    if not index.is_unique:
        dup = short_repr.repr(index[index.duplicated()].tolist()[:3])
        raise ModelFileError(f"{field}: expected distinct values, {dup} repeat (1, 1.0 and True count as equal)")
    return index


def is_json_scalar(value):
    """Whether ``value`` is None, a bool, an int, a float or a str."""
    return value is None or type(value) in (bool, int, float, str)


def is_flat_json(value):
    """Whether ``value`` is a JSON scalar or a list of JSON scalars."""
    return all(is_json_scalar(v) for v in value) if isinstance(value, list) else is_json_scalar(value)
