"""Prediction: the network's raw outputs decoded into stage probabilities and the core target's
conditional mean in its units (``predict``, ``predict_frame``), ``score``, and the data set the
fitted network reads (``make_dataset``): a mixin of :class:`sk_htlnet._base.BaseHTLNet`."""

import numpy as np
import torch
import pandas as pd
from sklearn.metrics import r2_score
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from .core_losses import core_mean, ziln_parameters
from .data import FunnelDataset
from .distribution import ZeroInflatedLognormal, check_quantiles
from .targets import check_targets


class _Prediction:
    """``predict``, ``predict_frame``, ``score`` and ``make_dataset`` of
    :class:`~sk_htlnet.HTLNetRegressor` (mixin)."""

    def _fitted_targets(self, y, n_rows):
        """y checked as a later chunk of ``fit`` is (:func:`sk_htlnet.targets.check_targets`) and
        against the fitted targets: float64 (n_rows, k + 1).  A DataFrame's columns must be the
        fitted target names, in order."""
        return check_targets(y, n_rows, incremental=True, fitted=self.target_names_)[0]

    def _forward(self, dataset, initial=False):
        """The network's eval-mode output (rows, outputs) as float64; ``initial``: with the weights
        it was initialised with."""
        out = self.net_.forward_at_initialisation(dataset) if initial else self.net_.forward(dataset, training=False)
        return out.detach().cpu().numpy().astype(np.float64)

    @property
    def predict_ndim_(self):
        """1 when ``fit`` was given a 1-D y (``predict`` returns (n_samples,)), else 2 (int)."""
        check_is_fitted(self, "net_")
        return 1 if self._y_1d else 2

    def make_dataset(self, X, y=None, sample_weight=None):
        """The :class:`sk_htlnet.data.FunnelDataset` the fitted network reads.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Checked and encoded as in ``predict``.
        y : DataFrame or array-like of shape (n_samples, k + 1) or (n_samples,), default=None
            When given, checked as a later chunk of ``fit`` is (stages 0/1/NaN, a finite core; a
            DataFrame's columns are the fitted target names, in order); the core column is put on
            the scale the loss sees (``core_transform_``), as float32.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights, as float32; batches then carry them (``"sample_weight"``).

        Returns
        -------
        FunnelDataset
            Its tensors hold ``feature_encoder_.transform(X)``; ``net_.forward(dataset)`` gives the
            network's raw outputs (k stage logits, then the core head's outputs).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before ``fit``.
        ValueError
            If X or y do not match the fitted columns and targets, or a weight is negative.
        """
        check_is_fitted(self, "net_")
        inputs = self.feature_encoder_.transform(self._validate_X(X, reset=False))
        n_rows, targets = len(inputs["cat"]), None
        if y is not None:
            targets = self._fitted_targets(y, n_rows)
            targets[:, -1] = self.core_transform_.forward(targets[:, -1])  # the scale the loss sees
            targets = targets.astype(np.float32)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, inputs["cat"], dtype=np.float32,
                                                 ensure_non_negative=True)
        return FunnelDataset(inputs["cat"], inputs["num"], inputs["num_missing"], targets, sample_weight)

    def predict(self, X):
        """Predict every head.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Same columns (names and order) as in ``fit``.

        Returns
        -------
        ndarray of float64, shape (n_samples, k + 1), or (n_samples,) when y was 1-D
            Columns ``target_names_``: entire-space stage probabilities P(stage t = 1 | x) in [0, 1],
            then the conditional mean of the core target in y's units.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before ``fit``.
        ValueError
            If X's columns differ from those seen in ``fit``.
        FloatingPointError
            If a prediction is not finite (extreme inputs); predictions are never NaN silently.
        """
        check_is_fitted(self, "net_")
        inputs = self.feature_encoder_.transform(self._validate_X(X, reset=False))
        dataset = FunnelDataset(inputs["cat"], inputs["num"], inputs["num_missing"])
        with self._threads():
            raw = self._forward(dataset)
        k = self.n_stages_
        pred = np.empty_like(raw)
        pred[:, :k] = 1.0 / (1.0 + np.exp(-raw[:, :k]))
        pred = pred[:, : k + 1]
        pred[:, k] = self.core_transform_.inverse(core_mean(raw[:, k:], self.core_loss_))
        bad = ~np.isfinite(pred).all(axis=1)
        if bad.any():
            raise FloatingPointError(
                f"{int(bad.sum())} of {len(pred)} rows got a non-finite prediction (first: row "
                f"{int(np.argmax(bad))}); check them for extreme numeric values far outside the "
                "training range"
            )
        return pred[:, 0] if self._y_1d else pred

    def predict_distribution(self, X):
        """The core target's predictive distribution per row (``core_loss="ziln"`` only).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Same columns (names and order) as in ``fit``.

        Returns
        -------
        sk_htlnet.distribution.ZeroInflatedLognormal
            n_samples distributions of the core target in its units: an atom at 0 of mass
            ``1 - p`` and a lognormal of parameters ``mu``, ``sigma`` in units of the training
            mean (Wang et al., 2019, eq. 2-4), with ``quantile``, ``cdf`` and ``mean``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before ``fit``.
        ValueError
            If the core loss is not "ziln": "mse" estimates the conditional mean only, and
            "tweedie" the mean of a compound Poisson-gamma law whose dispersion is not fitted;
            neither has a distribution to give.  Or if X's columns differ from those seen in ``fit``.

        Notes
        -----
        The distribution is the head's as trained.  With ``retransformation="isotonic"`` (the
        default) ``predict``'s core column is an isotonic recalibration of its mean, which the
        quantiles do not share: the quantiles are calibrated (or not) as the head is, and the
        recalibrated mean is not the mean of these quantiles.
        """
        check_is_fitted(self, "net_")
        if self.core_loss_ != "ziln":
            raise ValueError(
                f"predict_distribution and predict_quantiles need core_loss='ziln' (a zero-inflated "
                f"lognormal of the core target); this model was fitted with core_loss={self.core_loss_!r}, "
                "which estimates the conditional mean only. Refit with core_loss='ziln'.")
        inputs = self.feature_encoder_.transform(self._validate_X(X, reset=False))
        dataset = FunnelDataset(inputs["cat"], inputs["num"], inputs["num_missing"])
        with self._threads():
            raw = self._forward(dataset)
        logit, mu, sigma = (t.numpy() for t in ziln_parameters(torch.as_tensor(raw[:, self.n_stages_:])))
        return ZeroInflatedLognormal(1.0 / (1.0 + np.exp(-logit)), mu, sigma, self.core_transform_.std)

    def predict_quantiles(self, X, quantiles):
        """Quantiles of the core target per row, in its units (``core_loss="ziln"`` only).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
        quantiles : float or array-like of shape (n_quantiles,)
            Levels in (0, 1).

        Returns
        -------
        ndarray of float64, shape (n_samples, n_quantiles)
            ``inf {y : F(y) >= tau}`` of the zero-inflated lognormal of each row: 0 where
            ``tau <= P(y = 0)``, else ``m exp(mu + sigma Phi^-1((tau - P(y = 0)) / P(y > 0)))``
            with ``m`` the training mean of the core target (:meth:`predict_distribution`).

        Raises
        ------
        ValueError
            If a level is outside (0, 1), or the core loss is not "ziln" (see
            :meth:`predict_distribution`).
        """
        tau = check_quantiles(quantiles)
        return self.predict_distribution(X).quantile(tau)

    def predict_frame(self, X):
        """Predict every head as a DataFrame named after the targets.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)

        Returns
        -------
        pandas.DataFrame of shape (n_samples, k + 1), float64
            Columns ``target_names_`` (stage probabilities, then the core target's conditional mean
            in its units); the index is X's when X is a DataFrame.
        """
        pred = self.predict(X).reshape(-1, len(self.target_names_))
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(pred, columns=self.target_names_, index=index)

    def score(self, X, y, sample_weight=None):
        """Mean R^2 over all targets, missing labels masked.

        For a stage column R^2 is the Brier skill score against the base rate, for the core target the
        usual coefficient of determination: 1 is perfect, 0 is the base rate / mean predictor.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples, k + 1) or (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        float

        Raises
        ------
        ValueError
            If y's shape differs from the predictions', or a column of y has no observed label.
        """
        pred = self.predict(X)
        pred = pred.reshape(len(pred), -1)
        values = self._fitted_targets(y, len(pred))
        names = list(self.target_names_)
        scores = []
        for j in range(values.shape[1]):
            ok = ~np.isnan(values[:, j])
            if not ok.any():
                raise ValueError(f"y's column {names[j]!r} has no observed label (all NaN): R^2 is undefined")
            w = None if sample_weight is None else np.asarray(sample_weight)[ok]
            scores.append(r2_score(values[ok, j], pred[ok, j], sample_weight=w))
        return float(np.mean(scores))
