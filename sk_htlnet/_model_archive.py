"""The model file's container: a zip archive of three members, written and read under size caps.

:func:`write_archive` writes ``config.json``, ``weights.safetensors`` and ``manifest.json`` (the
SHA-256 digest of the other two).  :func:`open_regular` opens a path without blocking and only if
it is a regular file; :func:`read_archive` reads the three members from it and trusts nothing the
zip headers declare: the end-of-archive records must declare the three members and a small
central directory (:func:`_check_central_directory`), each member is decompressed chunk by chunk
under a byte limit and a zip-bomb ratio (:func:`_read_member`), and the digests must match.  Every
refusal is a ``ModelFileError``.
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
_MAX_MANIFEST = 4096
_MAX_CENTRAL_DIRECTORY = 1 << 20  # three entries, each with at most 64 KiB of name, extra field, comment
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


def write_archive(path, config_bytes, weights_bytes):
    """Write the model file at ``path``: the two members and a manifest of their SHA-256 digests."""
    manifest = {
        "config.json": hashlib.sha256(config_bytes).hexdigest(),
        "weights.safetensors": hashlib.sha256(weights_bytes).hexdigest(),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", config_bytes)
        archive.writestr("weights.safetensors", weights_bytes)
        archive.writestr("manifest.json", json.dumps(manifest))


def _check_central_directory(f, size):
    """Refuse, from the end-of-archive record, an archive that declares other than three members or a
    central directory too large for three, before zipfile parses it (ZipFile reads every entry)."""
    tail_size = min(size, 22 + 65535)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise ModelFileError("not an sk_htlnet model file (not a zip archive)")
    declared = [(int.from_bytes(tail[at + 10:at + 12], "little"), int.from_bytes(tail[at + 12:at + 16], "little"))]
    eocd = size - tail_size + at
    if eocd >= 20:  # a zip64 locator right before the record: zipfile then trusts the zip64 record's counts
        f.seek(eocd - 20)
        locator = f.read(20)
        if locator[:4] == b"PK\x06\x07":
            record_at = int.from_bytes(locator[8:16], "little")
            if record_at + 56 > eocd - 20:
                raise ModelFileError("not an sk_htlnet model file (a zip64 locator points outside the archive)")
            f.seek(record_at)
            record = f.read(56)
            if record[:4] != b"PK\x06\x06":
                raise ModelFileError("not an sk_htlnet model file (a zip64 locator points to no zip64 record)")
            declared += [(int.from_bytes(record[24:32], "little"), int.from_bytes(record[40:48], "little")),
                         (int.from_bytes(record[32:40], "little"), int.from_bytes(record[40:48], "little"))]
    for entries, directory in declared:
        if entries != len(MEMBERS) or directory > _MAX_CENTRAL_DIRECTORY:
            raise ModelFileError(f"unexpected archive members: the archive declares {entries} members and a "
                                 f"{directory}-byte directory; expected the {len(MEMBERS)} members "
                                 f"{list(MEMBERS)}")
    f.seek(0)


def _read_member(archive, info, limit, why):
    """At most ``limit`` bytes of a member (``why``: the limit's name), decompressed chunk by chunk:
    its size in the zip header is not trusted, its compressed size is (zipfile reads no more than
    that from the file)."""
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


def read_archive(f, max_bytes):
    """The three members' bytes from the open file ``f``, after bounded reads and the digest check."""
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes:
        raise ModelFileError(f"the file has {size} bytes, more than max_bytes={max_bytes}")
    _check_central_directory(f, size)
    with zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
        names = sorted(info.filename for info in infos)
        if names != sorted(MEMBERS):
            raise ModelFileError(f"unexpected archive members {names[:10]}; expected {sorted(MEMBERS)}")
        members, budget, config_limit = {}, max_bytes, config_cap(max_bytes)
        for info in infos:
            if info.filename == "manifest.json" and budget > _MAX_MANIFEST:
                limit, why = _MAX_MANIFEST, f"the manifest's limit of {_MAX_MANIFEST} bytes"
            elif info.filename == "config.json" and budget > config_limit:
                limit, why = config_limit, (f"the limit of config.json, max_bytes // 8 (at least 16 MiB) = "
                                            f"{config_limit} (parsing JSON takes up to about 15 times its size)")
            else:
                limit, why = budget, f"what is left of max_bytes={max_bytes} after the other members"
            members[info.filename] = _read_member(archive, info, limit, why)
            budget -= len(members[info.filename])
    manifest = parse_json(members["manifest.json"], "manifest.json", _MAX_MANIFEST, ModelFileError)
    as_object(manifest, "manifest.json", ("config.json", "weights.safetensors"))
    for name in ("config.json", "weights.safetensors"):
        if hashlib.sha256(members[name]).hexdigest() != manifest[name]:
            raise ModelFileError(f"{name} does not match its digest in the manifest: the file was altered")
    return members


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
