"""Ranking metrics, greater is better: the gain curve, normalised Gini, Spearman and AUC (HTLNet §5).

:func:`gain_curve` and :func:`normalized_gini` score how well the prediction orders the core
target by amount, :func:`spearman` its rank correlation, :func:`auc` how well a stage's score
separates 0 from 1. Missing labels and zero weights are dropped as described in
:mod:`sk_htlnet.metrics`.
"""

import numpy as np
from scipy import stats
from sklearn import metrics as _sk

from ._inputs import _check_binary, _labelled, _undefined


def gain_curve(y_true, y_pred):
    """Cumulative gain (Lorenz) curve: share of total ``y_true`` captured by the top rows.

    Rows are ranked by ``y_pred``, highest first. Rows with tied predictions
    cannot be ordered, so each is credited its tie group's mean ``y_true``:
    the curve is a straight line across a tie group and never depends on the
    order of the rows.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Non-negative target with a positive sum (e.g. spend in USD). NaN marks
        a missing label; those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predicted values; only their order matters.

    Returns
    -------
    fraction_of_population : ndarray of shape (n_labelled + 1,), float64
        ``i / n`` for ``i = 0 .. n``, where n is the number of labelled rows.
    fraction_of_total : ndarray of shape (n_labelled + 1,), float64
        Share of ``sum(y_true)`` held by the ``i`` top-ranked rows; starts at
        0 and ends at exactly 1.

    Raises
    ------
    ValueError
        If the shapes differ, ``y_pred`` is not finite, or ``y_true`` has a
        negative value or a non-positive sum (the share is then undefined).

    See Also
    --------
    normalized_gini : One number summarising this curve.

    References
    ----------
    .. [1] X. Wang, T. Liu, J. Miao, "A Deep Probabilistic Model for Customer
       Lifetime Value Prediction", arXiv 1912.07753, 2019 (gain chart).
    """
    y, p, _ = _labelled(y_true, y_pred)
    problem = _gain_problem(y)
    if problem:
        raise ValueError(f"gain_curve is undefined: {problem}.")
    gain = _cumulative_gain(y, p)
    return np.arange(y.size + 1) / y.size, gain


def normalized_gini(y_true, y_pred, *, sample_weight=None):
    r"""Normalised Gini coefficient of a ranking: the model's Gini over the perfect ordering's.

    With the gain curve ``G`` of :func:`gain_curve` (share of total y captured
    by the top fraction ``x`` of rows, ranked by prediction) the Gini
    coefficient is twice the area between the curve and the diagonal:

    .. math::

        \mathrm{Gini}(\hat y) = 2 \int_0^1 G_{\hat y}(x)\,dx - 1, \qquad
        \mathrm{normalised\ Gini} = \mathrm{Gini}(\hat y) / \mathrm{Gini}(y)

    computed with the trapezoidal rule on the n + 1 curve points. With
    ``sample_weight`` the gain curve is weighted: a row is a share ``w_i /
    sum(w)`` of the population and holds ``w_i * y_i`` of the total, and the
    area is the trapezoidal rule over the unevenly spaced points (unit weights
    give the unweighted value; an integer weight equals repeating the row). A perfect
    ordering (any strictly increasing function of y_true) scores exactly 1,
    a constant or random prediction about 0, a reversed ordering is negative.
    Tied predictions are credited their group's mean y, so the value never
    depends on row order. Used for the core target in HTLNet §5, following
    the ZILN paper [1]_ for customer lifetime value.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Non-negative target. NaN marks a missing label; those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predicted values; only their order matters.
    sample_weight : array-like of shape (n_samples,), default=None
        Finite non-negative row weights; rows of zero weight are dropped.

    Returns
    -------
    score : float
        In [-1, 1]. NaN, with an :class:`~sklearn.exceptions.UndefinedMetricWarning`,
        when y_true has a negative value, a non-positive sum, or is constant
        (the perfect ordering's Gini is then 0).

    Raises
    ------
    ValueError
        If the shapes differ, ``y_pred`` is not finite or ``sample_weight`` is
        negative or not finite.

    References
    ----------
    .. [1] X. Wang, T. Liu, J. Miao, "A Deep Probabilistic Model for Customer
       Lifetime Value Prediction", arXiv 1912.07753, 2019.
    """
    y, p, w = _labelled(y_true, y_pred, sample_weight)
    problem = _gain_problem(y) or ("y_true is constant" if np.ptp(y) == 0 else None)
    if problem:
        return _undefined(f"Normalised Gini is undefined: {problem}.")
    if w is None:
        return float(_gini(_cumulative_gain(y, p)) / _gini(_cumulative_gain(y, y)))
    return float(_weighted_gini(y, p, w) / _weighted_gini(y, y, w))


def spearman(y_true, y_pred, *, sample_weight=None):
    """Spearman rank correlation between target and prediction (HTLNet §5).

    Delegates to :func:`scipy.stats.spearmanr` (average ranks for ties).
    With ``sample_weight``: the weighted Pearson correlation of weighted
    mid-ranks, a row's rank being the weight of the rows ranked below it plus
    half the weight of its tie group. Unit weights give the unweighted value
    and an integer weight equals repeating the row.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Target; NaN marks a missing label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predictions.
    sample_weight : array-like of shape (n_samples,), default=None
        Finite non-negative row weights; rows of zero weight are dropped.

    Returns
    -------
    score : float
        In [-1, 1]. NaN with an UndefinedMetricWarning when either input is
        constant on the labelled rows (or fewer than two rows are labelled).
    """
    y, p, w = _labelled(y_true, y_pred, sample_weight)
    if y.size < 2 or np.ptp(y) == 0 or np.ptp(p) == 0:
        return _undefined("Spearman correlation is undefined: an input is constant.")
    if w is None:
        return float(stats.spearmanr(y, p).statistic)
    ry, rp = _weighted_ranks(y, w), _weighted_ranks(p, w)
    ry, rp = ry - np.average(ry, weights=w), rp - np.average(rp, weights=w)
    cov = np.average(ry * rp, weights=w)
    return float(cov / np.sqrt(np.average(ry**2, weights=w) * np.average(rp**2, weights=w)))


def auc(y_true, y_pred, *, sample_weight=None):
    """Area under the ROC curve of a binary stage (HTLNet §5).

    Delegates to :func:`sklearn.metrics.roc_auc_score` (weighted when
    ``sample_weight`` is given).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels (bool and nullable dtypes accepted); NaN marks a missing
        label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite scores, higher meaning more likely 1 (e.g. probabilities).
    sample_weight : array-like of shape (n_samples,), default=None
        Finite non-negative row weights; rows of zero weight are dropped.

    Returns
    -------
    score : float
        In [0, 1]; 0.5 is chance. NaN with an UndefinedMetricWarning when
        the labelled rows hold only one class.

    Raises
    ------
    ValueError
        If the shapes differ, ``y_pred`` is not finite or y_true is not 0/1.
    """
    y, p, w = _labelled(y_true, y_pred, sample_weight)
    _check_binary(y)
    if np.unique(y).size < 2:
        return _undefined("AUC is undefined: y_true holds fewer than two classes.")
    return float(_sk.roc_auc_score(y, p, sample_weight=w))


def _gain_problem(y):
    if y.size == 0:
        return "no labelled row"
    if (y < 0).any():
        return "y_true has negative values"
    if y.sum() <= 0:
        return "y_true sums to zero"
    return None


def _cumulative_gain(y, p):
    """Share of sum(y) captured by the top i rows ranked by p, i = 0..n; ties averaged."""
    order = np.lexsort((y, -p))  # within a tie, a fixed order: sums are row-order invariant
    y, p = y[order], p[order]
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    sizes = np.diff(np.r_[starts, y.size])
    credited = np.repeat(np.add.reduceat(y, starts) / sizes, sizes)
    gain = np.r_[0.0, np.cumsum(credited)]
    return gain / gain[-1]


def _gini(gain):
    """2 * (trapezoidal area under the gain curve) - 1, for n + 1 evenly spaced points."""
    return (gain[:-1] + gain[1:]).sum() / (gain.size - 1) - 1.0


def _weighted_gini(y, p, w):
    """Gini of the weighted gain curve: x = share of sum(w), G = share of sum(w * y).

    Rows are ranked by p, highest first; a tie group is one straight segment
    (its end points are the only curve points), so row order never matters.
    """
    order = np.lexsort((y, -p))
    y, p, w = y[order], p[order], w[order]
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    x = np.r_[0.0, np.cumsum(np.add.reduceat(w, starts))]
    gain = np.r_[0.0, np.cumsum(np.add.reduceat(w * y, starts))]
    x, gain = x / x[-1], gain / gain[-1]
    return float((np.diff(x) * (gain[:-1] + gain[1:])).sum() - 1.0)


def _weighted_ranks(values, w):
    """Weighted mid-ranks: weight of the strictly smaller values plus half the tie group's."""
    order = np.argsort(values, kind="stable")
    v, ws = values[order], w[order]
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    group_w = np.add.reduceat(ws, starts)
    below = np.r_[0.0, np.cumsum(group_w)[:-1]]
    sizes = np.diff(np.r_[starts, v.size])
    ranks = np.empty_like(v)
    ranks[order] = np.repeat(below + group_w / 2, sizes)
    return ranks
