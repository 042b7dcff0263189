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

Its modules: ``files`` (file names, atomic writes, the manifest and :class:`CheckpointError`),
``fingerprint`` (:func:`data_digest` and the comparison of fingerprints), ``lock``
(:func:`checkpoint_lock`), ``writer`` (:class:`AtomicCheckpoint`) and ``resume``
(:class:`VerifiedLoadInitState`).
"""

from .files import FORMAT, MANIFEST, VERSION, CheckpointError, read_manifest  # noqa: F401 (constants kept here)
from .fingerprint import data_digest
from .lock import LOCK, checkpoint_lock  # noqa: F401 (LOCK kept here)
from .resume import VerifiedLoadInitState
from .writer import AtomicCheckpoint, checkpoint_folder

__all__ = [
    "AtomicCheckpoint", "CheckpointError", "VerifiedLoadInitState", "checkpoint_folder", "checkpoint_lock",
    "data_digest", "read_manifest",
]
