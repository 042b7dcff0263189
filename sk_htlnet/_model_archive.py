"""The model file's container: a zip archive of named members and a manifest of their digests,
written and read under size caps.

:func:`write_archive` writes the members it is given and ``manifest.json``: the SHA-256 digest of
each, after the header keys it is given (an estimator file's manifest has none, a pipeline file's
has ``format`` and ``version``).  :func:`open_regular` opens a path without blocking and only if
it is a regular file.  :func:`read_archive` reads the members of an estimator file (:data:`MEMBERS`)
or of the names it is given, and trusts nothing the zip headers declare: the end-of-archive records
(:func:`end_records`) must declare exactly those members and a small central directory, each member
is decompressed chunk by chunk under a byte limit and a zip-bomb ratio (:func:`read_member`), and
the manifest must hold the header and the digests, which must match.  :func:`declared_entries`
tells how many members a file's end record declares (three for an estimator file, four for a
pipeline file) before either is read.  Every refusal is a ``ModelFileError``.
"""

import errno
import hashlib
import json
import os
import stat
import zipfile

from ._json_input import parse_json
from ._model_fields import ModelFileError, as_object

MEMBERS = ("config.json", "manifest.json", "weights.safetensors")
"""The members of an estimator file."""
MANIFEST = "manifest.json"
_MAX_MANIFEST = 4096
_MAX_CENTRAL_DIRECTORY = 1 << 20  # a few entries, each with at most 64 KiB of name, extra field, comment
_CHUNK = 1 << 20
# A member may decompress to at most 200 times its compressed size plus 16 MiB: deflate reaches
# about 1000:1 on filler (zeros, spaces), while JSON settings compress 3-10:1 and weights about 1:1.
_MAX_EXPANSION = 200
_EXPANSION_SLACK = 16 << 20
_CONFIG_FLOOR = 16 << 20  # config.json may have max_bytes // 8 bytes, and at least this (or max_bytes)


def config_cap(max_bytes):
    """Most bytes ``config.json`` may decompress to: ``max_bytes // 8``, and at least 16 MiB (or
    ``max_bytes`` when smaller): parsing JSON takes up to about 15 times its size."""
    return max(max_bytes // 8, min(max_bytes, _CONFIG_FLOOR))


def write_archive(path, members, header=None):
    """Write a model file at ``path``: ``members`` (a dict of name to bytes), in that order, then
    ``manifest.json``: the ``header`` items (a dict, where given) and each member's SHA-256 digest."""
    manifest = {**(header or {}), **{name: hashlib.sha256(data).hexdigest() for name, data in members.items()}}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(MANIFEST, json.dumps(manifest))


def _le(data):
    return int.from_bytes(data, "little")


def end_records(f, size):
    """``[(entries, central directory bytes), ...]`` that the end-of-archive record of the open file
    ``f`` (of ``size`` bytes) declares and, where a zip64 locator precedes it, the zip64 record
    declares (zipfile then trusts the zip64 record's counts; also the record just before the locator,
    which Python's zipfile reads whatever the locator points to); None where there is no end record.  A
    zip64 locator that points outside the archive or to no zip64 record is a ``ModelFileError``.
    Read before zipfile parses the archive (ZipFile reads every entry the records declare); ``f`` is
    left at offset 0."""
    try:
        tail_size = min(size, 22 + 65535)
        f.seek(size - tail_size)
        tail = f.read(tail_size)
        at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        declared = [(_le(tail[at + 10:at + 12]), _le(tail[at + 12:at + 16]))]
        eocd = size - tail_size + at
        if eocd >= 20:
            f.seek(eocd - 20)
            locator = f.read(20)
            if locator[:4] == b"PK\x06\x07":
                record_at = _le(locator[8:16])
                if record_at + 56 > eocd - 20:
                    raise ModelFileError("a zip64 locator points outside the archive")
                f.seek(record_at)
                record = f.read(56)
                if record[:4] != b"PK\x06\x06":
                    raise ModelFileError("a zip64 locator points to no zip64 record")
                declared += [(_le(record[24:32]), _le(record[40:48])), (_le(record[32:40]), _le(record[40:48]))]
                if eocd >= 76 and record_at != eocd - 76:  # Python's zipfile reads the record just
                    f.seek(eocd - 76)                       # before the locator, whatever it points to
                    record = f.read(56)
                    if record[:4] == b"PK\x06\x06":
                        declared += [(_le(record[24:32]), _le(record[40:48])),
                                     (_le(record[32:40]), _le(record[40:48]))]
        return declared
    finally:
        f.seek(0)


def declared_entries(f):
    """How many members the end-of-archive record of the open file ``f`` declares; None where it
    has none or its zip64 locator points nowhere (:func:`read_archive` then names the problem)."""
    try:
        declared = end_records(f, os.fstat(f.fileno()).st_size)
    except ModelFileError:
        return None
    return None if declared is None else declared[0][0]


def _check_central_directory(f, size, members):
    """Refuse, from the end-of-archive records, an archive that declares other than ``members`` or a
    central directory too large for them, before zipfile parses it."""
    try:
        declared = end_records(f, size)
    except ModelFileError as exc:
        raise ModelFileError(f"not an sk_htlnet model file ({exc})") from None
    if declared is None:
        raise ModelFileError("not an sk_htlnet model file (not a zip archive)")
    for entries, directory in declared:
        if entries != len(members) or directory > _MAX_CENTRAL_DIRECTORY:
            raise ModelFileError(f"unexpected archive members: the archive declares {entries} members and a "
                                 f"{directory}-byte directory; expected the {len(members)} members "
                                 f"{sorted(members)}")


def read_member(archive, info, limit, why):
    """At most ``limit`` bytes of the member ``info`` of the open ZipFile ``archive`` (``why``: the
    limit's name, for the error), decompressed chunk by chunk, and at most 200 times its compressed
    size plus 16 MiB: its size in the zip header is not trusted, its compressed size is (zipfile
    reads no more than that from the file).  Only stored and deflated members are read: a bzip2 or
    LZMA decompressor allocates its output before any limit applies (a 2 KB bzip2 member asked
    for gigabytes), and save_model writes deflate."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ModelFileError(f"{info.filename}: compression method {info.compress_type}; expected stored (0) or "
                             "deflated (8)")
    expansion = _MAX_EXPANSION * info.compress_size + _EXPANSION_SLACK
    if expansion < limit:
        limit = expansion
        why = f"{_MAX_EXPANSION} times its {info.compress_size} compressed bytes + 16 MiB (a zip bomb)"
    parts, total = [], 0
    with archive.open(info) as member:
        while True:
            chunk = member.read(min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ModelFileError(f"{info.filename} decompresses to more than {limit} bytes, {why}")
    return b"".join(parts)


def _shown(value, like):
    """A manifest's header value in an error: a str's repr (40 characters), else its text (20)."""
    return repr(str(value)[:40]) if isinstance(like, str) else str(value)[:20]


def read_archive(f, max_bytes, members=MEMBERS, header=None):
    """The members' bytes from the open file ``f``, keyed by name, after bounded reads and the
    digest check; the manifest is checked, not returned.

    ``members``: the names the archive must hold, no more and no fewer, ``manifest.json`` among
    them (an estimator file's :data:`MEMBERS` by default), in the order their digests are checked.
    The file may have at most ``max_bytes``, and its members together at most ``max_bytes`` after
    decompression, ``config.json`` at most :func:`config_cap` and the manifest at most 4096 bytes.
    The manifest must be a JSON object of exactly the ``header`` keys (a dict, where given), whose
    values must equal (and be of the type of) those in ``header``, and the SHA-256 digest of each
    other member."""
    header = header or {}
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes:
        raise ModelFileError(f"the file has {size} bytes, more than max_bytes={max_bytes}")
    _check_central_directory(f, size, members)
    with zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
        names = sorted(info.filename for info in infos)
        if names != sorted(members):
            raise ModelFileError(f"unexpected archive members {names[:10]}; expected {sorted(members)}")
        read, budget, config_limit = {}, max_bytes, config_cap(max_bytes)
        for info in infos:
            if info.filename == MANIFEST and budget > _MAX_MANIFEST:
                limit, why = _MAX_MANIFEST, f"the manifest's limit of {_MAX_MANIFEST} bytes"
            elif info.filename == "config.json" and budget > config_limit:
                limit, why = config_limit, (f"the limit of config.json, max_bytes // 8 (at least 16 MiB) = "
                                            f"{config_limit} (parsing JSON takes up to about 15 times its size)")
            else:
                limit, why = budget, f"what is left of max_bytes={max_bytes} after the other members"
            read[info.filename] = read_member(archive, info, limit, why)
            budget -= len(read[info.filename])
    manifest = parse_json(read.pop(MANIFEST), MANIFEST, _MAX_MANIFEST, ModelFileError)
    digested = [name for name in members if name != MANIFEST]
    as_object(manifest, MANIFEST, (*header, *digested))
    if any(type(manifest[key]) is not type(value) or manifest[key] != value for key, value in header.items()):
        expected = " ".join(f"{key} {value!r}" for key, value in header.items())
        got = " ".join(f"{key} {_shown(manifest[key], value)}" for key, value in header.items())
        raise ModelFileError(f"{MANIFEST}: expected {expected}, got {got}")
    for name in digested:
        if hashlib.sha256(read[name]).hexdigest() != manifest[name]:
            raise ModelFileError(f"{name} does not match its digest in the manifest: the file was altered")
    return read


def open_regular(path):
    """Open ``path`` for reading without blocking (a FIFO or a device would block or never end) and
    require a regular file: a folder raises IsADirectoryError, as open() does, anything else that is
    not a regular file is a ModelFileError."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            raise ModelFileError(f"{os.fspath(path)!r} is not a regular file (a pipe, socket or device): "
                                 "a model file is read from a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
