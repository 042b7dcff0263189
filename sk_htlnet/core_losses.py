"""The core-loss families: for each, the width of the core head, the per-row loss, the conditional
mean and the data-driven initial bias (prior), together in one class (docs/method.md,
Loss).

``"mse"``: the squared error (HTLNet §3); ``"ziln"``: the zero-inflated lognormal negative
log-likelihood (Wang et al., 2019); ``"tweedie"``: the Tweedie deviance with log link (Jorgensen,
1987).  torch and NumPy only: the net's criterion (:mod:`sk_htlnet.losses`) and the estimator's
decoding of predictions both use these classes.
"""

import math

import numpy as np
import torch
from torch.nn import functional as F

from ._stats import weighted_nanmean

__all__ = ["CoreLoss", "MSECore", "TweedieCore", "ZILNCore", "core_loss", "core_loss_width",
           "core_mean", "ziln_parameters"]

EPS_RATE = 1e-4  # rates (stage base rates, ZILN's share of positive amounts) are clipped to [EPS, 1 - EPS]
ZILN_MIN_SIGMA = 1e-3  # the floor of the lognormal's sigma (also behind the ZILN loss's lower bound)
_HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))
_LOG_DENSITY_FLOOR = math.log(ZILN_MIN_SIGMA) + 0.5 * math.log(2 * math.pi)


class CoreLoss:
    """One core-loss family.  ``width``: outputs of the core head; :meth:`per_row` (torch),
    :meth:`mean` (torch or NumPy) and :meth:`prior` (NumPy) are defined per family."""

    name = None
    width = 1
    #: a likelihood of the amount in its own units (y >= 0): trained on y over its training mean,
    #: taken as is in the monitored total, its mean recalibrated by the isotonic retransformation,
    #: and no target transform; False for a loss on the ``target_transform`` scale
    likelihood = True

    def per_row(self, out, y):
        """Per-row loss, float32 (batch,), of the core head's outputs ``out`` (batch, width) against
        the (scaled) core labels ``y`` (batch,) (missing labels already replaced)."""
        raise NotImplementedError

    def mean(self, out):
        """Conditional mean of the (scaled) core target from the core head's outputs (..., width):
        float (...,), a torch tensor for a tensor, a NumPy array for an array."""
        raise NotImplementedError

    def prior(self, z, sample_weight=None):
        """Initial core-head bias from the scaled core target z (NaN = missing): a float, or a list of
        ``width`` floats."""
        raise NotImplementedError

    def per_row_floor(self, y):
        """A lower bound of :meth:`per_row` for the labels ``y`` (float64 (batch,), NaN = missing,
        counted 0), the same shape: what no prediction can go below (0 here; the likelihood
        families with a density bound it by their own)."""
        return torch.zeros_like(y)


class MSECore(CoreLoss):
    """``scale (out - y)^2`` (HTLNet §3); ``scale`` is the estimator's ``core_loss_scale`` (the core's
    variance under ``target_transform="none"``, else 1).  Mean: the output; prior: the weighted mean."""

    name = "mse"
    likelihood = False

    def __init__(self, scale=1.0):
        self.scale = float(scale)

    def per_row(self, out, y):
        error = (out[:, 0] - y) ** 2
        return error if self.scale == 1.0 else self.scale * error

    def mean(self, out):
        return out[..., 0]

    def prior(self, z, sample_weight=None):
        return float(weighted_nanmean(z, sample_weight))


def ziln_parameters(out):
    """(logit, mu, sigma) of the zero-inflated lognormal from the core head's 3 outputs (..., 3)."""
    logit, mu, raw_sigma = out.unbind(-1)
    return logit, mu, F.softplus(raw_sigma).clamp(min=ZILN_MIN_SIGMA, max=20.0)


class ZILNCore(CoreLoss):
    """The zero-inflated lognormal (Wang et al., 2019, "A Deep Probabilistic Model for Customer
    Lifetime Value Prediction", eq. 2-4) on the head's (logit, mu, raw sigma): the BCE of ``1[y > 0]``
    on ``logit`` plus, for ``y > 0``, ``log y + log sigma + log(2 pi) / 2 + (log y - mu)^2 / (2 sigma^2)``.
    Mean ``sigmoid(logit) exp(mu + sigma^2 / 2)``; prior [logit of P(z > 0), mean and softplus^-1 of
    the standard deviation of log z over the positive rows]."""

    name = "ziln"
    width = 3

    def per_row(self, out, y):
        logit, mu, sigma = ziln_parameters(out)
        positive = y > 0
        bce = F.binary_cross_entropy_with_logits(logit, positive.to(out.dtype), reduction="none")
        log_y = torch.log(torch.where(positive, y, torch.ones_like(y)))
        nll = log_y + torch.log(sigma) + _HALF_LOG_2PI + 0.5 * ((log_y - mu) / sigma) ** 2
        return bce + torch.where(positive, nll, torch.zeros_like(nll))

    def mean(self, out):
        is_torch = isinstance(out, torch.Tensor)
        logit, mu, sigma = ziln_parameters(out if is_torch else torch.as_tensor(out))
        mean = torch.sigmoid(logit) * torch.exp((mu + 0.5 * sigma**2).clamp(max=80.0))
        return mean if is_torch else mean.numpy()

    def per_row_floor(self, y):
        """The negative log-density's bound at sigma's floor: ``log y + log(ZILN_MIN_SIGMA) + log(2 pi) / 2``
        for a positive amount (its BCE term is >= 0), 0 for a zero or missing one."""
        positive = y > 0
        log_y = torch.log(torch.where(positive, y, torch.ones_like(y)))
        return (log_y + _LOG_DENSITY_FLOOR) * positive.to(y.dtype)

    def prior(self, z, sample_weight=None):
        w, ok = _weights(z, sample_weight)
        positive = ok & (z > 0)
        rate = np.clip(np.average(positive[ok], weights=w[ok]) if w[ok].sum() > 0 else 0.5, EPS_RATE, 1 - EPS_RATE)
        mu, sigma = 0.0, 1.0
        if positive.any() and w[positive].sum() > 0:
            log_z = np.log(z[positive])
            mu = float(np.average(log_z, weights=w[positive]))
            sigma = float(np.sqrt(np.average((log_z - mu) ** 2, weights=w[positive]))) or 1.0
        sigma = max(sigma, 1e-2)
        return [float(np.log(rate / (1 - rate))), mu, float(np.log(np.expm1(sigma)))]


class TweedieCore(CoreLoss):
    """The Tweedie negative log-likelihood with log link and power ``p`` in (1, 2), up to terms free of
    the prediction (Jorgensen, 1987): ``-y exp((1 - p) eta) / (1 - p) + exp((2 - p) eta) / (2 - p)``.
    Mean ``exp(eta)``; prior the log of the weighted mean."""

    name = "tweedie"

    def __init__(self, power=1.5):
        self.power = float(power)

    def per_row(self, out, y):
        p = self.power
        eta = out[:, 0].clamp(-40.0, 40.0)
        return -y * torch.exp((1 - p) * eta) / (1 - p) + torch.exp((2 - p) * eta) / (2 - p)

    def mean(self, out):
        is_torch = isinstance(out, torch.Tensor)
        mean = torch.exp((out if is_torch else torch.as_tensor(out))[..., 0].clamp(max=80.0))
        return mean if is_torch else mean.numpy()

    def prior(self, z, sample_weight=None):
        w, ok = _weights(z, sample_weight)
        return float(np.log(max(np.average(z[ok], weights=w[ok]) if w[ok].sum() > 0 else 1.0, 1e-6)))


def _weights(z, sample_weight):
    w = np.ones_like(z) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return w, ~np.isnan(z)


_FAMILIES = {family.name: family for family in (MSECore, ZILNCore, TweedieCore)}
CORE_LOSSES = tuple(_FAMILIES)


def core_loss(name, *, scale=1.0, tweedie_power=1.5):
    """The :class:`CoreLoss` of a ``core_loss`` name (one of ``CORE_LOSSES``), with its settings.

    Raises
    ------
    ValueError
        If ``name`` is not one of ``CORE_LOSSES``.
    """
    if name not in _FAMILIES:
        raise ValueError(f"core_loss must be one of {CORE_LOSSES}, got {name!r}")
    if name == "mse":
        return MSECore(scale)
    return TweedieCore(tweedie_power) if name == "tweedie" else ZILNCore()


def core_loss_width(name):
    """Outputs of the core head the ``core_loss`` ``name`` needs: 3 for "ziln" (logit, mu, sigma), else 1."""
    return core_loss(name).width


def core_mean(out, name):
    """Conditional mean of the (scaled) core target from the core head's outputs, float (n,)
    (:meth:`CoreLoss.mean` of the ``core_loss`` ``name``); torch tensors and NumPy arrays alike."""
    return core_loss(name).mean(out)
