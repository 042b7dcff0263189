"""Per-task metrics and scikit-learn scorers for hybrid funnel targets (HTLNet §5).

Stages are scored with AUC and log loss, the continuous core target with NRMSE,
NMAE, normalised Gini and Spearman rank correlation. Every function takes 1-D
``y_true`` and ``y_pred`` of equal length and an optional ``sample_weight``;
rows where ``y_true`` is NaN (a missing label) are dropped first, and so are
rows of zero weight. A metric that is undefined on the remaining rows returns
NaN and emits :class:`sklearn.exceptions.UndefinedMetricWarning`.

Scorers
-------
:func:`make_funnel_scorer` turns any metric into a scikit-learn scorer for one
target of a funnel, selected by position (an int, negatives allowed) or by
name (a str, looked up in the columns of the ``y`` DataFrame at scoring time).
:func:`funnel_scorers` builds the whole set, a dict ready for ``scoring=`` in
:class:`~sklearn.model_selection.GridSearchCV` or
:func:`~sklearn.model_selection.cross_validate`::

    {"visit_auc", "visit_neg_log_loss", ..., "spend_neg_nrmse",
     "spend_neg_nmae", "spend_gini", "spend_spearman"}

Losses follow scikit-learn's convention: their scorers are negated and named
``neg_*`` so that greater is always better (``refit="spend_gini"`` and the
``rank_test_*`` columns of ``cv_results_`` then mean what they say). Scorers
call the estimator's ``predict`` (stage probabilities, then the core target in
y's units), pickle, run in parallel workers (``n_jobs``), and accept
``sample_weight`` through metadata routing::

    sklearn.set_config(enable_metadata_routing=True)
    scorers = {k: s.set_score_request(sample_weight=True)
               for k, s in funnel_scorers(Y).items()}
    cross_validate(est, X, Y, scoring=scorers, params={"sample_weight": w})

(``HTLNetRegressor.fit`` takes ``sample_weight`` too, so routing also asks
for ``est.set_fit_request(sample_weight=True)`` or ``False``).

Relation to ``HTLNetRegressor.score``
-------------------------------------
``HTLNetRegressor.score(X, y)``, what a search uses when ``scoring=None``, is
scikit-learn's R^2 computed per column on the labelled rows and averaged over
all columns: for a stage it is the Brier skill score against the base rate,
for the core target the usual coefficient of determination. It is one number
that mixes stages and core with equal weight and is dominated, on a
heavy-tailed amount, by the few largest values. The scorers here report each
target with the metric of HTLNet §5 instead; select models on the core
(``refit="spend_gini"``, the ranking quality of the business target) and
watch the stages' AUC alongside. Note that scikit-learn's own ``"r2"`` scorer
does not mask missing labels.
"""

import numbers
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as _sk
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "CORE_SCORERS",
    "STAGE_SCORERS",
    "auc",
    "funnel_report",
    "funnel_scorers",
    "gain_curve",
    "log_loss",
    "make_funnel_scorer",
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


def funnel_report(y_true, y_pred, *, n_stages=None, target_names=None, sample_weight=None):
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
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights passed to every metric.

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
            rows.append(
                {
                    "task": "stage",
                    "AUC": auc(t, p, sample_weight=sample_weight),
                    "log_loss": log_loss(t, p, sample_weight=sample_weight),
                }
            )
        else:
            rows.append(
                {
                    "task": "core",
                    "NRMSE": nrmse(t, p, sample_weight=sample_weight),
                    "NMAE": nmae(t, p, sample_weight=sample_weight),
                    "Gini": normalized_gini(t, p, sample_weight=sample_weight),
                    "Spearman": spearman(t, p, sample_weight=sample_weight),
                }
            )
    index = pd.Index(target_names, name="target")
    report = pd.DataFrame(rows, index=index, columns=REPORT_COLUMNS)
    return report.astype(dict.fromkeys(REPORT_COLUMNS[1:], np.float64))


# Scorers ---------------------------------------------------------------------------------------

_METRICS = {  # canonical name: (function, greater_is_better, task, scorer name)
    "auc": (auc, True, "stage", "auc"),
    "log_loss": (log_loss, False, "stage", "neg_log_loss"),
    "nrmse": (nrmse, False, "core", "neg_nrmse"),
    "nmae": (nmae, False, "core", "neg_nmae"),
    "normalized_gini": (normalized_gini, True, "core", "gini"),
    "spearman": (spearman, True, "core", "spearman"),
}
_ALIASES = {"neg_log_loss": "log_loss", "neg_nrmse": "nrmse", "neg_nmae": "nmae", "gini": "normalized_gini"}
STAGE_SCORERS = ("auc", "neg_log_loss")
"""Scorer names :func:`funnel_scorers` makes for each stage, in order."""
CORE_SCORERS = ("neg_nrmse", "neg_nmae", "gini", "spearman")
"""Scorer names :func:`funnel_scorers` makes for each core target, in order."""


def make_funnel_scorer(metric, target):
    """A scikit-learn scorer for one metric of one target of a hybrid funnel.

    The scorer calls the estimator's ``predict`` (shape (n_samples, k + 1):
    stage probabilities, then the core target in y's units; or (n_samples,)
    for a 1-D y), takes column ``target`` of ``y`` and of the prediction, and
    applies the metric, masking missing labels (NaN in y). It is built with
    :func:`sklearn.metrics.make_scorer` around a module-level function, so it
    pickles and runs in parallel workers. ``sample_weight`` reaches it through
    metadata routing (``scorer.set_score_request(sample_weight=True)`` with
    ``sklearn.set_config(enable_metadata_routing=True)``).

    Parameters
    ----------
    metric : {"auc", "log_loss", "neg_log_loss", "nrmse", "neg_nrmse", "nmae", \
"neg_nmae", "normalized_gini", "gini", "spearman"}
        The metric: :func:`auc`, :func:`log_loss` (for a 0/1 stage),
        :func:`nrmse`, :func:`nmae`, :func:`normalized_gini`,
        :func:`spearman` (for the core target). Losses (log loss, NRMSE,
        NMAE) are scored negated, ``greater_is_better=False``, whichever of
        their two names is given, as scikit-learn's ``neg_*`` scorers.
    target : int or str
        The column scored. An int is a position in the columns of y and of the
        prediction (negative counts from the end: -1 is the core target). A
        str is a name, looked up at scoring time in the columns of ``y`` when
        it is a DataFrame (or the name of a Series); the prediction's column
        at the same position is used.

    Returns
    -------
    scorer : callable ``scorer(estimator, X, y, sample_weight=None) -> float``
        A scikit-learn scorer (``sklearn.metrics.make_scorer``), greater is
        better. Scoring raises ValueError when the target cannot be resolved
        (an unknown name, a name with an ndarray y, a position out of range;
        the message names the target and the available names), when y and the
        prediction differ in shape, or from the metric (e.g. AUC of a
        non-binary column).

    Raises
    ------
    ValueError
        If ``metric`` is unknown or ``target`` is neither an int nor a str.

    See Also
    --------
    funnel_scorers : Every metric for every target, as a dict for ``scoring=``.

    Examples
    --------
    >>> from sk_htlnet.metrics import make_funnel_scorer
    >>> spend_gini = make_funnel_scorer("gini", "spend")
    >>> first_stage_auc = make_funnel_scorer("auc", 0)
    >>> core_nrmse = make_funnel_scorer("nrmse", -1)  # scores -NRMSE
    """
    metric = _canonical_metric(metric)
    target = _check_target(target)
    return _sk.make_scorer(
        _score_target,
        response_method="predict",
        greater_is_better=_METRICS[metric][1],
        metric=metric,
        target=target,
    )


def funnel_scorers(targets, n_stages=None):
    """Scorers for every metric of every target, keyed ``"<target>_<metric>"``.

    Each stage gets ``<name>_auc`` and ``<name>_neg_log_loss``; each core
    target ``<name>_neg_nrmse``, ``<name>_neg_nmae``, ``<name>_gini`` and
    ``<name>_spearman`` (see :func:`make_funnel_scorer`). The dict is ready for
    ``scoring=`` of :class:`~sklearn.model_selection.GridSearchCV`,
    :func:`~sklearn.model_selection.cross_validate` and friends, with
    multi-metric refit such as ``refit="spend_gini"``. Every scorer is a new
    object, so ``set_score_request`` on one leaves the others alone.

    Parameters
    ----------
    targets : list of str, int, DataFrame, Series or fitted estimator
        The targets, in funnel order: the stages, then the core target(s).

        - list of str: the names; each scorer selects its column by name from
          the y DataFrame at scoring time.
        - int n >= 1: n targets named ``stage_1 .. stage_{n-1}, core`` (as
          :func:`~sk_htlnet.datasets.make_funnel` names them), selected by
          position, so y may be an ndarray. ``1`` gives the core scorers of a
          plain regression (1-D y).
        - DataFrame (or Series): its column names (its name), selected by name.
        - fitted :class:`~sk_htlnet.HTLNetRegressor` (or a Pipeline ending in
          one): its ``target_names_`` and ``n_stages_``, selected by position.
    n_stages : int, default=None
        Number k of leading stage targets, in [0, n_targets]; the rest are
        core targets. None means ``n_targets - 1`` (one core target last), or
        the estimator's ``n_stages_``.

    Returns
    -------
    scorers : dict of str to scorer
        ``2 * k + 4 * (n_targets - k)`` scorers, in funnel order.

    Raises
    ------
    ValueError
        If there is no target, a name repeats or is not a str, ``n_stages`` is
        out of range, or an estimator is not fitted.

    Examples
    --------
    >>> from sk_htlnet.metrics import funnel_scorers
    >>> list(funnel_scorers(["visit", "conversion", "spend"]))  # doctest: +NORMALIZE_WHITESPACE
    ['visit_auc', 'visit_neg_log_loss', 'conversion_auc', 'conversion_neg_log_loss',
     'spend_neg_nrmse', 'spend_neg_nmae', 'spend_gini', 'spend_spearman']
    >>> list(funnel_scorers(1))
    ['core_neg_nrmse', 'core_neg_nmae', 'core_gini', 'core_spearman']
    """
    names, by_position, fitted_k = _scorer_targets(targets)
    n = len(names)
    if n_stages is None:
        n_stages = n - 1 if fitted_k is None else fitted_k
    elif isinstance(n_stages, bool) or not isinstance(n_stages, numbers.Integral) or not 0 <= n_stages <= n:
        raise ValueError(f"n_stages must be an integer in [0, {n}], got {n_stages!r}.")
    if isinstance(targets, numbers.Integral):
        names = _default_names(n_stages, n)
    scorers = {}
    for j, name in enumerate(names):
        for scorer_name in STAGE_SCORERS if j < n_stages else CORE_SCORERS:
            scorers[f"{name}_{scorer_name}"] = make_funnel_scorer(scorer_name, j if by_position else name)
    return scorers


def _score_target(y_true, y_pred, *, metric, target, sample_weight=None):
    """Select column ``target`` of y_true and y_pred and apply ``metric`` (the scorers' function)."""
    j = _resolve_target(y_true, target)
    t, p = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(
            f"y has shape {t.shape} but the prediction has shape {p.shape}; a funnel scorer needs "
            "one prediction column per column of y."
        )
    return _METRICS[metric][0](t[:, j], p[:, j], sample_weight=sample_weight)


def _resolve_target(y_true, target):
    """Column index of ``target`` (position or name) in y_true."""
    if isinstance(y_true, pd.DataFrame):
        names, n = [str(c) for c in y_true.columns], y_true.shape[1]
    elif isinstance(y_true, pd.Series):
        names, n = ([] if y_true.name is None else [str(y_true.name)]), 1
    else:
        shape = np.shape(y_true)
        names, n = [], (shape[1] if len(shape) == 2 else 1)
    if isinstance(target, str):
        if names.count(target) == 1:
            return names.index(target)
        if target in names:
            raise ValueError(f"Target {target!r} is ambiguous: y has several columns named {target!r}.")
        where = (
            f"y's available names are {names}"
            if names
            else f"y is {type(y_true).__module__}.{type(y_true).__qualname__} without column names "
            "(available names: none)"
        )
        raise ValueError(
            f"Cannot resolve target {target!r}: {where}. Pass y as a DataFrame with that column, "
            "or select the target by position (an int, -1 for the core target)."
        )
    if not -n <= target < n:
        raise ValueError(
            f"Target position {target} is out of range for y with {n} column(s)"
            + (f" {names}." if names else ".")
        )
    return target % n


def _canonical_metric(metric):
    name = _ALIASES.get(metric, metric) if isinstance(metric, str) else None
    if name not in _METRICS:
        known = sorted({*_METRICS, *_ALIASES})
        raise ValueError(f"Unknown metric {metric!r}; choose one of {known}.")
    return name


def _check_target(target):
    if isinstance(target, str):
        return target
    if isinstance(target, numbers.Integral) and not isinstance(target, (bool, np.bool_)):
        return int(target)
    raise ValueError(f"target must be an int (a position) or a str (a name), got {target!r}.")


def _scorer_targets(targets):
    """(names, select by position?, fitted n_stages or None) for funnel_scorers."""
    final = targets[-1] if isinstance(targets, Pipeline) else targets
    if hasattr(final, "fit") and hasattr(final, "get_params"):
        check_is_fitted(final, "target_names_")
        return [str(c) for c in final.target_names_], True, getattr(final, "n_stages_", None)
    if isinstance(targets, pd.DataFrame):
        names = [str(c) for c in targets.columns]
    elif isinstance(targets, pd.Series):
        if targets.name is None:
            raise ValueError("A Series given as targets needs a name; pass funnel_scorers(1) instead.")
        names = [str(targets.name)]
    elif isinstance(targets, numbers.Integral) and not isinstance(targets, (bool, np.bool_)):
        if targets < 1:
            raise ValueError(f"The number of targets must be >= 1, got {targets}.")
        return _default_names(int(targets) - 1, int(targets)), True, None
    elif isinstance(targets, str) or not hasattr(targets, "__iter__"):
        raise ValueError(
            "targets must be a list of names, a number of targets, a DataFrame or a fitted "
            f"estimator, got {targets!r}."
        )
    else:
        names = list(targets)
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"Target names must be str, got {names!r}.")
    if not names:
        raise ValueError("funnel_scorers needs at least one target.")
    if len(set(names)) != len(names):
        raise ValueError(f"Target names must be unique, got {names}.")
    return names, False, None


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


def _labelled(y_true, y_pred, sample_weight=None):
    """Validate (y_true, y_pred[, sample_weight]) as float64 1-D arrays; drop NaN labels.

    Returns ``(y, p, w)``; ``w`` is None without weights, otherwise rows of zero
    weight are dropped too (they change no weighted metric).
    """
    y, p = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    if y.shape != p.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {y.size} and {p.size}."
        )
    if np.isinf(y).any():
        raise ValueError("y_true must not contain infinity (NaN marks a missing label).")
    keep = ~np.isnan(y)
    if not np.isfinite(p[keep]).all():
        raise ValueError("y_pred must be finite where y_true is labelled.")
    if sample_weight is None:
        return y[keep], p[keep], None
    w = _as_1d(sample_weight, "sample_weight")
    if w.shape != y.shape:
        raise ValueError(
            f"sample_weight must have one weight per row ({y.size}), got {w.size}."
        )
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must hold finite non-negative numbers.")
    keep &= w > 0
    return y[keep], p[keep], w[keep]


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


def _default_names(n_stages, n_cols):
    cores = n_cols - n_stages
    core_names = ["core"] if cores == 1 else [f"core_{i + 1}" for i in range(cores)]
    return [f"stage_{t + 1}" for t in range(n_stages)] + core_names
