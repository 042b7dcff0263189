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

Modules
-------
- ``ranking``: :func:`gain_curve`, :func:`normalized_gini`,
  :func:`spearman`, :func:`auc` (greater is better).
- ``errors``: :func:`nrmse`, :func:`nmae`, :func:`log_loss` (lower is
  better).
- ``report``: :func:`funnel_report`, :func:`compare_reports`.
- ``calibration``: :func:`calibration_table` (mean predicted against mean
  observed per quantile bin of the prediction: deciles, a reliability diagram).
- ``scorers``: :func:`make_funnel_scorer`, :func:`funnel_scorers` and the
  metric table behind them, read through :func:`canonical_metric`, :func:`greater_is_better`
  and :func:`metric_task`; :func:`resolve_target` finds a target among the columns of y.

Every public name is importable from :mod:`sk_htlnet.metrics` itself.
"""

from . import scorers as _scorers
from .calibration import CALIBRATION_COLUMNS, calibration_table  # noqa: F401 (CALIBRATION_COLUMNS: importable, not in __all__)
from .errors import log_loss, nmae, nrmse
from .ranking import auc, gain_curve, normalized_gini, spearman
from .report import REPORT_COLUMNS, compare_reports, funnel_report  # noqa: F401 (REPORT_COLUMNS: importable, not in __all__)
from .scorers import (
    canonical_metric,
    funnel_scorers,
    greater_is_better,
    make_funnel_scorer,
    metric_task,
    resolve_target,
)

# The constants' docstrings stand here, where the API reference reads them.
STAGE_SCORERS = _scorers.STAGE_SCORERS
"""Scorer names :func:`funnel_scorers` makes for each stage, in order."""
CORE_SCORERS = _scorers.CORE_SCORERS
"""Scorer names :func:`funnel_scorers` makes for each core target, in order."""

__all__ = [
    "CORE_SCORERS",
    "STAGE_SCORERS",
    "auc",
    "calibration_table",
    "canonical_metric",
    "compare_reports",
    "funnel_report",
    "funnel_scorers",
    "gain_curve",
    "greater_is_better",
    "log_loss",
    "make_funnel_scorer",
    "metric_task",
    "nmae",
    "normalized_gini",
    "nrmse",
    "resolve_target",
    "spearman",
]
