"""The skorch callback that resumes from a checkpoint folder, or refuses: :class:`VerifiedLoadInitState`.

When training begins it reads the folder's manifest as untrusted input
(:func:`~sk_htlnet.checkpoint.files.read_manifest`), checks the fit's fingerprint
(:mod:`sk_htlnet.checkpoint.fingerprint`), the list of files and their digests before anything is
unpickled, loads the files through skorch's ``net.load_params`` and checks that the net now holds
the tensors of the files.  Any failure refuses with :class:`CheckpointError`.
"""

import hashlib
import io
import json
import os
import warnings

import torch
from skorch.callbacks import LoadInitState

from ..preprocessing import user_stacklevel
from .files import LEGACY_FILES, MANIFEST, canonical, later_generation_files, read_manifest, refuse
from .fingerprint import fit_differences

__all__ = ["VerifiedLoadInitState"]


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
            legacy = [name for name in LEGACY_FILES if os.path.exists(os.path.join(folder, name))]
            if legacy:
                raise refuse(folder, f"holds {legacy} without a {MANIFEST}: a checkpoint of an earlier "
                                     "layout, which cannot be verified")
            orphans = later_generation_files(folder)
            if orphans:
                epochs = max(epoch for _, epoch in orphans)
                names = sorted(name for name, epoch in orphans if epoch == epochs)
                raise refuse(folder, f"holds files of epoch {epochs} ({', '.join(names)}) but no {MANIFEST}: "
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
        epochs, planned = len(net.history), getattr(net, "max_epochs", None)
        if isinstance(planned, int) and epochs >= planned:
            warnings.warn(
                f"checkpoint_dir={folder!r} holds a checkpoint of {epochs} epochs, and max_iter={planned}: no "
                f"epoch is run, and the fit returns the checkpoint's model (n_iter_={epochs}). Pass a larger "
                "max_iter to train on, or another checkpoint_dir for a fresh fit.",
                UserWarning, stacklevel=user_stacklevel(),
            )

    def _check_contents(self, net, folder, manifest):
        """The list of files and the settings, before any file is read."""
        listed = set(manifest["artefacts"])
        has_tables_optimiser = getattr(net, "embedding_optimizer_", None) is not None
        if has_tables_optimiser and "embedding_optimizer" not in listed:
            raise refuse(folder, "holds a checkpoint written with sparse_updates=False (it has no state of "
                                 "the embedding tables' SparseAdam optimiser), but this fit has "
                                 "sparse_updates=True", "Fit with sparse_updates=False to resume it, "
                                                        "or remove the folder or pass another checkpoint_dir.")
        if not has_tables_optimiser and "embedding_optimizer" in listed:
            raise refuse(folder, "holds a checkpoint written with sparse_updates=True (with a separate "
                                 "optimiser state of the embedding tables), but this fit has "
                                 "sparse_updates=False", "Fit with sparse_updates=True to resume it, "
                                                         "or remove the folder or pass another checkpoint_dir.")
        settings = getattr(self.checkpoint, "settings", None)
        if settings is None:
            return
        current = json.loads(canonical(settings))
        saved = manifest["settings"]
        if saved is None or canonical(saved) != canonical(current):
            raise refuse(folder, f"holds a checkpoint of another model or other data: "
                                 f"{fit_differences(saved, current)}. A checkpoint resumes only the fit that "
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
                raise refuse(folder, f"lacks {name}, which its {MANIFEST} lists for epoch "
                                     f"{manifest['epochs']} (the file was deleted or moved)") from None
            except OSError as exc:
                raise refuse(folder, f"holds {name}, which cannot be read ({exc})") from None
            if hashlib.sha256(content).hexdigest() != digest:
                raise refuse(folder, f"holds {name}, which does not match its SHA-256 digest in "
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
            raise refuse(folder, f"holds a checkpoint that cannot be loaded into this model "
                                 f"({type(exc).__name__}: {detail})") from None
        if len(net.history) != manifest["epochs"]:
            raise refuse(folder, f"holds a history of {len(net.history)} epochs, but its {MANIFEST} "
                                 f"says {manifest['epochs']}: the files do not belong together")
        for artefact, attribute in modules.items():
            if artefact not in saved:
                continue
            now = getattr(net, attribute).state_dict()
            same = _same_state(now, saved[artefact]) if artefact == "params" else \
                _same_state(_optimiser_part(now), _optimiser_part(saved[artefact]))
            if not same:
                raise refuse(folder, f"holds {manifest['artefacts'][artefact][0]}, but the state loaded into "
                                     f"the net's {attribute} differs from it: the checkpoint did not resume")

