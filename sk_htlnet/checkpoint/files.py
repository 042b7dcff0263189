"""The files of a checkpoint folder: their names, atomic writes, the manifest, and refusals.

A *generation* is the set of files of one epoch count (``params-000003.pt``, ``optimizer-000003.pt``,
``embedding_optimizer-000003.pt``, ``history-000003.json``); ``manifest.json`` names the current
one.  :func:`write_atomically` writes a file through a temporary file in the folder that is flushed
to disk and renamed into place; :func:`write_manifest` writes the manifest so, with the SHA-256 of
every file; :func:`read_manifest` reads it back as untrusted input.  :class:`CheckpointError` and
:func:`refuse` word every refusal of a folder the same way.
"""

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets

from .._json_input import parse_json

__all__ = [
    "CheckpointError", "EXTENSIONS", "FORMAT", "GENERATION_FILE", "LEGACY_FILES", "MANIFEST", "TEMPORARY_FILE",
    "VERSION", "canonical", "expand", "later_generation_files", "read_manifest", "refuse", "short",
    "write_atomically", "write_manifest",
]

FORMAT = "sk_htlnet-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
_MAX_MANIFEST_BYTES = 16 * 2**20  # a manifest holds digests and the net's settings: kilobytes
# artefact -> file extension; "params" and "optimizer" are skorch's names, "history" its JSON file
EXTENSIONS = {"params": ".pt", "optimizer": ".pt", "embedding_optimizer": ".pt", "history": ".json"}
_REQUIRED = ("params", "optimizer", "history")
GENERATION_FILE = re.compile(r"^(params|optimizer|embedding_optimizer|history)-(\d{6,})\.(pt|json)$")
TEMPORARY_FILE = re.compile(r"^\.(params|optimizer|embedding_optimizer|history|manifest)[-.].*\.tmp$")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
LEGACY_FILES = ("params.pt", "optimizer.pt", "embedding_optimizer.pt", "history.json")
_REMEDY = "Remove the folder or pass another checkpoint_dir."


class CheckpointError(ValueError):
    """``checkpoint_dir`` holds a checkpoint that cannot be resumed, or is in use by another fit."""


CheckpointError.__module__ = "sk_htlnet.checkpoint"  # its public home, as tracebacks and pickles name it


def refuse(folder, problem, remedy=_REMEDY):
    """The :class:`CheckpointError` ``checkpoint_dir='folder' problem. remedy``."""
    return CheckpointError(f"checkpoint_dir={str(folder)!r} {problem}. {remedy}")


def short(value, limit=60):
    """``repr(value)``, cut to ``limit`` characters (ending in ``...``) for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def canonical(value):
    """JSON text of a settings value, keys sorted (tuples and lists alike)."""
    return json.dumps(value, sort_keys=True)


def expand(folder):
    """A folder's path as a str, ``~`` expanded."""
    return os.path.expanduser(os.fspath(folder))


def _fsync_folder(folder):
    """Flush the folder's entries (a rename) to disk, where the platform and file system can."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # a file system that cannot flush a folder (some network and FUSE ones)
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def write_atomically(folder, name, write):
    """Write ``folder/name`` through a temporary file in the same folder; return its SHA-256.

    ``write(path)`` writes the content to ``path``.  The temporary file is flushed to disk, renamed
    over ``name`` and the folder flushed, so that ``name`` is either its old or its new content in
    full, whenever the process is killed.
    """
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "xb"):  # exclusive: never another writer's file
        pass
    try:
        write(temporary)
        digest = hashlib.sha256()
        with open(temporary, "r+b") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            os.fsync(f.fileno())
        os.replace(temporary, os.path.join(folder, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_folder(folder)
    return digest.hexdigest()


def write_manifest(folder, epochs, settings, artefacts):
    """Write ``folder/manifest.json`` atomically (:func:`write_atomically`).

    Parameters
    ----------
    folder : str
        The checkpoint folder.
    epochs : int
        Epochs in the generation's history.
    settings : dict or None
        The fit's JSON-able fingerprint, stored with its keys sorted; None stores none.
    artefacts : dict
        ``{artefact: {"file": name, "sha256": hex digest}}`` of the generation's files.
    """
    manifest = {
        "format": FORMAT, "version": VERSION, "epochs": epochs,
        "settings": None if settings is None else json.loads(canonical(settings)),
        "artefacts": artefacts,
    }
    content = json.dumps(manifest, indent=1).encode("utf-8")

    def write(path):
        with open(path, "wb") as f:
            f.write(content)

    write_atomically(folder, MANIFEST, write)


def later_generation_files(folder):
    """``(name, epoch)`` of the generation files of epochs after the first in ``folder``."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = [(name, int(m.group(2))) for name in names for m in [GENERATION_FILE.match(name)] if m]
    return [(name, epoch) for name, epoch in found if epoch >= 2]


def read_manifest(folder):
    """Read and check ``folder/manifest.json``, treating it as untrusted input.

    Parameters
    ----------
    folder : str
        The checkpoint folder.

    Returns
    -------
    dict or None
        None when there is no manifest; else ``{"epochs": int, "settings": dict or None,
        "artefacts": {artefact: (file name, sha256 hex digest)}}``.

    Raises
    ------
    CheckpointError
        If the manifest cannot be read, is larger than 16 MiB, is not JSON, has another format or
        version, or a field of the wrong type; if a file name is not a plain name inside the folder
        (a path separator, ``..``, a leading dot) or a digest is not 64 hexadecimal digits; if a
        required artefact (params, optimizer, history) is missing or an unknown one is listed.
    """
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise refuse(folder, f"holds a {MANIFEST} that cannot be read ({exc})") from None
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise refuse(folder, f"holds a {MANIFEST} larger than {_MAX_MANIFEST_BYTES // 2**20} MiB: not "
                             "a checkpoint written by sk_htlnet")
    def damaged(message):
        return refuse(folder, f"holds a {MANIFEST} that is not a valid manifest ({short(message, 120)}): "
                              "the file is damaged")

    manifest = parse_json(raw, MANIFEST, _MAX_MANIFEST_BYTES, damaged)  # the model files' reader of untrusted JSON
    try:
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        settings = manifest.get("settings")
        if settings is not None:
            canonical(settings)  # a settings value too deeply nested to compare is damaged too
    except (ValueError, RecursionError) as exc:
        raise damaged(f"{type(exc).__name__}: {exc}") from None

    def malformed(what):
        return refuse(folder, f"holds a {MANIFEST} with {what}: the file is damaged or not an "
                              "sk_htlnet checkpoint")

    version = manifest.get("version")
    if manifest.get("format") != FORMAT or type(version) is not int or version != VERSION:  # not True
        raise refuse(folder, f"holds a {MANIFEST} of format {short(manifest.get('format'))} version "
                             f"{short(manifest.get('version'))}, not {FORMAT!r} version {VERSION}: "
                             "written by another program or another version of sk_htlnet")
    epochs = manifest.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise malformed(f"an invalid epoch count {short(epochs)}")
    if settings is not None and not isinstance(settings, dict):
        raise malformed(f"invalid settings {short(settings)}")
    listed = manifest.get("artefacts")
    if not isinstance(listed, dict):
        raise malformed(f"an invalid list of files {short(listed)}")
    unknown = sorted(set(listed) - set(EXTENSIONS))
    if unknown:
        raise malformed(f"unknown artefacts {short(unknown)}")
    missing = [a for a in _REQUIRED if a not in listed]
    if missing:
        raise malformed(f"no entry for {missing}")
    artefacts = {}
    for artefact, entry in listed.items():
        name = entry.get("file") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not (isinstance(name, str) and _PLAIN_NAME.match(name) and ".." not in name
                and os.path.basename(name) == name):
            raise malformed(f"a file name {short(name)} for {artefact!r} that is not a plain name in the folder")
        if not (isinstance(digest, str) and _SHA256.match(digest)):
            raise malformed(f"an invalid SHA-256 digest {short(digest)} for {artefact!r}")
        artefacts[artefact] = (name, digest)
    if len({name for name, _ in artefacts.values()}) != len(artefacts):
        raise malformed("the same file listed twice")
    return {"epochs": epochs, "settings": settings, "artefacts": artefacts}
