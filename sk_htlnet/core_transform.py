"""The core target's transform to the scale the loss sees and back: standardisation, the paper's raw
squared error, log1p with its retransformation (centered isotonic regression or Duan's smearing),
and the recalibration of a likelihood's mean (docs/method.md, Loss)."""

import numpy as np
from sklearn.isotonic import IsotonicRegression

from ._stats import weighted_nanmean
from .preprocessing import mean_and_std, standardise

__all__ = ["CoreTransform"]

_MAX_RAW_STD = 1e150  # its square must be a float64


class CoreTransform:
    """Transform of the core target before the MSE (HTLNet §3 decision) and its inverse.

    ``"standardize"``: z = (y - mean) / std; the inverse is exact, and a network trained with the MSE
    on z estimates the conditional mean.  ``"none"`` (the paper's raw squared error): the same z, so
    the network's outputs stay of order 1 at any scale of y, but the loss is the squared error in y's
    units, ``(y_hat - y)^2 = std^2 (z_hat - z)^2`` (:attr:`loss_scale` is ``std^2``); the two differ
    only in how much the core's gradient weighs against the stages'.  With a likelihood core loss
    (``calibrate=True``) the estimator sets ``std`` to the training mean and ``mean`` to 0 (amounts in
    units of their mean) and the loss scale is 1.  ``"log1p"``: z = log(1 + y); the network
    then estimates E[log(1 + y) | x], and ``expm1`` of it is not the conditional mean, so the inverse
    is a *retransformation* fitted on the training rows:

    - ``"isotonic"`` (default): the conditional mean as a monotone function of z_hat, estimated by
      centered isotonic regression of y on z_hat (Oron and Flournoy, 2017: isotonic regression whose
      blocks are replaced by points at their centres and joined linearly), so the calibration adapts
      to zero inflation and heteroscedastic tails; a negligible term (1e-9 of the target's range per
      unit of z_hat) keeps the network's ranking where the map is flat;
    - ``"smearing"``: Duan's (1983) smearing estimate E[y | x] = s exp(z_hat) - 1 with
      s = mean(exp(z_i - z_hat_i)), which assumes homoscedastic residuals on the log scale and
      compresses predictions on zero-inflated data;
    - ``"none"``: ``expm1(z_hat)``, the uncorrected back-transform (a median-like value, biased low).

    With a likelihood core loss (``calibrate=True``; kind "none", z in units of the training mean)
    ``"isotonic"`` likewise recalibrates the distribution's mean on the training rows, and "none"
    keeps it as the model computes it.

    Predictions are clipped to the range of the training core values (a conditional mean lies within
    the support: no negative expected spend from a model trained on amounts >= 0).
    """

    def __init__(self, kind, retransformation="isotonic", calibrate=False):
        self.kind = kind
        self.retransformation = retransformation
        self.calibrate = calibrate
        self.mean = 0.0
        self.std = 1.0
        self.smearing = 1.0
        self.knots_z = None
        self.knots_y = None
        self.low = -np.inf
        self.high = np.inf

    def _check(self, observed):
        if self.kind == "log1p" and observed.size and observed.min() <= -1:
            raise ValueError(
                "target_transform='log1p' needs a core target > -1 (amounts are usually >= 0); "
                f"the smallest core value is {observed.min():g}. Use 'standardize' instead."
            )

    def fit(self, y):
        observed = y[~np.isnan(y)]
        self.low, self.high = float(observed.min()), float(observed.max())
        self._check(observed)
        if (self.kind == "standardize" or (self.kind == "none" and not self.calibrate)) and observed.size:
            self.mean, self.std = mean_and_std(observed)  # without overflow up to the float64 limit
            self.std = self.std or 1.0
            if self.kind == "none" and not self.std <= _MAX_RAW_STD:
                raise ValueError(
                    f"target_transform='none' reports the squared error in the core target's units, which "
                    f"a float64 cannot hold for a core target with a standard deviation of {self.std:.3g} "
                    f"(above {_MAX_RAW_STD:g}); use target_transform='standardize' or rescale the target"
                )
        return self

    @property
    def in_core_units(self):
        """Whether the squared error is taken in y's own units (``"none"`` without a likelihood)."""
        return self.kind == "none" and not self.calibrate

    @property
    def loss_scale(self):
        """Factor from the squared error on z to the squared error in y's units: ``std^2`` when
        :attr:`in_core_units`, else 1 (float)."""
        return self.std ** 2 if self.in_core_units else 1.0

    def update(self, y):
        """A later chunk of training rows (``partial_fit``, warm start): the same check as ``fit``,
        and the clipping range widened to its values; the scale is kept."""
        observed = y[~np.isnan(y)]
        self._check(observed)
        if observed.size:
            self.low, self.high = min(self.low, float(observed.min())), max(self.high, float(observed.max()))
        return self

    def forward(self, y):
        if self.kind == "log1p":
            return np.log1p(y)
        return standardise(y, self.mean, self.std)

    def inverse(self, z):
        if self.knots_z is not None:
            y = np.interp(z, self.knots_z, self.knots_y)
            y = y + 1e-9 * (self.high - self.low) * (z - self.knots_z[0])
        elif self.kind == "log1p":
            y = self.smearing * np.exp(z) - 1.0
        else:
            with np.errstate(over="ignore"):  # beyond float64 only near its limit: clipped below
                y = z * self.std + self.mean
        return np.clip(y, self.low, self.high)

    @property
    def fitted_on_predictions(self):
        """Whether :meth:`fit_retransformation` uses the network's predictions (else it only resets)."""
        return self.retransformation != "none" and (self.kind == "log1p" or self.calibrate)

    def fit_retransformation(self, y_true, z_pred, sample_weight=None):
        """Fit the log1p inverse (or the likelihood mean's calibration) on training rows: ``y_true`` in
        y's units, ``z_pred`` the network's (for a likelihood, its mean in units of the training mean)."""
        self.knots_z = self.knots_y = None
        if not self.fitted_on_predictions:
            return
        ok = ~np.isnan(y_true)
        w = np.ones(ok.sum()) if sample_weight is None else np.asarray(sample_weight, dtype=float)[ok]
        if self.retransformation == "smearing" and self.kind == "log1p":
            smearing = weighted_nanmean(np.exp(np.log1p(y_true) - z_pred), sample_weight)
            self.smearing = smearing if np.isfinite(smearing) else 1.0
            return
        self.knots_z, self.knots_y = _centered_isotonic(z_pred[ok], y_true[ok], w)


def _centered_isotonic(x, y, w):
    """Knots of centered isotonic regression of y on x (Oron and Flournoy, 2017).

    Returns float64 arrays (knots_x, knots_y), both non-decreasing, knots_x strictly increasing: one
    knot per block of the weighted isotonic fit, at the block's weighted mean x and value.
    """
    keep = w > 0
    x, y, w = x[keep], y[keep], w[keep]
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    fitted = IsotonicRegression(increasing=True).fit(x, y, sample_weight=w).predict(x)
    new_block = np.r_[True, np.diff(fitted) != 0]
    block = np.cumsum(new_block) - 1
    centres = np.bincount(block, weights=x * w) / np.bincount(block, weights=w)
    values = fitted[new_block]
    centres, first = np.unique(centres, return_index=True)  # guard against equal centres
    return centres, values[first]
