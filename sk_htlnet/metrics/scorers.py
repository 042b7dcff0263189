"""scikit-learn scorers for one target of a funnel, and the table of metrics they are built from.

:func:`make_funnel_scorer` makes the scorer of one metric on one target, :func:`funnel_scorers`
the whole set (see :mod:`sk_htlnet.metrics`). The metric table is read through
:func:`canonical_metric`, :func:`greater_is_better` and :func:`metric_task`, and a target is
found in y with :func:`resolve_target`: the interface of code that scores one target itself, such
as :func:`sk_htlnet.tuning.make_objective`.
"""

import numbers

import numpy as np
import pandas as pd
from sklearn import metrics as _sk
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .._frames import as_pandas
from ._inputs import _as_2d, _default_names
from .errors import log_loss, nmae, nrmse
from .ranking import auc, normalized_gini, spearman


_METRICS = {  # canonical name: (function, greater_is_better, task, scorer name)
    "auc": (auc, True, "stage", "auc"),
    "log_loss": (log_loss, False, "stage", "neg_log_loss"),
    "nrmse": (nrmse, False, "core", "neg_nrmse"),
    "nmae": (nmae, False, "core", "neg_nmae"),
    "normalized_gini": (normalized_gini, True, "core", "gini"),
    "spearman": (spearman, True, "core", "spearman"),
}
_ALIASES = {"neg_log_loss": "log_loss", "neg_nrmse": "nrmse", "neg_nmae": "nmae", "gini": "normalized_gini"}
# the scorer names funnel_scorers makes for each stage and each core target (documented in
# sk_htlnet/metrics/__init__.py)
STAGE_SCORERS = ("auc", "neg_log_loss")
CORE_SCORERS = ("neg_nrmse", "neg_nmae", "gini", "spearman")


def canonical_metric(metric):
    """The canonical name of a funnel metric, with the scorer aliases resolved.

    Parameters
    ----------
    metric : str
        A metric name of :func:`make_funnel_scorer`: a canonical name, or one of the aliases
        ``"neg_log_loss"``, ``"neg_nrmse"``, ``"neg_nmae"`` (the names of the losses' negated
        scorers) and ``"gini"``.

    Returns
    -------
    name : {"auc", "log_loss", "nrmse", "nmae", "normalized_gini", "spearman"}
        The name of the function of :mod:`sk_htlnet.metrics` that computes the metric.

    Raises
    ------
    ValueError
        If ``metric`` is not a known name; the message lists the known names.

    Examples
    --------
    >>> from sk_htlnet.metrics import canonical_metric
    >>> canonical_metric("gini"), canonical_metric("neg_nrmse"), canonical_metric("auc")
    ('normalized_gini', 'nrmse', 'auc')
    """
    name = _ALIASES.get(metric, metric) if isinstance(metric, str) else None
    if name not in _METRICS:
        known = sorted({*_METRICS, *_ALIASES})
        raise ValueError(f"Unknown metric {metric!r}; choose one of {known}.")
    return name


def greater_is_better(metric):
    """Whether a greater value of the metric itself is better: a score (True) or a loss (False).

    Parameters
    ----------
    metric : str
        A metric name or alias, as for :func:`canonical_metric`. An alias names the metric, not
        its scorer: ``"neg_nrmse"`` is NRMSE, a loss, although its scorer (which negates it) is
        greater-is-better like every scorer.

    Returns
    -------
    greater_is_better : bool
        True for :func:`auc`, :func:`normalized_gini` and :func:`spearman`; False for
        :func:`log_loss`, :func:`nrmse` and :func:`nmae`.

    Raises
    ------
    ValueError
        If ``metric`` is unknown, as :func:`canonical_metric` raises it.

    Examples
    --------
    >>> from sk_htlnet.metrics import greater_is_better
    >>> greater_is_better("gini"), greater_is_better("neg_nrmse")
    (True, False)
    """
    return _METRICS[canonical_metric(metric)][1]


def metric_task(metric):
    """The kind of target a metric scores: a 0/1 stage or the continuous core target.

    Parameters
    ----------
    metric : str
        A metric name or alias, as for :func:`canonical_metric`.

    Returns
    -------
    task : {"stage", "core"}
        ``"stage"`` for :func:`auc` and :func:`log_loss`; ``"core"`` for :func:`nrmse`,
        :func:`nmae`, :func:`normalized_gini` and :func:`spearman`.

    Raises
    ------
    ValueError
        If ``metric`` is neither a metric's name nor an alias.

    Examples
    --------
    >>> from sk_htlnet.metrics import metric_task
    >>> metric_task("neg_log_loss"), metric_task("spearman")
    ('stage', 'core')
    """
    return _METRICS[canonical_metric(metric)][2]


def resolve_target(y, target):
    """Position of one target of a funnel among the columns of y, selected by position or name.

    The rule by which a scorer of :func:`make_funnel_scorer` finds its column at scoring time.

    Parameters
    ----------
    y : DataFrame, Series or array-like of shape (n_samples, n_targets) or (n_samples,)
        The targets in funnel order. A str target is looked up in a DataFrame's column names (a
        Series' name); an ndarray has no names. A 1-D y is one column.
    target : int or str
        A position (negative counts from the end: -1 is the last, the core target) or a name.

    Returns
    -------
    position : int
        The column's position, in ``[0, n_targets)``.

    Raises
    ------
    ValueError
        If ``target`` is neither an int nor a str, a name is not among y's names (the message
        lists them) or names several columns, or a position is out of range.

    Examples
    --------
    >>> import pandas as pd
    >>> from sk_htlnet.metrics import resolve_target
    >>> y = pd.DataFrame({"visit": [0, 1], "spend": [0.0, 5.0]})
    >>> resolve_target(y, "spend"), resolve_target(y, -1), resolve_target(y, 0)
    (1, 1, 0)
    """
    target = _check_target(target)
    y = as_pandas(y, "y")
    if isinstance(y, pd.DataFrame):
        names, n = [str(c) for c in y.columns], y.shape[1]
    elif isinstance(y, pd.Series):
        names, n = ([] if y.name is None else [str(y.name)]), 1
    else:
        shape = np.shape(y)
        names, n = [], (shape[1] if len(shape) == 2 else 1)
    if isinstance(target, str):
        if names.count(target) == 1:
            return names.index(target)
        if target in names:
            raise ValueError(f"Target {target!r} is ambiguous: y has several columns named {target!r}.")
        where = (
            f"y's available names are {names}"
            if names
            else f"y is {type(y).__module__}.{type(y).__qualname__} without column names "
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
    metric = canonical_metric(metric)
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
    y_true = as_pandas(y_true, "y_true")
    j = resolve_target(y_true, target)
    t, p = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(
            f"y has shape {t.shape} but the prediction has shape {p.shape}; a funnel scorer needs "
            "one prediction column per column of y."
        )
    return _METRICS[metric][0](t[:, j], p[:, j], sample_weight=sample_weight)


def _check_target(target):
    if isinstance(target, str):
        return target
    if isinstance(target, numbers.Integral) and not isinstance(target, (bool, np.bool_)):
        return int(target)
    raise ValueError(f"target must be an int (a position) or a str (a name), got {target!r}.")


def _scorer_targets(targets):
    """(names, select by position?, fitted n_stages or None) for funnel_scorers."""
    targets = as_pandas(targets, "targets")
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
