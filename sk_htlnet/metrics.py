"""Per-task metrics for hybrid funnel targets, as in the evaluation protocol of HTLNet §5.

Stages are scored with AUC and log loss, the continuous core target with NRMSE,
NMAE, normalised Gini and Spearman rank correlation. Every function takes 1-D
``y_true`` and ``y_pred`` of equal length; rows where ``y_true`` is NaN (a
missing label) are dropped first. A metric that is undefined on the remaining
rows returns NaN and emits :class:`sklearn.exceptions.UndefinedMetricWarning`.
"""

import numbers
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as _sk
from sklearn.exceptions import UndefinedMetricWarning

__all__ = [
    "auc",
    "funnel_report",
    "gain_curve",
    "log_loss",
    "nmae",
    "normalized_gini",
    "nrmse",
    "spearman",
]

REPORT_COLUMNS = ["task", "AUC", "log_loss", "NRMSE", "NMAE", "Gini", "Spearman"]


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
    y, p = _labelled(y_true, y_pred)
    problem = _gain_problem(y)
    if problem:
        raise ValueError(f"gain_curve is undefined: {problem}.")
    gain = _cumulative_gain(y, p)
    return np.arange(y.size + 1) / y.size, gain


def normalized_gini(y_true, y_pred):
    r"""Normalised Gini coefficient of a ranking: the model's Gini over the perfect ordering's.

    With the gain curve ``G`` of :func:`gain_curve` (share of total y captured
    by the top fraction ``x`` of rows, ranked by prediction) the Gini
    coefficient is twice the area between the curve and the diagonal:

    .. math::

        \mathrm{Gini}(\hat y) = 2 \int_0^1 G_{\hat y}(x)\,dx - 1, \qquad
        \mathrm{normalised\ Gini} = \mathrm{Gini}(\hat y) / \mathrm{Gini}(y)

    computed with the trapezoidal rule on the n + 1 curve points. A perfect
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

    Returns
    -------
    score : float
        In [-1, 1]. NaN, with an :class:`~sklearn.exceptions.UndefinedMetricWarning`,
        when y_true has a negative value, a non-positive sum, or is constant
        (the perfect ordering's Gini is then 0).

    Raises
    ------
    ValueError
        If the shapes differ or ``y_pred`` is not finite.

    References
    ----------
    .. [1] X. Wang, T. Liu, J. Miao, "A Deep Probabilistic Model for Customer
       Lifetime Value Prediction", arXiv 1912.07753, 2019.
    """
    y, p = _labelled(y_true, y_pred)
    problem = _gain_problem(y) or ("y_true is constant" if np.ptp(y) == 0 else None)
    if problem:
        return _undefined(f"Normalised Gini is undefined: {problem}.")
    return float(_gini(_cumulative_gain(y, p)) / _gini(_cumulative_gain(y, y)))


def nrmse(y_true, y_pred):
    r"""Normalised root mean squared error, :math:`\mathrm{RMSE} / \mathrm{std}(y)`.

    .. math:: \sqrt{\tfrac1n \sum_i (y_i - \hat y_i)^2} \Big/
              \sqrt{\tfrac1n \sum_i (y_i - \bar y)^2}

    The standard deviation is the population one (ddof = 0), so predicting
    the mean of y_true scores exactly 1 and a perfect prediction 0 (HTLNet §5).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Target; NaN marks a missing label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predictions in the units of y_true.

    Returns
    -------
    score : float
        >= 0, lower is better. NaN with an UndefinedMetricWarning when
        y_true is constant or has no labelled row.
    """
    y, p = _labelled(y_true, y_pred)
    if y.size == 0 or np.ptp(y) == 0:
        return _undefined("NRMSE is undefined: y_true is constant or empty.")
    return float(np.sqrt(np.mean((y - p) ** 2)) / np.std(y))


def nmae(y_true, y_pred):
    r"""Normalised mean absolute error, :math:`\mathrm{MAE} / \mathrm{mean}(|y|)`.

    .. math:: \sum_i |y_i - \hat y_i| \Big/ \sum_i |y_i|

    Predicting zero scores exactly 1 (HTLNet §5). On zero-inflated targets
    the mean predictor scores far worse (about 2 on Hillstrom spend).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Target; NaN marks a missing label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predictions in the units of y_true.

    Returns
    -------
    score : float
        >= 0, lower is better. NaN with an UndefinedMetricWarning when
        every labelled y_true is 0 or none is labelled.
    """
    y, p = _labelled(y_true, y_pred)
    scale = np.mean(np.abs(y)) if y.size else 0.0
    if scale == 0:
        return _undefined("NMAE is undefined: y_true is all zero or empty.")
    return float(np.mean(np.abs(y - p)) / scale)


def spearman(y_true, y_pred):
    """Spearman rank correlation between target and prediction (HTLNet §5).

    Delegates to :func:`scipy.stats.spearmanr` (average ranks for ties).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Target; NaN marks a missing label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predictions.

    Returns
    -------
    score : float
        In [-1, 1]. NaN with an UndefinedMetricWarning when either input is
        constant on the labelled rows (or fewer than two rows are labelled).
    """
    y, p = _labelled(y_true, y_pred)
    if y.size < 2 or np.ptp(y) == 0 or np.ptp(p) == 0:
        return _undefined("Spearman correlation is undefined: an input is constant.")
    return float(stats.spearmanr(y, p).statistic)


def auc(y_true, y_pred):
    """Area under the ROC curve of a binary stage (HTLNet §5).

    Delegates to :func:`sklearn.metrics.roc_auc_score`.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels (bool and nullable dtypes accepted); NaN marks a missing
        label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite scores, higher meaning more likely 1 (e.g. probabilities).

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
    y, p = _labelled(y_true, y_pred)
    _check_binary(y)
    if np.unique(y).size < 2:
        return _undefined("AUC is undefined: y_true holds fewer than two classes.")
    return float(_sk.roc_auc_score(y, p))


def log_loss(y_true, y_pred):
    r"""Binary cross-entropy of a stage's predicted probabilities (HTLNet §5).

    .. math:: -\tfrac1n \sum_i \big(y_i \log p_i + (1 - y_i) \log(1 - p_i)\big)

    with ``p`` clipped to ``[eps, 1 - eps]``, ``eps`` the float64 machine
    epsilon, so a confident mistake costs about 36 rather than infinity.
    Delegates to :func:`sklearn.metrics.log_loss` with ``labels=[0, 1]``, so
    a single-class y_true is fine.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels; NaN marks a missing label, those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Predicted probabilities P(y = 1), in [0, 1].

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
    y, p = _labelled(y_true, y_pred)
    _check_binary(y)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("y_pred must hold probabilities in [0, 1].")
    if y.size == 0:
        return _undefined("Log loss is undefined: no labelled row.")
    eps = np.finfo(np.float64).eps
    return float(_sk.log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1]))


def funnel_report(y_true, y_pred, *, n_stages=None, target_names=None):
    """Score every task of a hybrid funnel with the metrics of HTLNet §5.

    Stage columns get :func:`auc` and :func:`log_loss`; core columns get
    :func:`nrmse`, :func:`nmae`, :func:`normalized_gini` and :func:`spearman`.
    Missing labels (NaN in y_true) are dropped column by column.

    Parameters
    ----------
    y_true : array-like or DataFrame of shape (n_samples, n_stages + 1) or (n_samples,)
        Labels in funnel order: the binary stages, then the core target. A
        1-D array is a lone core target (no stage). A DataFrame's column
        names become the report's index.
    y_pred : array-like or DataFrame of the same shape
        Stage probabilities, then the core prediction in y's units (what
        ``HTLNetRegressor.predict`` returns).
    n_stages : int, default=None
        Number of leading stage columns, in [0, n_columns]; the remaining
        columns are scored as core targets. None means ``n_columns - 1``.
    target_names : sequence of str, default=None
        One name per column. None takes the columns of y_true (or y_pred)
        when it is a DataFrame, else ``stage_1 .. stage_k`` then ``core``
        (as :func:`~sk_htlnet.datasets.make_funnel` names them).

    Returns
    -------
    report : pandas.DataFrame of shape (n_columns, 7)
        Indexed by target name (index name ``"target"``), with columns
        ``["task", "AUC", "log_loss", "NRMSE", "NMAE", "Gini", "Spearman"]``:
        ``task`` is ``"stage"`` or ``"core"``, the metrics are float64, NaN
        where they do not apply to the task (or are undefined).

    Raises
    ------
    ValueError
        If y_true or y_pred is not 1-D or 2-D, their shapes differ,
        ``n_stages`` is out of range, or ``target_names`` has the wrong length.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_htlnet.metrics import funnel_report
    >>> y = np.array([[0, 0.0], [1, 0.0], [1, 5.0], [0, 0.0]])
    >>> funnel_report(y, y)[["task", "AUC", "Gini"]]  # doctest: +NORMALIZE_WHITESPACE
              task  AUC  Gini
    target
    stage_1  stage  1.0   NaN
    core      core  NaN   1.0
    """
    frames = [a for a in (y_true, y_pred) if isinstance(a, pd.DataFrame)]
    names = [str(c) for c in frames[0].columns] if frames else None
    y_true, y_pred = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_pred must have the shape of y_true {y_true.shape}, got {y_pred.shape}."
        )
    n_cols = y_true.shape[1]
    if n_stages is None:
        n_stages = n_cols - 1
    elif (
        isinstance(n_stages, bool)
        or not isinstance(n_stages, numbers.Integral)
        or not 0 <= n_stages <= n_cols
    ):
        raise ValueError(f"n_stages must be an integer in [0, {n_cols}], got {n_stages!r}.")
    if target_names is None:
        target_names = names or _default_names(n_stages, n_cols)
    target_names = list(target_names)
    if len(target_names) != n_cols:
        raise ValueError(
            f"target_names must have one name per column ({n_cols}), got {len(target_names)}."
        )

    rows = []
    for j in range(n_cols):
        t, p = y_true[:, j], y_pred[:, j]
        if j < n_stages:
            rows.append({"task": "stage", "AUC": auc(t, p), "log_loss": log_loss(t, p)})
        else:
            rows.append(
                {
                    "task": "core",
                    "NRMSE": nrmse(t, p),
                    "NMAE": nmae(t, p),
                    "Gini": normalized_gini(t, p),
                    "Spearman": spearman(t, p),
                }
            )
    index = pd.Index(target_names, name="target")
    report = pd.DataFrame(rows, index=index, columns=REPORT_COLUMNS)
    return report.astype(dict.fromkeys(REPORT_COLUMNS[1:], np.float64))


def _undefined(message):
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)
    return np.nan


def _as_array(values, name):
    if isinstance(values, (pd.Series, pd.DataFrame)):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc


def _as_2d(values, name):
    array = _as_array(values, name)
    if array.ndim == 1:
        return array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {array.shape}.")
    return array


def _as_1d(values, name):
    array = _as_array(values, name)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}.")
    return array


def _labelled(y_true, y_pred):
    """Validate a (y_true, y_pred) pair as float64 1-D arrays and drop NaN labels."""
    y, p = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    if y.shape != p.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {y.size} and {p.size}."
        )
    if np.isinf(y).any():
        raise ValueError("y_true must not contain infinity (NaN marks a missing label).")
    labelled = ~np.isnan(y)
    if not np.isfinite(p[labelled]).all():
        raise ValueError("y_pred must be finite where y_true is labelled.")
    return y[labelled], p[labelled]


def _check_binary(y):
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must hold 0/1 labels (or NaN for a missing label).")


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


def _default_names(n_stages, n_cols):
    cores = n_cols - n_stages
    core_names = ["core"] if cores == 1 else [f"core_{i + 1}" for i in range(cores)]
    return [f"stage_{t + 1}" for t in range(n_stages)] + core_names
