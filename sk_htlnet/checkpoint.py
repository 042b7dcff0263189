"""Checkpoints that resume or refuse: atomic generations of files, a manifest, and a lock.

:class:`~sk_htlnet.HTLNetRegressor` with ``checkpoint_dir`` set builds its net with the two skorch
callbacks defined here and holds the folder's lock while it trains:

- :class:`AtomicCheckpoint` (a ``skorch.callbacks.Checkpoint``) writes, after every epoch, a new
  *generation* of files named after the epoch count (``params-000003.pt``, ``optimizer-000003.pt``,
  ``embedding_optimizer-000003.pt`` with ``sparse_updates``, ``history-000003.json``), each to a
  temporary file in the folder that is flushed to disk (``fsync``) and then renamed into place
  (``os.replace``); then ``manifest.json`` the same way, with the SHA-256 digest of every file and
  the fit's fingerprint (``settings``: the estimator passes the net's spec, its parameters and a
  digest of the training data, :func:`data_digest`); then deletes the files of older generations.  A process killed
  at any instant (``kill -9``, a power cut after the folder is flushed) leaves a manifest that
  names a complete generation, or no manifest at all if its first epoch never finished.
- :class:`VerifiedLoadInitState` (a ``skorch.callbacks.LoadInitState``) resumes from the folder
  when training begins: it reads the manifest as untrusted input, checks the settings, the list of
  files and their digests before anything is unpickled, loads the files through skorch's
  ``net.load_params`` (``torch.load`` with ``weights_only=True``), and then checks that the weights
  and optimiser state now in the net are the tensors of the files.  Any failure refuses with
  :class:`CheckpointError` (a ``ValueError``) naming ``checkpoint_dir`` and what to do; nothing
  resumes half-way.  A folder without ``manifest.json`` that holds files of an epoch after the
  first (``params-000002.pt``, ...) lost its manifest: refused too.  A folder without a manifest
  that holds nothing, or only files of epoch 1 (what a fit killed while writing its first epoch
  leaves) holds no complete checkpoint: training starts afresh there, and those files are replaced.
  Files of the unverified ``params.pt`` layout without a manifest are refused.
- :func:`checkpoint_lock` holds an OS file lock (``checkpoint.lock`` in the folder, through the
  ``filelock`` package) for the duration of a fit, so that a second fit on the same folder is
  refused instead of overwriting the first one's files.  The operating system releases the lock
  when its holder dies, so a killed fit leaves no stale lock.  Before writing each epoch,
  :class:`AtomicCheckpoint` checks that the folder and the lock file are still the ones locked (the
  same device and inode): a folder removed or replaced during the fit stops it with an ``OSError``
  instead of being recreated without its lock.

A ``~`` at the start of a folder's path is the user's home folder (``os.path.expanduser``).

The digests detect damaged, truncated and swapped files; they are not a signature (anyone able to
write to the folder can recompute them).
"""

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import threading

import torch
from filelock import FileLock, Timeout
from skorch.callbacks import Checkpoint, LoadInitState
from skorch.utils import noop

__all__ = [
    "AtomicCheckpoint", "CheckpointError", "VerifiedLoadInitState", "checkpoint_folder", "checkpoint_lock",
    "data_digest", "read_manifest",
]

FORMAT = "sk_htlnet-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
LOCK = "checkpoint.lock"
_MAX_MANIFEST_BYTES = 16 * 2**20  # a manifest holds digests and the net's settings: kilobytes
# artefact -> file extension; "params" and "optimizer" are skorch's names, "history" its JSON file
_EXTENSIONS = {"params": ".pt", "optimizer": ".pt", "embedding_optimizer": ".pt", "history": ".json"}
_REQUIRED = ("params", "optimizer", "history")
_GENERATION_FILE = re.compile(r"^(params|optimizer|embedding_optimizer|history)-(\d{6,})\.(pt|json)$")
_TEMPORARY_FILE = re.compile(r"^\.(params|optimizer|embedding_optimizer|history|manifest)[-.].*\.tmp$")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LEGACY_FILES = ("params.pt", "optimizer.pt", "embedding_optimizer.pt", "history.json")
_REMEDY = "Remove the folder or pass another checkpoint_dir."
_HASH_CHUNK_BYTES = 16 * 2**20
# folders whose lock this process holds (checkpoint_lock): absolute path -> (folder, lock file) identities
_HELD = {}
_HELD_GUARD = threading.Lock()


class CheckpointError(ValueError):
    """``checkpoint_dir`` holds a checkpoint that cannot be resumed, or is in use by another fit."""


def _refuse(folder, problem, remedy=_REMEDY):
    return CheckpointError(f"checkpoint_dir={str(folder)!r} {problem}. {remedy}")


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _canonical(value):
    """JSON text of a settings value, keys sorted (tuples and lists alike)."""
    return json.dumps(value, sort_keys=True)


def _expand(folder):
    """A folder's path as a str, ``~`` expanded."""
    return os.path.expanduser(os.fspath(folder))


def _identity(path):
    """``(st_dev, st_ino)`` of a path (following links)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


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


def _write_atomically(folder, name, write):
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


class AtomicCheckpoint(Checkpoint):
    """skorch's ``Checkpoint`` writing each epoch as a new generation of files plus a manifest.

    After every epoch (``monitor=None``) the net's parameters, optimiser state (and the embedding
    tables' ``embedding_optimizer_`` state with ``embedding_optimizer=True``) and history go to new
    files named after the number of epochs in the history, each written to a temporary file,
    flushed and renamed; then ``manifest.json`` (the format, the epoch count, each file's name and
    SHA-256 digest, and ``settings``) is replaced the same way; then the files of older generations
    and stale temporary files are deleted.

    Parameters
    ----------
    dirname : str
        The checkpoint folder (created if missing).
    settings : dict, default=None
        JSON-able fingerprint of the fit (the estimator passes its ``_net_spec_``, sizes, encoding
        and priors, plus ``"params"``, its parameters but those a resumed fit may change, and
        ``"data"``, the :func:`data_digest` of the training data and the number of rows); a
        checkpoint resumes only into a net with equal settings.  None stores and checks nothing.
    embedding_optimizer : bool, default=False
        Whether the net has a second optimiser ``embedding_optimizer_`` to save (``sparse_updates``).
    sink : callable, default=skorch.utils.noop
        Receives a line after each checkpoint (skorch's ``sink``).

    Raises
    ------
    OSError
        From training, when an epoch's files cannot be written (disk full): the message names the
        folder, which still holds the last complete checkpoint; or when the folder (or its lock
        file) held by :func:`checkpoint_lock` was removed or replaced during the fit: the message
        says so, and nothing is written.
    """

    def __init__(self, dirname, settings=None, embedding_optimizer=False, sink=noop):
        self.settings = settings
        self.embedding_optimizer = embedding_optimizer
        # skorch's file-name templates, naming the files as file_name() does
        extra = {"f_embedding_optimizer": "embedding_optimizer-{last_epoch[epoch]:06d}.pt"} \
            if embedding_optimizer else {}
        super().__init__(
            monitor=None, f_params="params-{last_epoch[epoch]:06d}.pt",
            f_optimizer="optimizer-{last_epoch[epoch]:06d}.pt", f_criterion=None,
            f_history="history-{last_epoch[epoch]:06d}.json", f_pickle=None, dirname=_expand(dirname),
            sink=sink, **extra,
        )

    def artefacts(self):
        """The artefacts this checkpoint writes, in writing order.

        Returns
        -------
        list of str
            ``"params"``, ``"optimizer"``, ``"embedding_optimizer"`` (if the net has one) and
            ``"history"``.
        """
        names = ["params", "optimizer"] + (["embedding_optimizer"] if self.embedding_optimizer else [])
        return names + ["history"]

    @staticmethod
    def file_name(artefact, epochs):
        """File name of an artefact in the generation of ``epochs`` epochs.

        Parameters
        ----------
        artefact : str
            One of :meth:`artefacts`.
        epochs : int
            Epochs in the saved history.

        Returns
        -------
        str
            E.g. ``"params-000003.pt"``.
        """
        return f"{artefact}-{int(epochs):06d}{_EXTENSIONS[artefact]}"

    def save_model(self, net):
        """Write the net's state as a new generation, then the manifest, then delete older files.

        Parameters
        ----------
        net : skorch.NeuralNet
            The net being trained (initialised, at the end of an epoch).

        Raises
        ------
        OSError
            If a file cannot be written; the manifest then still names the previous generation.  If
            this process holds the folder's lock (:func:`checkpoint_lock`) and the folder or its
            lock file is gone or is another one (removed or replaced during the fit): nothing is
            written.
        """
        folder = self.dirname
        epochs = len(net.history)
        artefacts = {}
        held = _HELD.get(os.path.abspath(folder))
        if held is None:
            os.makedirs(folder, exist_ok=True)  # used without the lock: create the folder as needed
        else:
            _check_still_held(folder, held, epochs)
        try:
            for artefact in self.artefacts():
                name = self.file_name(artefact, epochs)
                digest = _write_atomically(
                    folder, name, lambda path, key=f"f_{artefact}": net.save_params(**{key: path})
                )
                artefacts[artefact] = {"file": name, "sha256": digest}
            manifest = {
                "format": FORMAT, "version": VERSION, "epochs": epochs,
                "settings": None if self.settings is None else json.loads(_canonical(self.settings)),
                "artefacts": artefacts,
            }
            content = json.dumps(manifest, indent=1).encode("utf-8")

            def write_manifest(path):
                with open(path, "wb") as f:
                    f.write(content)

            _write_atomically(folder, MANIFEST, write_manifest)
        except OSError as exc:
            if held is not None:
                _check_still_held(folder, held, epochs)  # removed or replaced while writing
            elif not os.path.isdir(folder):
                raise _replaced(folder, epochs, "it is no longer a folder", exc.errno) from exc
            raise OSError(
                exc.errno, f"checkpoint_dir={folder!r}: writing the checkpoint of epoch {epochs} failed "
                f"({exc}); the folder still holds the last complete checkpoint, which a later fit resumes"
            ) from exc
        keep = {entry["file"] for entry in artefacts.values()}
        for name in os.listdir(folder):
            if (_GENERATION_FILE.match(name) and name not in keep) or _TEMPORARY_FILE.match(name):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))


def _replaced(folder, epochs, what, code=errno.ENOENT):
    return OSError(
        code, f"checkpoint_dir={folder!r} was removed or replaced during the fit ({what}): the checkpoint of "
        f"epoch {epochs} is not written, and this fit no longer holds the folder's lock; start the fit again"
    )


def _check_still_held(folder, held, epochs):
    """Raise OSError unless ``folder`` and its lock file are the ones locked (device and inode)."""
    folder_id, lock_id = held
    if not os.path.lexists(folder):
        raise _replaced(folder, epochs, "it no longer exists")
    if not os.path.isdir(folder):
        raise _replaced(folder, epochs, "it is no longer a folder", errno.ENOTDIR)
    try:
        same_folder = _identity(folder) == folder_id
        same_lock = _identity(os.path.join(folder, LOCK)) == lock_id
    except FileNotFoundError:
        same_folder = same_lock = False
    if not same_folder:
        raise _replaced(folder, epochs, "it is another folder than the one locked", errno.ESTALE)
    if not same_lock:
        raise _replaced(folder, epochs, f"its {LOCK} was removed or replaced", errno.ESTALE)


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
        raise _refuse(folder, f"holds a {MANIFEST} that cannot be read ({exc})") from None
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise _refuse(folder, f"holds a {MANIFEST} larger than {_MAX_MANIFEST_BYTES // 2**20} MiB: not "
                              "a checkpoint written by sk_htlnet")
    try:
        manifest = json.loads(raw.decode("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        settings = manifest.get("settings")
        if settings is not None:
            _canonical(settings)  # a settings value too deeply nested to compare is damaged too
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _refuse(folder, f"holds a {MANIFEST} that is not a valid manifest ({type(exc).__name__}: "
                              f"{_short(str(exc), 120)}): the file is damaged") from None

    def malformed(what):
        return _refuse(folder, f"holds a {MANIFEST} with {what}: the file is damaged or not an "
                               "sk_htlnet checkpoint")

    version = manifest.get("version")
    if manifest.get("format") != FORMAT or type(version) is not int or version != VERSION:  # not True
        raise _refuse(folder, f"holds a {MANIFEST} of format {_short(manifest.get('format'))} version "
                              f"{_short(manifest.get('version'))}, not {FORMAT!r} version {VERSION}: "
                              "written by another program or another version of sk_htlnet")
    epochs = manifest.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise malformed(f"an invalid epoch count {_short(epochs)}")
    if settings is not None and not isinstance(settings, dict):
        raise malformed(f"invalid settings {_short(settings)}")
    listed = manifest.get("artefacts")
    if not isinstance(listed, dict):
        raise malformed(f"an invalid list of files {_short(listed)}")
    unknown = sorted(set(listed) - set(_EXTENSIONS))
    if unknown:
        raise malformed(f"unknown artefacts {_short(unknown)}")
    missing = [a for a in _REQUIRED if a not in listed]
    if missing:
        raise malformed(f"no entry for {missing}")
    artefacts = {}
    for artefact, entry in listed.items():
        name = entry.get("file") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not (isinstance(name, str) and _PLAIN_NAME.match(name) and ".." not in name
                and os.path.basename(name) == name):
            raise malformed(f"a file name {_short(name)} for {artefact!r} that is not a plain name in the folder")
        if not (isinstance(digest, str) and _SHA256.match(digest)):
            raise malformed(f"an invalid SHA-256 digest {_short(digest)} for {artefact!r}")
        artefacts[artefact] = (name, digest)
    if len({name for name, _ in artefacts.values()}) != len(artefacts):
        raise malformed("the same file listed twice")
    return {"epochs": epochs, "settings": settings, "artefacts": artefacts}


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
        elif a is absent or b is absent or _canonical(a) != _canonical(b):
            shown = ["absent" if v is absent else _short(v) for v in (a, b)]
            found.append(f"{path or 'settings'} (checkpoint {shown[0]}, this fit {shown[1]})")

    walk(saved, current, "", 0)
    return found


def _fit_differences(saved, current):
    """What differs between two fingerprints, causes first: the parameters (``params.NAME``), then
    the training data, then (only when those are equal) the net's settings derived from them."""
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
    if _canonical(a) != _canonical(b):
        def digest(d):
            return str(d.get("sha256"))[:12] + "..." if isinstance(d, dict) else _short(d)

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


def _same_state(a, b):
    """Whether two state dicts (nested dicts, lists and tensors) hold equal values: tensors of the
    same dtype, shape and values (compared on the CPU), other values by equality."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        a, b = a.detach().cpu(), b.detach().cpu()
        if a.is_sparse or b.is_sparse:
            a, b = a.to_dense(), b.to_dense()
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return False


def _optimiser_part(state):
    """The part of an optimiser's state dict that loading must reproduce exactly: the per-parameter
    state and which parameters each group holds (a group's hyper-parameters are set anew)."""
    return {"state": state.get("state"), "params": [g.get("params") for g in state.get("param_groups", [])]}


class VerifiedLoadInitState(LoadInitState):
    """skorch's ``LoadInitState`` that resumes from an :class:`AtomicCheckpoint` folder, or refuses.

    Consulted once per net (skorch's ``did_load_``, reset by ``initialize``;
    :func:`~sk_htlnet.io.load_model` sets it, so that a loaded model keeps its own weights).  When
    training begins it reads the folder's manifest (:func:`read_manifest`); without one it refuses
    if the folder holds files of an epoch after the first (a lost manifest), and otherwise does
    nothing (nothing, or only a first epoch's files, which a fit killed in its first epoch leaves: no
    complete checkpoint, training starts afresh).  Otherwise it checks, in order, that
    the checkpoint has the files this net needs (the embedding optimiser's state exactly when the
    net has ``embedding_optimizer_``), that its settings equal the checkpoint callback's
    ``settings``, that every file exists and matches its SHA-256 digest, and only then parses the
    files (``torch.load`` with ``weights_only=True``), loads them with skorch's ``net.load_params``
    and checks that the net's module and optimiser state equal the tensors of the files and its
    history has the manifest's number of epochs.  Then it applies the net's current ``lr`` (and the
    main optimiser's ``optimizer__weight_decay``) to the restored optimisers, whose state would
    bring back the old values.

    Parameters
    ----------
    checkpoint : AtomicCheckpoint
        The callback that writes the folder.

    Raises
    ------
    CheckpointError
        From training, if the folder holds a checkpoint that fails any of these checks, files of
        an epoch after the first without a manifest, or files of the unverified ``params.pt``
        layout without a manifest; the message names ``checkpoint_dir`` and what to do.
    """

    def __init__(self, checkpoint):
        super().__init__(checkpoint)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        """Resume from the checkpoint folder once per net, or refuse (see the class description).

        Parameters
        ----------
        net : skorch.NeuralNet
            The initialised net about to train.
        X, y : object, default=None
            The training data skorch passes to callbacks (unused).
        **kwargs : dict
            Further callback arguments (unused).

        Raises
        ------
        CheckpointError
            If the folder holds a checkpoint that cannot be resumed.
        """
        if self.did_load_:
            return
        self.did_load_ = True
        folder = str(self.checkpoint.dirname)
        manifest = read_manifest(folder)
        if manifest is None:
            legacy = [name for name in _LEGACY_FILES if os.path.exists(os.path.join(folder, name))]
            if legacy:
                raise _refuse(folder, f"holds {legacy} without a {MANIFEST}: a checkpoint of an earlier "
                                      "layout, which cannot be verified")
            orphans = _later_generation_files(folder)
            if orphans:
                epochs = max(epoch for _, epoch in orphans)
                names = sorted(name for name, epoch in orphans if epoch == epochs)
                raise _refuse(folder, f"holds files of epoch {epochs} ({', '.join(names)}) but no {MANIFEST}: "
                                      "the manifest of a checkpoint was deleted or lost (a fit writes it "
                                      "after every epoch), so the files cannot be verified or resumed")
            return  # nothing, or only first-epoch files (a fit killed in its first epoch): start afresh
        self._check_contents(net, folder, manifest)
        blobs = self._verified_files(folder, manifest)
        self._load(net, folder, manifest, blobs)
        for name in ("optimizer_", "embedding_optimizer_"):
            for group in getattr(getattr(net, name, None), "param_groups", []):
                group["lr"] = net.lr
                if "weight_decay" in group and name == "optimizer_":
                    group["weight_decay"] = getattr(net, "optimizer__weight_decay", 0.0)

    def _check_contents(self, net, folder, manifest):
        """The list of files and the settings, before any file is read."""
        listed = set(manifest["artefacts"])
        has_tables_optimiser = getattr(net, "embedding_optimizer_", None) is not None
        if has_tables_optimiser and "embedding_optimizer" not in listed:
            raise _refuse(folder, "holds a checkpoint written with sparse_updates=False (it has no state of "
                                  "the embedding tables' SparseAdam optimiser), but this fit has "
                                  "sparse_updates=True", "Fit with sparse_updates=False to resume it, "
                                                         "or remove the folder or pass another checkpoint_dir.")
        if not has_tables_optimiser and "embedding_optimizer" in listed:
            raise _refuse(folder, "holds a checkpoint written with sparse_updates=True (with a separate "
                                  "optimiser state of the embedding tables), but this fit has "
                                  "sparse_updates=False", "Fit with sparse_updates=True to resume it, "
                                                          "or remove the folder or pass another checkpoint_dir.")
        settings = getattr(self.checkpoint, "settings", None)
        if settings is None:
            return
        current = json.loads(_canonical(settings))
        saved = manifest["settings"]
        if saved is None or _canonical(saved) != _canonical(current):
            raise _refuse(folder, f"holds a checkpoint of another model or other data: "
                                  f"{_fit_differences(saved, current)}. A checkpoint resumes only the fit that "
                                  "wrote it (the same data and parameters)")

    def _verified_files(self, folder, manifest):
        """The bytes of every listed file, each checked against its digest."""
        blobs = {}
        for artefact, (name, digest) in manifest["artefacts"].items():
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    content = f.read()
            except FileNotFoundError:
                raise _refuse(folder, f"lacks {name}, which its {MANIFEST} lists for epoch "
                                      f"{manifest['epochs']} (the file was deleted or moved)") from None
            except OSError as exc:
                raise _refuse(folder, f"holds {name}, which cannot be read ({exc})") from None
            if hashlib.sha256(content).hexdigest() != digest:
                raise _refuse(folder, f"holds {name}, which does not match its SHA-256 digest in "
                                      f"{MANIFEST}: the file is damaged or was altered")
            blobs[artefact] = content
        return blobs

    def _load(self, net, folder, manifest, blobs):
        """Load the verified bytes with skorch, then check the net against the files."""
        modules = {"params": "module_", "optimizer": "optimizer_", "embedding_optimizer": "embedding_optimizer_"}
        try:
            saved = {a: torch.load(io.BytesIO(blobs[a]), map_location="cpu", weights_only=True)
                     for a in modules if a in blobs}
            net.load_params(**{f"f_{a}": io.BytesIO(content) for a, content in blobs.items()})
        except Exception as exc:  # torch's unpickling and size-mismatch errors, skorch's, JSON's
            detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:300]
            raise _refuse(folder, f"holds a checkpoint that cannot be loaded into this model "
                                  f"({type(exc).__name__}: {detail})") from None
        if len(net.history) != manifest["epochs"]:
            raise _refuse(folder, f"holds a history of {len(net.history)} epochs, but its {MANIFEST} "
                                  f"says {manifest['epochs']}: the files do not belong together")
        for artefact, attribute in modules.items():
            if artefact not in saved:
                continue
            now = getattr(net, attribute).state_dict()
            same = _same_state(now, saved[artefact]) if artefact == "params" else \
                _same_state(_optimiser_part(now), _optimiser_part(saved[artefact]))
            if not same:
                raise _refuse(folder, f"holds {manifest['artefacts'][artefact][0]}, but the state loaded into "
                                      f"the net's {attribute} differs from it: the checkpoint did not resume")


def _later_generation_files(folder):
    """``(name, epoch)`` of the generation files of epochs after the first in ``folder``."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = [(name, int(m.group(2))) for name in names for m in [_GENERATION_FILE.match(name)] if m]
    return [(name, epoch) for name, epoch in found if epoch >= 2]


def checkpoint_folder(net):
    """The folder of a net's :class:`AtomicCheckpoint` callback.

    Parameters
    ----------
    net : skorch.NeuralNet
        A net, initialised or not.

    Returns
    -------
    str or None
        The ``dirname`` of the first :class:`AtomicCheckpoint` among ``net.callbacks``, or None.
    """
    for item in list(net.callbacks or []):
        callback = item[1] if isinstance(item, tuple) and len(item) == 2 else item
        if isinstance(callback, AtomicCheckpoint):
            return str(callback.dirname)
    return None


def _pin(folder, path):
    """The identities of a locked folder and its lock file, and descriptors held open on them, so
    that neither inode can be reused by a file created after they are removed (where the platform
    can open a folder; else the identities alone)."""
    pins = []
    try:
        for target in (folder, path):
            with contextlib.suppress(OSError):
                pins.append(os.open(target, os.O_RDONLY))
        held = (_identity(folder), _identity(path))
        if len(pins) == 2:  # the inodes of the open files, had either been replaced since
            held = tuple((st.st_dev, st.st_ino) for st in map(os.fstat, pins))
        return held, pins
    except BaseException:
        for fd in pins:
            os.close(fd)
        raise


@contextlib.contextmanager
def checkpoint_lock(folder):
    """Hold the lock of a checkpoint folder, or refuse at once if another holder has it.

    The lock is an OS file lock (``flock`` on POSIX, through the ``filelock`` package) on
    ``folder/checkpoint.lock``: it excludes other processes and other lock objects of the same
    process, and the operating system releases it when the holder exits or is killed.  The lock
    file itself stays in the folder.  While it is held, the identities (device, inode) of the folder
    and the lock file are recorded, so that :class:`AtomicCheckpoint` can refuse to write into a
    folder removed or replaced since.

    Parameters
    ----------
    folder : str, path-like or None
        The checkpoint folder (created if missing; ``~`` expanded); None locks nothing.

    Yields
    ------
    None

    Raises
    ------
    CheckpointError
        If another fit holds the lock (``checkpoint_dir='...' is in use by another fit``), or the
        folder cannot be created or locked.
    """
    if folder is None:
        yield
        return
    folder = _expand(folder)
    path = os.path.join(folder, LOCK)
    lock = FileLock(path, timeout=0)
    try:
        os.makedirs(folder, exist_ok=True)
        lock.acquire()
        try:
            held, pins = _pin(folder, path)
        except OSError:
            lock.release()
            raise
    except Timeout:
        raise CheckpointError(
            f"checkpoint_dir={folder!r} is in use by another fit (lock {path!r}): wait for it to end, or "
            "pass another checkpoint_dir"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint_dir={folder!r} cannot be locked for writing ({exc})") from None
    key = os.path.abspath(folder)
    with _HELD_GUARD:
        _HELD[key] = held
    try:
        yield
    finally:
        with _HELD_GUARD:
            if _HELD.get(key) == held:
                del _HELD[key]
        for fd in pins:
            os.close(fd)
        with contextlib.suppress(OSError):  # a lock file removed with its folder
            lock.release()
