"""Input checks shared by the metrics: 1-D/2-D float arrays, missing labels, weights, defaults.

Private to :mod:`sk_htlnet.metrics`: every metric validates ``(y_true, y_pred, sample_weight)``
with :func:`_labelled`, reports an undefined value with :func:`_undefined`, and the report and
the scorers name unnamed targets with :func:`_default_names`.
"""

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning

from .._frames import as_pandas


def _undefined(message):
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)
    return np.nan


def _as_array(values, name):
    values = as_pandas(values, name)  # a polars DataFrame or Series as pandas
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


def _default_names(n_stages, n_cols):
    cores = n_cols - n_stages
    core_names = ["core"] if cores == 1 else [f"core_{i + 1}" for i in range(cores)]
    return [f"stage_{t + 1}" for t in range(n_stages)] + core_names
