"""The skorch callback that writes a checkpoint after every epoch: :class:`AtomicCheckpoint`.

Each epoch becomes a new generation of files written atomically, then the manifest that names it,
then the older generations are deleted (:mod:`sk_htlnet.checkpoint.files`); where this process
holds the folder's lock (:mod:`sk_htlnet.checkpoint.lock`) the folder is first checked to be the
one locked.  :func:`checkpoint_folder` finds a net's checkpoint folder.
"""

import contextlib
import os

from skorch.callbacks import Checkpoint
from skorch.utils import noop

from .files import EXTENSIONS, GENERATION_FILE, TEMPORARY_FILE, expand, write_atomically, write_manifest
from .lock import check_still_held, folder_replaced, held_lock

__all__ = ["AtomicCheckpoint", "checkpoint_folder"]


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
            f_history="history-{last_epoch[epoch]:06d}.json", f_pickle=None, dirname=expand(dirname),
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
        return f"{artefact}-{int(epochs):06d}{EXTENSIONS[artefact]}"

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
        held = held_lock(folder)
        if held is None:
            os.makedirs(folder, exist_ok=True)  # used without the lock: create the folder as needed
        else:
            check_still_held(folder, held, epochs)
        try:
            for artefact in self.artefacts():
                name = self.file_name(artefact, epochs)
                digest = write_atomically(
                    folder, name, lambda path, key=f"f_{artefact}": net.save_params(**{key: path})
                )
                artefacts[artefact] = {"file": name, "sha256": digest}
            write_manifest(folder, epochs, self.settings, artefacts)
        except OSError as exc:
            if held is not None:
                check_still_held(folder, held, epochs)  # removed or replaced while writing
            elif not os.path.isdir(folder):
                raise folder_replaced(folder, epochs, "it is no longer a folder", exc.errno) from exc
            raise OSError(
                exc.errno, f"checkpoint_dir={folder!r}: writing the checkpoint of epoch {epochs} failed "
                f"({exc}); the folder still holds the last complete checkpoint, which a later fit resumes"
            ) from exc
        keep = {entry["file"] for entry in artefacts.values()}
        for name in os.listdir(folder):
            if (GENERATION_FILE.match(name) and name not in keep) or TEMPORARY_FILE.match(name):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))


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
