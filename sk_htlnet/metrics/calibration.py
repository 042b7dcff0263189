"""Calibration by quantile bins of the prediction: mean predicted against mean observed per bin.

:func:`calibration_table` is the table behind a reliability (calibration) diagram, for a stage
probability (the observed mean is the stage's rate) as for the core target (the observed mean
spend); a decile table with ``n_bins=10``. Missing labels and zero weights are dropped as
described in :mod:`sk_htlnet.metrics`.
"""

import numbers

import numpy as np
import pandas as pd

from ._inputs import _labelled

CALIBRATION_COLUMNS = ["n_rows", "weight", "pred_min", "pred_max", "mean_predicted", "mean_observed"]
"""Columns of :func:`calibration_table`, in order."""


def calibration_table(y_true, y_pred, *, n_bins=10, sample_weight=None):
    """Mean prediction against mean observed value in quantile bins of the prediction.

    The labelled rows are cut into ``n_bins`` bins of (about) equal weight by
    the quantiles of ``y_pred``, the lowest predictions in bin 1, and each bin
    reports its mean prediction beside its mean ``y_true``: a well calibrated
    model has the two equal in every bin. The quantiles are those of the
    (weighted) empirical distribution of ``y_pred`` (the inverted CDF), so
    with ``n`` distinct predictions and ``n`` divisible by ``n_bins`` every bin
    holds exactly ``n / n_bins`` rows. Rows with tied predictions always share
    a bin: where ties span a quantile, bins merge (like :func:`pandas.qcut`
    with ``duplicates="drop"``) and the table has fewer than ``n_bins`` rows,
    a constant prediction giving a single bin. For a 0/1 target and no
    weights, the two means are what scikit-learn's ``calibration_curve``
    returns with ``strategy="quantile"``, up to its handling of ties.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Observed values: a stage's 0/1 labels (the bin's mean is then its
        observed rate) or a continuous target. NaN marks a missing label;
        those rows are dropped.
    y_pred : array-like of shape (n_samples,)
        Finite predictions on the scale of ``y_true`` (stage probabilities, or
        the core prediction in y's units).
    n_bins : int, default=10
        Number of quantile bins asked for, at least 1 (10: deciles).
    sample_weight : array-like of shape (n_samples,), default=None
        Finite non-negative row weights: the bins hold equal shares of the
        total weight and the means are weighted. Rows of zero weight are
        dropped. Unit weights give the unweighted table.

    Returns
    -------
    table : pandas.DataFrame of shape (n_nonempty_bins, 6)
        Indexed by bin number ``1 .. n_nonempty_bins`` (int64, index name
        ``"bin"``), in increasing order of prediction, with columns
        ``["n_rows", "weight", "pred_min", "pred_max", "mean_predicted",
        "mean_observed"]``: ``n_rows`` (int64) counts the bin's labelled rows,
        ``weight`` is their total weight (``n_rows`` without
        ``sample_weight``), ``pred_min`` and ``pred_max`` bound the bin's
        predictions, and the two means (float64) are weighted by
        ``sample_weight``.

    Raises
    ------
    ValueError
        If the shapes differ, ``y_true`` holds an infinity, ``y_pred`` is not
        finite where ``y_true`` is labelled, ``sample_weight`` is negative or
        not finite, ``n_bins`` is not an integer of at least 1, or no row is
        labelled (with a positive weight).

    See Also
    --------
    gain_curve : How well the same predictions rank the core target.
    funnel_report : The metrics of every target, in one table.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_htlnet.metrics import calibration_table
    >>> y = np.array([0, 0, 1, 0, 1, 1])
    >>> p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    >>> table = calibration_table(y, p, n_bins=2)
    >>> table[["n_rows", "mean_predicted", "mean_observed"]]  # doctest: +NORMALIZE_WHITESPACE
         n_rows  mean_predicted  mean_observed
    bin
    1         3             0.2       0.333333
    2         3             0.7       0.666667
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer of at least 1, got {n_bins!r}.")
    y, p, w = _labelled(y_true, y_pred, sample_weight)
    if y.size == 0:
        raise ValueError("calibration_table needs at least one labelled row (y_true is all NaN).")
    if w is None:
        w = np.ones_like(y)
    order = np.argsort(p, kind="stable")
    cumulative = np.cumsum(w[order])
    total = cumulative[-1]
    # inner edges: the smallest prediction at which the weight at or below it reaches k / n_bins
    levels = np.arange(1, n_bins) * total
    inner = p[order][np.searchsorted(cumulative * n_bins, levels, side="left")]
    inner = np.unique(inner)
    # bin k holds the predictions in (edge_{k-1}, edge_k]; empty bins (a top edge equal to the
    # largest prediction) are dropped and the rest numbered from 1
    codes = np.searchsorted(inner, p, side="left")
    used, codes = np.unique(codes, return_inverse=True)
    k = used.size
    frame = pd.DataFrame({"bin": codes + 1, "w": w, "p": p, "wp": w * p, "wy": w * y})
    groups = frame.groupby("bin", sort=True)
    sums = groups[["w", "wp", "wy"]].sum()
    table = pd.DataFrame(
        {
            "n_rows": groups.size().to_numpy(dtype=np.int64),
            "weight": sums["w"].to_numpy(dtype=np.float64),
            "pred_min": groups["p"].min().to_numpy(dtype=np.float64),
            "pred_max": groups["p"].max().to_numpy(dtype=np.float64),
            "mean_predicted": (sums["wp"] / sums["w"]).to_numpy(dtype=np.float64),
            "mean_observed": (sums["wy"] / sums["w"]).to_numpy(dtype=np.float64),
        },
        index=pd.Index(np.arange(1, k + 1, dtype=np.int64), name="bin"),
        columns=CALIBRATION_COLUMNS,
    )
    return table
