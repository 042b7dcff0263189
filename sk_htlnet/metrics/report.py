"""The funnel report: every target of a funnel scored with the metrics that suit it (HTLNet §5)."""

import numbers

import numpy as np
import pandas as pd

from .._frames import as_pandas
from ._inputs import _as_2d, _default_names
from .errors import log_loss, nmae, nrmse
from .ranking import auc, normalized_gini, spearman

REPORT_COLUMNS = ["task", "AUC", "log_loss", "NRMSE", "NMAE", "Gini", "Spearman"]
"""Columns of :func:`funnel_report`, in order."""


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
    y_true, y_pred = as_pandas(y_true, "y_true"), as_pandas(y_pred, "y_pred")
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


def compare_reports(reports):
    """Put the :func:`funnel_report` of several models side by side.

    Parameters
    ----------
    reports : dict of str to pandas.DataFrame
        Model name -> its ``funnel_report``, usually on the same test rows.  Every report must
        score the same targets (the same names, in any order) with the same task each: reports
        whose targets differ (a report of arrays, with rows ``stage_1 .. core``, and one of a
        DataFrame's columns) are refused rather than joined into a table half NaN; name the
        targets alike with ``funnel_report``'s ``target_names``.

    Returns
    -------
    pandas.DataFrame of float64
        Indexed by (``target``, ``metric``), targets in the first report's order, one column per
        model in the order given; the metrics a target's task does not have (AUC for the core,
        Gini for a stage) are left out.

    Raises
    ------
    ValueError
        If ``reports`` is empty, a value is not a ``funnel_report`` frame, or the reports' targets
        or their tasks differ (the message names them per report).

    Examples
    --------
    >>> import numpy as np
    >>> from sk_htlnet.metrics import compare_reports, funnel_report
    >>> y = np.array([[0, 0.0], [1, 2.0], [1, 5.0], [0, 0.0]])
    >>> a = funnel_report(y, np.array([[0.2, 0.1], [0.7, 2.5], [0.6, 4.0], [0.3, 0.2]]))
    >>> b = funnel_report(y, np.array([[0.5, 1.0], [0.5, 1.0], [0.5, 1.0], [0.5, 1.0]]))
    >>> compare_reports({"model": a, "constant": b}).loc["core", "Gini"]
    model       1.0
    constant    0.0
    Name: (core, Gini), dtype: float64
    """
    if not isinstance(reports, dict) or not reports:
        raise ValueError("reports must be a non-empty dict of model name -> funnel_report")
    columns, first = {}, None
    for name, report in reports.items():
        if not isinstance(report, pd.DataFrame) or list(report.columns) != REPORT_COLUMNS:
            raise ValueError(f"reports[{name!r}] is not a funnel_report (a DataFrame with columns {REPORT_COLUMNS})")
        first = first or (name, report)
        _check_same_targets(first, (name, report))
        columns[name] = report.drop(columns="task").stack(future_stack=True)
    table = pd.concat(columns, axis=1).dropna(how="all").astype(np.float64)
    table.index.names = ["target", "metric"]
    return table


def _check_same_targets(first, other):
    """Refuse a report whose targets, or whose tasks for them, are not those of the first report."""
    (name, report), (first_name, first_report) = other, first
    targets, theirs = list(first_report.index), list(report.index)
    missing = [t for t in targets if t not in theirs]
    extra = [t for t in theirs if t not in targets]
    if missing or extra:
        differ = " and ".join([f"lacks {missing}"] * bool(missing) + [f"has {extra} besides"] * bool(extra))
        raise ValueError(
            f"compare_reports needs reports on the same targets: reports[{name!r}] has {theirs}, "
            f"reports[{first_name!r}] has {targets} (reports[{name!r}] {differ}); name the targets alike with "
            "funnel_report's target_names= (a report of arrays names them stage_1 .. core, one of DataFrames "
            "after their columns)"
        )
    tasks = dict(zip(first_report.index, first_report["task"]))
    other_tasks = [f"{t!r} ({task}, not {tasks[t]})" for t, task in zip(report.index, report["task"])
                   if task != tasks[t]]
    if other_tasks:
        raise ValueError(
            f"compare_reports needs the same task per target: reports[{name!r}] scores "
            f"{', '.join(other_tasks)} unlike reports[{first_name!r}]; pass both funnel_reports the same n_stages"
        )
