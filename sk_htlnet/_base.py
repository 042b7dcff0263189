"""The fitting of :class:`~sk_htlnet.HTLNetRegressor`: ``fit`` and ``partial_fit`` as named steps
(check the set-up, encode X, parse y, fit the core transform, assemble the net, train it, check it
is alive, fit the retransformation) over the rooms that hold their mechanics: :mod:`._checks`,
:mod:`._assembly`, :mod:`._prediction`, :mod:`._state`, :mod:`.targets`, :mod:`.core_transform`
and :mod:`.net`."""

import contextlib
import warnings

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight

from ._assembly import _NetAssembly
from ._checks import _Checks
from ._distributed_fit import _DistributedFit
from ._prediction import _Prediction
from ._state import _State
from ._stats import weighted_nanmean
from .checkpoint import checkpoint_folder, checkpoint_lock
from .core_losses import core_loss as core_loss_family
from .core_losses import core_mean
from .core_transform import CoreTransform
from .data import INPUT_KEYS, FunnelDataset, resolve_batch_size
from .distributed import SINGLE
from .divergence import TrainingDivergedError, dead_network_error, find_monitor
from .preprocessing import FeatureEncoder, user_stacklevel
from .targets import check_targets, resolve_core_loss, resolve_target_transform

_CALIBRATION_ROWS = 200_000  # training rows the retransformation is fitted on, at most
_ALIVE_ROWS = 10_000  # training rows the dead-network check forwards when the retransformation does not


class BaseHTLNet(_NetAssembly, _DistributedFit, _Checks, _Prediction, _State, MultiOutputMixin, RegressorMixin, BaseEstimator):
    """The fitting machinery of :class:`~sk_htlnet.HTLNetRegressor`, which adds the parameters."""

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model on features X and hybrid targets y.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Numeric, bool, category, string or object columns; NaN marks a missing numeric value.
        y : array-like or DataFrame of shape (n_samples, k + 1), or (n_samples,)
            k binary stages in funnel order (0, 1, or NaN for a missing label), then the continuous
            core target (NaN = missing).  A 1-D y is plain regression (k = 0).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights: every task's loss is a weighted mean over its observed labels
            (weights of 1 give the same model as no weights).  Also weights the head priors, the
            validation loss and the smearing factor.

        Returns
        -------
        self : HTLNetRegressor

        Raises
        ------
        ValueError
            If X and y differ in length, a stage holds values other than 0/1/NaN or a single class,
            the core target is infinite or never observed, or a parameter is invalid; or if
            ``checkpoint_dir`` holds a checkpoint that cannot be resumed, or is in use by another
            fit (:class:`sk_htlnet.checkpoint.CheckpointError`).
        OSError
            If a checkpoint cannot be written to ``checkpoint_dir`` (the folder keeps the last
            complete epoch), or the folder was removed or replaced during the fit.
        sk_htlnet.TrainingDivergedError
            If training diverges (also in ``partial_fit``): a task's batch loss becomes NaN or
            infinite, at the end of an epoch a task's epoch training loss is more than 10
            times as far above the loss's lower bound as the loss of predicting the base rates on
            the same batches, or, at the end of training, every head's output is constant across
            training rows whose inputs differ (``reason="dead"``: the network's units died; a fresh
            fit is then left unfitted) (:mod:`sk_htlnet.divergence`).  The message names the task, the epoch and a lower
            ``learning_rate`` to try.  The estimator is then left fitted on its best weights before
            the divergence (early stopping's best epoch, else the epoch with the lowest
            ``train_loss``, or for a continued fit the weights it started from), with the error's
            ``best_epoch`` saying which and ``history_`` holding every epoch run; a fresh fit whose
            first epoch diverged leaves it unfitted (``best_epoch`` is None).
        """
        with self._threads():
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight=None, incremental=False):
        """The steps of ``fit`` (``incremental``: one epoch of ``partial_fit``)."""
        if y is None:
            raise ValueError("HTLNetRegressor requires y to be passed, but the target y is None")
        self._check_setup()
        fitted = hasattr(self, "net_")
        keep = fitted and (self.warm_start or incremental)  # continue the fitted network
        group = self._join_group(keep or incremental)
        if keep:
            self._warn_changed_params()
            epochs_before = len(self.net_.history)
        reference = None
        if group.active:  # each rank holds a shard (sk_htlnet._distributed_fit)
            X, encoder, inputs, values, names, was_1d, sample_weight, reference = self._distributed_inputs(
                X, y, sample_weight, group)
        else:
            X, encoder, inputs = self._encode_features(X, keep)
            values, names, was_1d = check_targets(y, inputs["cat"].shape[0], incremental=keep)
            if keep and names != self.target_names_:
                raise ValueError(f"y has targets {names}, but the model was fitted on {self.target_names_}")
            sample_weight = self._normalised_weights(sample_weight, X, values, names)
        if not keep:
            if fitted:  # a failed refit must not leave the old net beside the new encoding
                del self.net_
            self.feature_encoder_, self.target_names_, self._y_1d = encoder, names, was_1d
            self.n_stages_ = len(names) - 1
        if reference is None:
            y_model = self._fit_core_transform(values, names, sample_weight, keep)
            spec_y, spec_weight = y_model, sample_weight
        else:  # fitted on the ranks' reference sample, applied to this rank's rows
            spec_y, spec_weight = self._fit_core_transform(reference["values"], names, reference["weight"], keep), \
                reference["weight"]
            y_model = self._on_loss_scale(values)
        dataset = FunnelDataset(
            inputs["cat"], inputs["num"], inputs["num_missing"], y_model.astype(np.float32), sample_weight
        )
        net = self.net_ if keep else self._build_net(dataset, spec_y, values, names, spec_weight, incremental, group)
        core = values[:, -1].copy()  # for the retransformation; the float64 targets are freed before training
        del values, y_model
        diverged = self._train(net, dataset, keep, incremental)
        self.net_ = net
        if not keep:
            self._built_with = self._params_in_net()
        self.history_ = self.net_.history
        # epochs trained in all: a model from load_model has an empty history but n_iter_ epochs behind it
        self.n_iter_ = (self.n_iter_ - epochs_before if keep else 0) + len(self.history_)
        self._check_and_calibrate(dataset, inputs, core, sample_weight, keep, check=diverged is None, group=group)
        if diverged is not None:
            raise diverged
        return self

    def _encode_features(self, X, keep):
        """(checked X, encoder, encoded inputs): a fresh fit fits a new FeatureEncoder."""
        X = self._validate_X(X, reset=not keep)
        if keep:
            return X, self.feature_encoder_, self.feature_encoder_.transform(X)
        encoder = FeatureEncoder(self.categorical_features, self.numeric_encoding, self.n_bins)
        return X, encoder, encoder.fit_transform(X)

    @staticmethod
    def _normalised_weights(sample_weight, X, values, names):
        """Checked row weights brought to a mean of 1 over the positive ones (float64), or None."""
        if sample_weight is None:
            return None
        sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
        if not (sample_weight[~np.isnan(values[:, -1])] > 0).any():
            raise ValueError(
                f"no row with an observed core target ({names[-1]!r}) has a positive sample_weight"
            )
        # every loss, prior and calibration is a weighted mean: free of the weights' scale, so
        # they are brought to a mean of 1 (weights of 1e39 would overflow the float32 batches)
        sample_weight = sample_weight / sample_weight.max()
        sample_weight /= sample_weight[sample_weight > 0].mean()
        return sample_weight

    def _fit_core_transform(self, values, names, sample_weight, keep):
        """Resolve the core loss and transform and fit ``core_transform_`` (a fresh fit; a later
        chunk only widens its clipping range); returns the targets with the core on the loss's
        scale, float64 (n, k + 1)."""
        k = values.shape[1] - 1
        if not keep:
            self.core_loss_ = resolve_core_loss(self.core_loss, self.target_transform, self.retransformation,
                                                values[:, k])
            self.target_transform_ = transform = self._resolve_target_transform(values[:, k], names[k])
            likelihood = core_loss_family(self.core_loss_).likelihood
            self.core_transform_ = CoreTransform(
                transform, self.retransformation, calibrate=likelihood
            ).fit(values[:, k])
            if likelihood:  # condition the likelihood: amounts in units of their mean
                self.core_transform_.std = weighted_nanmean(values[:, k], sample_weight) or 1.0
        else:  # a later chunk: the same checks of the core against the loss; widen the clipping range
            self._resolve_target_transform(values[:, k], names[k])
            self.core_transform_.update(values[:, k])
        return self._on_loss_scale(values)

    def _on_loss_scale(self, values):
        """The targets, float64 (n, k + 1), with the core put on the scale the loss sees by the
        fitted ``core_transform_``."""
        y_model = values.copy()
        y_model[:, -1] = self.core_transform_.forward(values[:, -1])
        return y_model

    def _build_net(self, dataset, y_model, values, names, sample_weight, incremental, group=SINGLE):
        """A fresh fit's net: its spec from the data (``y_model`` and ``sample_weight``: the
        reference sample of a distributed fit), early stopping's split checked, the checkpoint's
        fingerprint of this fit (:mod:`._assembly`).  Row counts are over every rank's rows."""
        n_rows = int(group.total(len(dataset)))
        seed = group.broadcast_object(int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)))
        self._net_spec_ = self._net_spec(y_model, sample_weight)
        early = self.early_stopping if self.early_stopping != "auto" else n_rows > 10_000
        n_train = n_rows
        if early and not incremental:
            n_valid = int(np.ceil(self.validation_fraction * n_rows))
            if n_valid < 1 or n_rows - n_valid < 2:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} holds out {n_valid} of {n_rows} rows "
                    f"for early stopping, leaving {n_rows - n_valid} to train on (at least 2 are needed); "
                    "use a smaller validation_fraction or early_stopping=False"
                )
            n_train = n_rows - n_valid
        # "auto" resolved once, on the rows of the first fit (or first partial_fit chunk), and kept
        self._net_spec_["batch_size"] = resolve_batch_size(self.batch_size, n_train)
        self.batch_size_ = self._net_spec_["batch_size"]
        fingerprint = None if self.checkpoint_dir is None else self._checkpoint_fingerprint(
            self._net_spec_, dataset, self.feature_encoder_, values, names, seed)
        return self._make_net(self._net_spec_, seed, early=early and not incremental,
                              checkpoint_settings=fingerprint, group=group)

    def _train(self, net, dataset, keep, incremental):
        """Train ``net`` under the checkpoint folder's lock; returns the TrainingDivergedError of a
        divergence after which the net holds its best weights again (finished, then raised), or None.
        A fresh fit whose first epoch diverged raises at once (left unfitted)."""
        monitor = find_monitor(net)
        if monitor is not None:
            monitor.resumed = keep  # a continued fit falls back on the weights it starts from
        with checkpoint_lock(checkpoint_folder(net)):  # a second fit on the same checkpoint_dir is refused
            try:
                if incremental:
                    net.partial_fit(dataset, None, epochs=1)
                elif keep:
                    net.partial_fit(dataset, None, epochs=self.max_iter)
                else:
                    net.fit(dataset, None)
            except TrainingDivergedError as exc:
                if exc.best_epoch is None:
                    raise  # a fresh fit's first epoch diverged: left unfitted (self.net_ is not set)
                return exc
        return None

    def _check_and_calibrate(self, dataset, inputs, core, sample_weight, keep, check, group=SINGLE):
        """The network's output on a seeded sample of training rows serves the retransformation (at
        most _CALIBRATION_ROWS) and, with ``check``, the dead-network check (at most _ALIVE_ROWS
        when it is alone); in a distributed fit, a sample of every rank's rows, the same on each."""
        n_rows, k = len(dataset), self.n_stages_
        calibrate = self.core_transform_.fitted_on_predictions
        if group.active and (calibrate or check):
            inputs, raw, core, sample_weight, checked = self._distributed_calibration_sample(
                dataset, inputs, core, sample_weight, group, _CALIBRATION_ROWS if calibrate else _ALIVE_ROWS)
            rows = np.arange(len(checked))
        elif calibrate or check:
            rows = self._sample_rows(n_rows, _CALIBRATION_ROWS if calibrate else _ALIVE_ROWS)
            checked = dataset if len(rows) == n_rows else dataset.subset(rows)
            raw = self._forward(checked)
            core = core[rows]
            sample_weight = None if sample_weight is None else sample_weight[rows]
        if check:
            self._check_alive(inputs, keep, rows, raw, checked)
        if calibrate:
            self.core_transform_.fit_retransformation(core, core_mean(raw[:, k:], self.core_loss_), sample_weight)
        else:
            self.core_transform_.fit_retransformation(None, None)

    def _sample_rows(self, n_rows, cap):
        """Sorted positions of at most ``cap`` of the ``n_rows`` training rows, drawn with the net's
        seed (every row when there are no more)."""
        if n_rows <= cap:
            return np.arange(n_rows)
        return np.sort(np.random.default_rng(self.net_.seed).choice(n_rows, cap, replace=False))

    def _check_alive(self, inputs, keep, rows, raw, dataset):
        """Raise :class:`TrainingDivergedError` (``reason="dead"``) when the output of every head,
        ``raw`` on the training ``rows`` (``dataset``), is constant across rows whose encoded
        ``inputs`` differ although it was not at initialisation.  A fresh fit is left unfitted
        (``net_`` removed); a continued one keeps the network (sk_htlnet.divergence).  A network
        constant from its initialisation on gets a ConvergenceWarning instead."""
        features = [np.asarray(inputs[key])[rows] for key in INPUT_KEYS if key in inputs]
        error = dead_network_error(self.net_, raw, self.n_stages_, features, fresh=not keep)
        if error is not None and dead_network_error(
            self.net_, self._forward(dataset, initial=True), self.n_stages_, features
        ) is not None:
            # constant already at initialisation: no ReLU unit is active on any row, so no gradient
            # ever reached them; an architecture too narrow for the data, not a diverged training
            warnings.warn(
                f"every head predicts one value whatever the input: with tower_units={self.tower_units!r} "
                f"and random_state={self.random_state!r} the network's output was the same on all {len(rows)} "
                "training rows checked already at initialisation (no ReLU unit active on them, so no gradient "
                "reaches them and training cannot change that). Use wider tower_units or another random_state.",
                ConvergenceWarning, stacklevel=user_stacklevel(),
            )
            return
        if error is not None:
            if not keep:
                del self.net_  # no model that predicts one value per target is returned as fitted
            raise error

    def partial_fit(self, X, y, sample_weight=None):
        """Train for one epoch on (X, y), starting from the current weights if fitted.

        The first call fixes the feature encoding (vocabularies, scalers) and the targets; later
        calls must use the same columns and targets, and categories unseen in the first call map to
        the out-of-vocabulary row.  No validation split or early stopping is used (as in
        scikit-learn's ``MLPRegressor.partial_fit``); a net built by ``fit`` with early stopping
        keeps its callback but it is not consulted here.

        Parameters
        ----------
        X, y, sample_weight
            As in :meth:`fit`.

        Returns
        -------
        self : HTLNetRegressor
        """
        if not hasattr(self, "net_"):
            self._validate_params()
        net = getattr(self, "net_", None)
        plain = contextlib.nullcontext() if net is None else net.without_validation()
        with self._threads(), plain:
            return self._fit(X, y, sample_weight, incremental=True)

    def _resolve_target_transform(self, core, name):
        """target_transform with "auto" resolved against ``core_loss_`` and the core (sk_htlnet.targets)."""
        return resolve_target_transform(self.target_transform, self.core_loss_, self.retransformation, core, name)
