"""Assembly of the skorch net from the estimator's parameters and the data: the net's spec (module
and criterion settings, JSON-able), the checkpoint's fingerprint of a fit, and the net with its
callbacks: a mixin of :class:`sk_htlnet._base.BaseHTLNet`."""

import numbers
import os
import re

import numpy as np
import torch
from skorch.callbacks import EarlyStopping

from ._stats import weighted_nanmean
from .checkpoint import AtomicCheckpoint, VerifiedLoadInitState, data_digest
from .core_losses import EPS_RATE
from .core_losses import core_loss as core_loss_family
from .data import FunnelValidSplit
from .distributed import SINGLE
from .divergence import DivergenceMonitor
from .gradient import get_strategy, resolve_rule
from .losses import HybridLoss
from .modules import ARCHITECTURES
from .net import HybridNet

# target_transform="none": the factor of the optimised core MSE on z is the core's variance up to this
# cap (Adam's second moments and the gradient rule's squared norms stay within float32); beyond it the
# stages' share of the shared embedding's gradient is already below float32's resolution (1e-12 of the
# core's), so the capped and the raw objective train alike.  The history reports the raw squared error.
_MAX_CORE_LOSS_SCALE = 1e12

# parameters a resumed checkpoint may change: the rest are in its fingerprint (checkpoint_fingerprint)
_RESUMABLE_PARAMS = ("max_iter", "n_threads", "verbose", "learning_rate", "weight_decay", "warm_start",
                     "checkpoint_dir", "callbacks", "device")


def _json_safe(value):
    """A parameter value as JSON data, equal for equal values: numbers, str, bool and None as they
    are (non-finite floats as text), arrays and tuples as lists, dicts with str keys, classes and
    functions by qualified name, anything else by repr without memory addresses."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else repr(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))



class _NetAssembly:
    """Builds the net of :class:`~sk_htlnet.HTLNetRegressor` (mixin)."""

    def param_settings(self):
        """The net's settings that follow from the parameters alone, for the fitted number of stages.

        The one definition of that part of the net spec: ``fit`` adds what comes from the data
        (vocabulary sizes, bin edges, priors, the core's scale), and a model file's settings are
        checked against it (:mod:`sk_htlnet.io`).

        Returns
        -------
        dict
            ``{"module": {...}, "criterion": {...}}`` of JSON values: the module's
            ``embedding_dim``, ``tower_units`` (list of int), ``dropout``, the HTLNet switches
            (``architecture="htlnet"``) or ``n_experts`` (MMoE; PLE has half as many
            task-specific as shared experts); the criterion's ``task_weights`` and ``pos_weight``
            (lists or None), ``uncertainty`` (the gradient strategy's ``uses_uncertainty``),
            ``core_loss`` (``core_loss_``) and ``tweedie_power``.

        Raises
        ------
        ValueError
            If ``tower_units``, ``task_weights`` or ``stage_pos_weight`` does not fit
            (:meth:`checked_sizes`).
        """
        units, weights, pos = self.checked_sizes()
        module = dict(embedding_dim=int(self.embedding_dim), tower_units=list(units), dropout=float(self.dropout))
        if self.architecture == "htlnet":
            module.update(
                label_embedding_dim=int(self.label_embedding_dim),
                fusion_dim=int(self.fusion_dim),
                fusion=self.fusion,
                label_sampling=self.label_sampling,
                tau=float(self.tau),
                label_embedding=bool(self.label_embedding),
                representation_transfer=bool(self.representation_transfer),
                stop_gradient=bool(self.stop_gradient),
            )
        elif self.architecture == "mmoe":
            module["n_experts"] = int(self.n_experts)
        elif self.architecture == "ple":
            module["n_experts"] = max(1, int(self.n_experts) // 2)
        criterion = dict(
            task_weights=None if weights is None else weights.tolist(),
            pos_weight=None if pos is None else pos.tolist(),
            uncertainty=get_strategy(self.gradient_adjustment).uses_uncertainty,
            core_loss=self.core_loss_,
            tweedie_power=float(self.tweedie_power),
        )
        return {"module": module, "criterion": criterion}

    def _net_spec(self, y_transformed, sample_weight=None):
        """Module and criterion settings: :meth:`param_settings` and what comes from the data
        (plain Python values, JSON-able)."""
        settings = self.param_settings()
        pos = settings["criterion"]["pos_weight"]
        k = self.n_stages_
        means = [weighted_nanmean(y_transformed[:, j], sample_weight) for j in range(k + 1)]
        rates = np.clip(np.asarray(means[:k]), EPS_RATE, 1 - EPS_RATE)
        # with a positive-class weight w the loss is minimised by log(w p / (1 - p))
        priors = np.log(rates / (1 - rates)) + (np.log(np.asarray(pos)) if pos is not None else 0.0)
        core = y_transformed[:, k]
        raw_scale = self.core_transform_.loss_scale  # "none": the squared error in the core's units
        loss_scale = min(raw_scale, _MAX_CORE_LOSS_SCALE)
        core_var = (weighted_nanmean((core - means[k]) ** 2, sample_weight) or 1.0) * loss_scale
        family = core_loss_family(self.core_loss_)
        core_prior = family.prior(core, sample_weight)
        if family.likelihood:
            core_var = 1.0  # likelihoods are already free of the target's units
        embedding = self.feature_encoder_.embedding_spec()
        from_params = settings["module"]
        module = dict(
            cardinalities=embedding["cardinalities"],
            n_numeric=embedding["n_numeric"],
            numeric_encoding=embedding["numeric_encoding"],
            numeric_edges=embedding["numeric_edges"],
            n_stages=k,
            embedding_dim=from_params["embedding_dim"],
            tower_units=from_params["tower_units"],
            dropout=from_params["dropout"],
            stage_logit_priors=[float(v) for v in np.atleast_1d(priors)] if k else [],
            core_prior=core_prior,
        )
        module.update({key: value for key, value in from_params.items() if key not in module})
        criterion = dict(
            n_stages=k,
            core_scale=float(core_var),
            core_loss_scale=float(loss_scale),
            core_report_scale=float(raw_scale / loss_scale),
            **settings["criterion"],
        )
        return {"architecture": self.architecture, "module": module, "criterion": criterion}

    def _checkpoint_fingerprint(self, spec, dataset, encoder, targets, target_names, seed):
        """What a checkpoint records of its fit, to resume only the same one: the net's spec, the
        parameters but those a resumed fit may change (``_RESUMABLE_PARAMS``; random_state as
        given, or the seed a RandomState drew), and a SHA-256 of the training data (the encoded
        tensors, the raw targets, the encoder's statistics, vocabularies and column labels)."""
        params = {k: _json_safe(v) for k, v in self.get_params(deep=False).items() if k not in _RESUMABLE_PARAMS}
        if not (self.random_state is None or isinstance(self.random_state, numbers.Integral)):
            params["random_state"] = f"{type(self.random_state).__name__} drawing seed {seed}"
        arrays = [("cat", dataset.cat), ("num", dataset.num), ("num_missing", dataset.num_missing),
                  ("y", dataset.y), ("sample_weight", dataset.sample_weight), ("targets", targets),
                  ("categorical_mask", encoder.categorical_mask_), ("mean", encoder.mean_),
                  ("scale", encoder.scale_), ("min", encoder.min_), ("max", encoder.max_)]
        arrays += [(f"bin_edges[{j}]", e) for j, e in enumerate(encoder.bin_edges_)]
        labels = [("columns", encoder.columns_), ("targets", list(target_names))]
        labels += [(f"vocabulary[{j}]", list(v)) for j, v in enumerate(encoder.vocabularies_)]
        data = {"sha256": data_digest(arrays, labels), "rows": len(dataset)}
        return {**spec, "params": params, "data": data}

    def _make_net(self, spec, seed, early, checkpoint_settings=None, group=SINGLE):
        """The skorch net for a spec from :meth:`_net_spec` (not yet initialised); its checkpoint
        (with ``checkpoint_dir``) records ``checkpoint_settings`` (:meth:`_checkpoint_fingerprint`),
        or the spec alone when None."""
        # first of all callbacks but skorch's defaults: a diverged epoch is caught before early
        # stopping, a checkpoint or the user's callbacks see it (sk_htlnet.divergence)
        priors = list(spec["module"]["stage_logit_priors"]) + list(np.atleast_1d(spec["module"]["core_prior"]))
        callbacks = [("divergence_monitor", DivergenceMonitor([float(v) for v in priors]))]
        if early:
            callbacks.append(
                ("early_stopping", EarlyStopping(
                    monitor="valid_loss", patience=self.n_iter_no_change, threshold=self.tol,
                    threshold_mode="abs", load_best=True, sink=self._sink,
                ))
            )
        if self.checkpoint_dir is not None:
            checkpoint = AtomicCheckpoint(
                os.path.expanduser(os.fspath(self.checkpoint_dir)),
                settings=spec if checkpoint_settings is None else checkpoint_settings,
                embedding_optimizer=bool(self.sparse_updates),
                sink=self._sink,
            )
            callbacks += [("checkpoint", checkpoint), ("resume", VerifiedLoadInitState(checkpoint))]
        callbacks += list(self.callbacks or [])
        k = spec["module"]["n_stages"]
        # "auto" resolved against the core's loss (sk_htlnet.gradient.resolve_rule)
        self.relax_factor_, self.clip_ratio_ = resolve_rule(
            self.relax_factor, self.clip_ratio, spec["criterion"]["core_loss_scale"],
            core_units=self.core_transform_.in_core_units)
        net = HybridNet(
            ARCHITECTURES[spec["architecture"]],
            **{f"module__{key}": value for key, value in spec["module"].items()},
            criterion=HybridLoss,
            **{f"criterion__{key}": value for key, value in spec["criterion"].items()},
            optimizer=torch.optim.Adam,
            optimizer__weight_decay=self.weight_decay,
            lr=self.learning_rate,
            batch_size=spec["batch_size"],
            max_epochs=self.max_iter,
            # each rank holds out its own validation rows; the validation loss is over all ranks'
            train_split=FunnelValidSplit(self.validation_fraction, k, seed + group.rank) if early else None,
            callbacks=callbacks or None,
            device=self.device,
            verbose=self.verbose if group.rank == 0 else 0,  # one epoch table, not one per rank
            task_names=self.target_names_,
            gradient_strategy=get_strategy(
                self.gradient_adjustment, relax_factor=self.relax_factor_, clip_ratio=self.clip_ratio_,
                project=self.gradient_projection, rescale=self.gradient_rescaling, seed=seed,
            ),
            seed=seed,
            sparse_updates=bool(self.sparse_updates),
            group=group if group.active else None,
        )
        if self.net_kwargs:
            try:
                net.set_params(**self.net_kwargs)
            except ValueError as exc:  # skorch's message lists every setting of the net
                unknown = [k for k in self.net_kwargs if f"Invalid parameter '{k.split('__')[0]}'" in str(exc)
                           or f"Invalid parameter '{k}'" in str(exc)]
                raise ValueError(f"net_kwargs sets {unknown or list(self.net_kwargs)}, which the skorch net "
                                 "(sk_htlnet.net.HybridNet) has no parameter of; see skorch.NeuralNet's "
                                 "parameters (double-underscore names such as optimizer__betas)") from None
        return net

    def _sink(self, msg):
        if self.verbose:
            print(msg)
