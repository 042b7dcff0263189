"""A fit's fingerprint: the digest of its training data, and what differs between two fingerprints.

The estimator stores in each checkpoint's manifest the fit's ``settings``: the net's spec, its
parameters (``"params"``) and the :func:`data_digest` of its training data (``"data"``).  A
checkpoint resumes only a fit with equal settings; :func:`fit_differences` words why another one
is refused, causes first.
"""

import hashlib

import torch

from .files import canonical, short

__all__ = ["data_digest", "fit_differences"]

_HASH_CHUNK_BYTES = 16 * 2**20


def _hash_array(digest, array):
    """Feed an array's dtype, shape and bytes (C order) to ``digest``, some rows at a time."""
    array = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array
    digest.update(f"{array.dtype.str}{tuple(array.shape)}".encode())
    if array.size == 0:
        return
    if array.ndim == 0:
        digest.update(array.tobytes())
        return
    rows = max(1, _HASH_CHUNK_BYTES // max(1, array[:1].nbytes))
    for start in range(0, array.shape[0], rows):
        chunk = array[start:start + rows]
        if not chunk.flags.c_contiguous:
            chunk = chunk.copy(order="C")
        digest.update(memoryview(chunk).cast("B"))


def _label(value):
    """Text of a label or category value that tells apart values of other types ("1" and 1)."""
    if isinstance(value, tuple):
        return "(" + ",".join(_label(v) for v in value) + ")"
    return f"{type(value).__module__}.{type(value).__qualname__}:{value!r}"


def data_digest(arrays, labels=()):
    """SHA-256 (hex) of training data: arrays' dtypes, shapes and bytes, then labels as text.

    Parameters
    ----------
    arrays : sequence of (str, array or tensor or None)
        Named arrays (the encoded data set's tensors, the raw targets, the encoder's statistics),
        hashed in order, 16 MiB at a time (no copy of a C-contiguous array); None marks an absent
        one.
    labels : sequence of (str, sequence)
        Named sequences of values (column labels, category vocabularies), hashed by type and
        ``repr``, so that renamed categories with the same ids differ.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    digest = hashlib.sha256(b"sk_htlnet-data-1")
    for name, array in arrays:
        digest.update(f"\0array:{name}:".encode())
        if array is None:
            digest.update(b"None")
        else:
            _hash_array(digest, array)
    for name, values in labels:
        digest.update(f"\0labels:{name}:{len(values)}:".encode())
        for value in values:
            digest.update(_label(value).encode("utf-8", "backslashreplace") + b"\0")
    return digest.hexdigest()


def _setting_differences(saved, current, limit=3):
    """Up to ``limit`` "key (checkpoint X, this fit Y)" strings for the settings that differ, keys
    as dotted paths two levels deep (``module.embedding_dim``)."""
    absent = object()
    found = []

    def walk(a, b, path, depth):
        if len(found) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict) and depth < 2:
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, absent), b.get(key, absent), f"{path}.{key}" if path else str(key), depth + 1)
        elif a is absent or b is absent or canonical(a) != canonical(b):
            shown = ["absent" if v is absent else short(v) for v in (a, b)]
            found.append(f"{path or 'settings'} (checkpoint {shown[0]}, this fit {shown[1]})")

    walk(saved, current, "", 0)
    return found


def fit_differences(saved, current):
    """What differs between two fingerprints, causes first: the parameters (``params.NAME``), then
    the training data, then (only when those are equal) the net's settings derived from them.

    Parameters
    ----------
    saved : object
        The ``settings`` of a checkpoint's manifest (untrusted: a dict, or anything).
    current : dict
        The fingerprint of this fit.

    Returns
    -------
    str
        Clauses for a message: ``"its settings differ in params.embedding_dim (checkpoint 4, this
        fit 8)"``, ``"the training data differ (...)"``.
    """
    if not (isinstance(current, dict) and "params" in current):
        return f"its settings differ in {'; '.join(_setting_differences(saved, current))}"
    saved = saved if isinstance(saved, dict) else {}
    if "params" not in saved:
        return ("it does not record the parameters and data of its fit (written by an earlier sk_htlnet or "
                "another program)")
    clauses = []
    params = _setting_differences({"params": saved.get("params")}, {"params": current["params"]})
    if params:
        clauses.append(f"its settings differ in {'; '.join(params)}")
    a, b = saved.get("data"), current.get("data")
    if canonical(a) != canonical(b):
        def digest(d):
            return str(d.get("sha256"))[:12] + "..." if isinstance(d, dict) else short(d)

        def rows(d):
            return d.get("rows") if isinstance(d, dict) else None

        count = f"; rows: checkpoint {rows(a)}, this fit {rows(b)}" if rows(a) != rows(b) else ""
        clauses.append(f"the training data differ (SHA-256 of the encoded data, vocabularies and column labels: "
                       f"checkpoint {digest(a)}, this fit {digest(b)}{count})")
    if not clauses:  # the same parameters and data, yet other settings: another version's net spec
        def rest(d):
            return {k: v for k, v in d.items() if k not in ("params", "data")}
        clauses.append(f"its settings differ in {'; '.join(_setting_differences(rest(saved), rest(current)))}")
    return "; and ".join(clauses)
