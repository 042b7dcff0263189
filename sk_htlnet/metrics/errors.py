"""Error metrics, lower is better: NRMSE and NMAE of the core target, log loss of a stage (HTLNet §5).

Missing labels and zero weights are dropped as described in :mod:`sk_htlnet.metrics`; their
scorers are negated (``neg_nrmse``, ``neg_nmae``, ``neg_log_loss``).
"""

import numpy as np
from sklearn import metrics as _sk

from ._inputs import _check_binary, _labelled, _undefined


def nrmse(y_true, y_pred, *, sample_weight=None):
    r"""Normalised root mean squared error, RMSE / std(y).

    .. math:: \sqrt{\tfrac1n \sum_i (y_i - \hat y_i)^2} \Big/
              \sqrt{\tfrac1n \sum_i (y_i - \bar y)^2}

    The standard deviation is the population one (ddof = 0), so predicting
    the mean of y_true scores exactly 1 and a perfect prediction 0 (HTLNet §5).
    With ``sample_weight`` every mean (the squared error's, y's and its
    variance's) is the weighted one, so predicting the weighted mean scores 1.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Target; NaN marks a missing label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predictions in the units of y_true.
    sample_weight : array-like of shape (n_samples,), default=None
        Finite non-negative row weights; rows of zero weight are dropped.

    Returns
    -------
    score : float
        >= 0, lower is better. NaN with an UndefinedMetricWarning when
        y_true is constant or has no labelled row.
    """
    y, p, w = _labelled(y_true, y_pred, sample_weight)
    if y.size == 0 or np.ptp(y) == 0:
        return _undefined("NRMSE is undefined: y_true is constant or empty.")
    mean = np.average(y, weights=w)  # weights=None: the plain mean and population variance
    return float(
        np.sqrt(np.average((y - p) ** 2, weights=w) / np.average((y - mean) ** 2, weights=w))
    )


def nmae(y_true, y_pred, *, sample_weight=None):
    r"""Normalised mean absolute error, MAE / mean(abs(y)).

    .. math:: \sum_i |y_i - \hat y_i| \Big/ \sum_i |y_i|

    Predicting zero scores exactly 1 (HTLNet §5). On zero-inflated targets
    the mean predictor scores far worse (about 2 on Hillstrom spend). With
    ``sample_weight`` both sums are weighted.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Target; NaN marks a missing label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predictions in the units of y_true.
    sample_weight : array-like of shape (n_samples,), default=None
        Finite non-negative row weights; rows of zero weight are dropped.

    Returns
    -------
    score : float
        >= 0, lower is better. NaN with an UndefinedMetricWarning when
        every labelled y_true is 0 or none is labelled.
    """
    y, p, w = _labelled(y_true, y_pred, sample_weight)
    scale = np.average(np.abs(y), weights=w) if y.size else 0.0
    if scale == 0:
        return _undefined("NMAE is undefined: y_true is all zero or empty.")
    return float(np.average(np.abs(y - p), weights=w) / scale)


def log_loss(y_true, y_pred, *, sample_weight=None):
    r"""Binary cross-entropy of a stage's predicted probabilities (HTLNet §5).

    .. math:: -\tfrac1n \sum_i \big(y_i \log p_i + (1 - y_i) \log(1 - p_i)\big)

    with ``p`` clipped to ``[eps, 1 - eps]``, ``eps`` the float64 machine
    epsilon, so a confident mistake costs about 36 rather than infinity.
    Delegates to :func:`sklearn.metrics.log_loss` with ``labels=[0, 1]``, so
    a single-class y_true is fine; ``sample_weight`` makes it the weighted mean.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels; NaN marks a missing label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Predicted probabilities P(y = 1), in [0, 1].
    sample_weight : array-like of shape (n_samples,), default=None
        Finite non-negative row weights; rows of zero weight are dropped.

    Returns
    -------
    score : float
        >= 0, lower is better. NaN with an UndefinedMetricWarning when no
        row is labelled.

    Raises
    ------
    ValueError
        If the shapes differ, y_true is not 0/1 or ``y_pred`` is outside [0, 1].
    """
    y, p, w = _labelled(y_true, y_pred, sample_weight)
    _check_binary(y)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("y_pred must hold probabilities in [0, 1].")
    if y.size == 0:
        return _undefined("Log loss is undefined: no labelled row.")
    eps = np.finfo(np.float64).eps
    return float(_sk.log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1], sample_weight=w))
