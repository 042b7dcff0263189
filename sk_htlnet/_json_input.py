"""Parsing JSON that comes from an untrusted file: :func:`parse_json`.

The bytes are checked before ``json.loads`` builds anything: their size against a cap, and the
number of objects and arrays against the bytes (a pre-scan: JSON made of empty containers costs
about 25 times its size as Python objects).  Parsing then refuses duplicate keys, text that is not
UTF-8 or not JSON, and nesting too deep for the parser.  Every refusal is raised as the caller's
exception, naming the input; nothing here knows which file format the JSON belongs to.
"""

import collections
import json
import re

__all__ = ["MIN_BYTES_PER_CONTAINER", "parse_json"]

# JSON bytes per object or array that a model file needs at least: a category is ``["int", 1], ``
# (12 bytes); ``{},`` (3 bytes) costs 64 bytes as a Python dict, and a file of them about 25 times
# its size while it is parsed.  With this bound, parsing takes at most about 15 times the bytes.
MIN_BYTES_PER_CONTAINER = 8
_CONTAINER_SLACK = 64  # containers allowed beyond one per MIN_BYTES_PER_CONTAINER bytes
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


class _RepeatedKeys(ValueError):
    """Raised by the object hook for an object that repeats a key (its message names the keys)."""


def _unique_keys(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):
        duplicated = sorted(k for k, count in collections.Counter(k for k, _ in pairs).items() if count > 1)
        raise _RepeatedKeys(f"a JSON object repeats the key(s) {duplicated[:5]}")
    return result


def _count_containers(data):
    """Objects and arrays in JSON bytes: ``{`` and ``[`` outside strings."""
    count = data.count(b"{") + data.count(b"[")
    if count * MIN_BYTES_PER_CONTAINER > len(data):  # some may be inside strings: count exactly
        stripped = _JSON_STRING.sub(b"", data)
        count = stripped.count(b"{") + stripped.count(b"[")
    return count


def parse_json(data, name, max_bytes, error):
    """Parse untrusted UTF-8 JSON bytes, refusing what would be costly or ambiguous to parse.

    Parameters
    ----------
    data : bytes
        The JSON text, as read (already bounded by the caller's read).
    name : str
        What the bytes are (``"config.json"``, ``"weights.safetensors header"``): every message
        starts with it.
    max_bytes : int or None
        Largest accepted ``len(data)``; None for no cap here (the caller bounded its read).
    error : type or callable
        The exception to raise: called with the message, it returns the exception (an exception
        class such as ``ModelFileError`` qualifies, or a function wrapping the message in its
        own context).  It is raised ``from None``.

    Returns
    -------
    object
        The parsed JSON value (dicts, lists, str, int, float, bool, None).

    Raises
    ------
    Exception
        ``error(message)`` when ``data`` has more than ``max_bytes`` bytes, more objects and arrays
        than one per ``MIN_BYTES_PER_CONTAINER`` bytes (plus 64), an object repeating a key, text
        that is not UTF-8 or not JSON, or nesting too deep for the parser (RecursionError).
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{name}: {len(data)} bytes, more than the limit of {max_bytes}")
    containers = _count_containers(data)
    if containers > len(data) // MIN_BYTES_PER_CONTAINER + _CONTAINER_SLACK:
        raise error(f"{name}: {containers} JSON objects and arrays in {len(data)} bytes, more than one "
                    f"per {MIN_BYTES_PER_CONTAINER} bytes (settings need far fewer)")
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _RepeatedKeys as exc:
        raise error(f"{name}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise error(f"{name} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
