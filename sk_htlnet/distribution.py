"""The core target's predictive distribution under ``core_loss="ziln"`` (issue 19).

The zero-inflated lognormal head (Wang et al., 2019, "A Deep Probabilistic Model for Customer
Lifetime Value Prediction", eq. 2-4) models the core target y >= 0 of each row as a mixture: an
atom at 0 of mass ``1 - p`` and, with probability ``p``, ``y = scale * exp(mu + sigma * N(0, 1))``
(a lognormal in units of ``scale``, the training mean of the core target, on which the head is
trained).  :class:`ZeroInflatedLognormal` holds those parameters per row and gives the exact
quantiles and CDF of the mixture; :func:`quantile_coverage` measures how well a set of predicted
quantiles is calibrated on held-out targets, counting the atom at zero by the share of its mass
below each level (the randomised probability integral transform).
"""

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["ZeroInflatedLognormal", "check_quantiles", "quantile_coverage"]


def check_quantiles(quantiles):
    """``quantiles`` as a 1-D float64 array of levels in (0, 1).

    Raises
    ------
    ValueError
        If ``quantiles`` is empty, not numeric, not 1-D (a scalar is taken as one level), or holds a
        level outside the open interval (0, 1).
    """
    try:
        tau = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"quantiles must be numbers in (0, 1), got {quantiles!r}") from exc
    if tau.ndim != 1 or tau.size == 0:
        raise ValueError(f"quantiles must be a non-empty 1-D list of levels in (0, 1), got shape {tau.shape}")
    if not ((tau > 0) & (tau < 1)).all():
        raise ValueError(f"quantiles must lie strictly between 0 and 1, got {tau[(tau <= 0) | (tau >= 1) | np.isnan(tau)]}")
    return tau


class ZeroInflatedLognormal:
    """Per-row zero-inflated lognormal distributions of the core target, in its units.

    Parameters
    ----------
    p_positive : ndarray of float64, shape (n_samples,)
        ``p``, the probability that the core target is positive (the head's ``sigmoid(logit)``).
    mu, sigma : ndarray of float64, shape (n_samples,)
        The lognormal's parameters on the log of ``y / scale`` (``sigma > 0``).
    scale : float
        The unit of the lognormal: the training mean of the core target (> 0).

    Notes
    -----
    ``mean()`` is ``scale p exp(mu + sigma^2 / 2)``, the head's own mean before any
    retransformation: with ``retransformation="isotonic"`` (the default) ``predict`` returns an
    isotonic recalibration of it, which moves the mean only, so ``predict``'s core column and
    ``mean()`` differ by that recalibration while the quantiles are those of the head.
    """

    def __init__(self, p_positive, mu, sigma, scale):
        self.p_positive = np.asarray(p_positive, dtype=np.float64)
        self.mu = np.asarray(mu, dtype=np.float64)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.scale = float(scale)

    def __len__(self):
        return len(self.p_positive)

    def __repr__(self):
        return f"ZeroInflatedLognormal(n_samples={len(self)}, scale={self.scale:g})"

    @property
    def zero_mass(self):
        """P(y = 0), float64 (n_samples,): the atom's mass ``1 - p``."""
        return 1.0 - self.p_positive

    def mean(self):
        """E[y], float64 (n_samples,), in the core target's units (the head's mean, as trained)."""
        with np.errstate(over="ignore"):
            return self.scale * self.p_positive * np.exp(np.minimum(self.mu + 0.5 * self.sigma ** 2, 80.0))

    def quantile(self, quantiles):
        """The quantiles ``inf {y : F(y) >= tau}`` of each row, float64 (n_samples, n_quantiles).

        ``0`` where ``tau <= 1 - p`` (the atom), else
        ``scale exp(mu + sigma Phi^-1((tau - (1 - p)) / p))``.

        Raises
        ------
        ValueError
            As :func:`check_quantiles`.
        """
        tau = check_quantiles(quantiles)[None, :]
        zero, p = self.zero_mass[:, None], self.p_positive[:, None]
        level = np.clip((tau - zero) / np.maximum(p, np.finfo(np.float64).tiny), 0.0, 1.0)
        with np.errstate(over="ignore", divide="ignore"):
            positive = self.scale * np.exp(self.mu[:, None] + self.sigma[:, None] * ndtri(level))
        return np.where(tau <= zero, 0.0, positive)

    def cdf(self, y):
        """``F(y) = P(Y <= y)`` per row for the targets ``y`` (float64 (n_samples,)): 0 below 0,
        ``1 - p`` at 0, ``1 - p + p Phi((log(y / scale) - mu) / sigma)`` above."""
        y = np.asarray(y, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_y = np.log(np.where(y > 0, y, 1.0) / self.scale)
            positive = self.zero_mass + self.p_positive * ndtr((log_y - self.mu) / self.sigma)
        return np.where(y < 0, 0.0, np.where(y > 0, positive, self.zero_mass))


def quantile_coverage(y_true, distribution, quantiles):
    """Share of targets below each predicted quantile, the atom at zero counted by its mass.

    For a positive target the row counts ``1[y <= q_tau]``; for a zero target it counts the share
    of the atom's mass below ``tau``, ``min(1, tau / F(0))`` with ``F(0)`` the atom's mass
    (``zero_mass``): the expectation of the randomised probability integral transform ``U F(0)``
    being at most ``tau`` (Czado, Gneiting and Held, 2009, for count data).  Well-calibrated
    quantiles give ``tau`` at every level; counting ``y <= q`` at zero instead would report
    ``F(0)`` or more at every level below the atom's mass.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Observed core targets (>= 0); NaN rows (missing labels) are dropped.
    distribution : ZeroInflatedLognormal
        The predicted distributions of the same rows
        (:meth:`sk_htlnet.HTLNetRegressor.predict_distribution`).
    quantiles : array-like of shape (n_quantiles,)
        Levels in (0, 1).

    Returns
    -------
    ndarray of float64, shape (n_quantiles,)

    Raises
    ------
    ValueError
        If the lengths differ, a target is negative, or a level is outside (0, 1).
    """
    tau = check_quantiles(quantiles)
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if len(y) != len(distribution):
        raise ValueError(f"y_true has {len(y)} rows, the distribution {len(distribution)}")
    ok = ~np.isnan(y)
    if (y[ok] < 0).any():
        raise ValueError("y_true must be >= 0 (a zero-inflated lognormal has no negative values)")
    y, zero = y[ok], distribution.zero_mass[ok]
    q = distribution.quantile(tau)[ok]
    counted = np.where((y > 0)[:, None], (y[:, None] <= q).astype(np.float64),
                       np.minimum(1.0, tau[None, :] / np.maximum(zero[:, None], np.finfo(np.float64).tiny)))
    return counted.mean(axis=0)
