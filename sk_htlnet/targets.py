"""The hybrid target y: parsing it into k stage columns and the core, its checks (one definition,
used by the estimator's fit, partial_fit, score and make_dataset and by the tuning), and the policy
that resolves ``core_loss="auto"`` and ``target_transform="auto"`` from the core target.  The
metrics check their own ``y_true`` / ``y_pred`` arrays, which may hold several cores."""

import warnings

import numpy as np
import pandas as pd

from ._frames import as_pandas
from .core_losses import core_loss as core_loss_family
from .preprocessing import user_stacklevel

__all__ = ["check_targets", "parse_targets", "resolve_core_loss", "resolve_target_transform"]


def parse_targets(y, n_rows=None):
    """Parse y into (float64 array (n, T), names, was_1d).

    A list or tuple of 1-D columns (arrays or Series, each of length ``n_rows``) is read as columns
    when its length differs from ``n_rows``; otherwise a list is read as rows, as in scikit-learn.
    A polars DataFrame or Series is read as the pandas one it converts to (``_frames.as_pandas``).
    """
    y = as_pandas(y, "y")
    if (
        isinstance(y, (list, tuple)) and n_rows is not None and len(y) != n_rows and len(y) > 0
        and all(np.ndim(c) == 1 and len(c) == n_rows for c in y)
    ):
        y = [as_pandas(c, "y") for c in y]  # polars Series columns as pandas ones
        names = [getattr(c, "name", None) for c in y]
        if any(name is None for name in names):
            names = [f"stage_{i + 1}" for i in range(len(y) - 1)] + ["core"]
        y = pd.DataFrame({str(name): np.asarray(c) for name, c in zip(names, y)})
    frame_like = isinstance(y, (pd.DataFrame, pd.Series))
    if (frame_like and any(np.iscomplexobj(np.asarray(c)) for _, c in pd.DataFrame(y).items())) or (
        not frame_like and np.iscomplexobj(np.asarray(y))
    ):
        raise ValueError("Complex data not supported: y must be real-valued")
    if isinstance(y, pd.Series):
        y = y.to_frame(name="core" if y.name is None else y.name)
        was_1d = True
    else:
        was_1d = False
    if isinstance(y, pd.DataFrame):
        duplicated = y.columns[y.columns.duplicated()].unique().tolist()
        if duplicated:
            raise ValueError(f"y has duplicate column names {duplicated}; target names must be unique")
        names = [str(c) for c in y.columns]
        if len(set(names)) < len(names):
            raise ValueError(f"y's column names {list(y.columns)} are not unique as text ({names})")
        columns = []
        for j, c in enumerate(y.columns):
            try:
                columns.append(pd.to_numeric(y[c]).to_numpy(dtype=np.float64, na_value=np.nan))
            except (TypeError, ValueError) as exc:
                role = "the core target" if j == y.shape[1] - 1 else "a stage"
                raise ValueError(f"y column {c!r} ({role}) must hold numeric values (0/1 for a stage, a number "
                                 f"for the core target): {exc}") from exc
        values = np.column_stack(columns) if columns else np.empty((len(y), 0))
        return values, names, was_1d
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y must be numeric (0/1 stages, a numeric core target): {exc}") from exc
    if arr.ndim == 1:
        return arr.reshape(-1, 1), ["core"], True
    if arr.ndim != 2:
        raise ValueError(f"y must be 1-D or 2-D (n_samples, n_stages + 1), got shape {arr.shape}")
    k = arr.shape[1] - 1
    return arr, [f"stage_{i + 1}" for i in range(k)] + ["core"], False



def check_targets(y, n_rows, incremental=False, fitted=None):
    """Parse and check y: (float64 values (n_rows, k + 1), names, was_1d).

    ``incremental`` (a later chunk of partial_fit or a warm start, and y given to a fitted model)
    accepts a stage with one class, which a chunk of a rare stage often has.  ``fitted``: the
    target names a fitted model has; y must then have as many columns, and a DataFrame y those
    names in that order.

    Raises
    ------
    ValueError
        Naming the column and what was expected: rows that differ from ``n_rows``, no column, a
        column count or names other than ``fitted``, a stage value other than 0, 1 or NaN, a stage
        without labels or (not ``incremental``) with one class, an infinite or unobserved core.
    """
    y = as_pandas(y, "y")
    values, names, was_1d = parse_targets(y, n_rows)
    if values.shape[0] != n_rows:
        raise ValueError(f"X and y have different numbers of rows: {n_rows} and {values.shape[0]}")
    if values.shape[1] == 0:
        raise ValueError("y has no columns; expected k binary stages then the core target")
    if fitted is not None and values.shape[1] != len(fitted):
        raise ValueError(f"y has {values.shape[1]} column(s), but the model was fitted on {len(fitted)} "
                         f"targets {list(fitted)}")
    if fitted is not None and isinstance(y, pd.DataFrame) and names != list(fitted):
        raise ValueError(f"y has targets {names}, but the model was fitted on {list(fitted)}")
    k = values.shape[1] - 1
    for j in range(k):
        col = values[:, j]
        seen = col[~np.isnan(col)]
        bad = ~np.isin(seen, (0.0, 1.0))
        if bad.any():
            raise ValueError(
                f"stage column {names[j]!r} must hold 0, 1 or NaN (missing); found "
                f"{np.unique(seen[bad])[:5].tolist()}. The core target must be the last column."
            )
        if seen.size == 0 and not incremental:
            raise ValueError(f"stage column {names[j]!r} has no observed label (all NaN)")
        if np.unique(seen).size < 2 and not incremental:
            raise ValueError(
                f"stage column {names[j]!r} has a single class ({np.unique(seen).tolist()}); "
                "a stage needs both 0 and 1 labels to be learned"
            )
    for j in range(1, k):
        upstream, stage = values[:, j - 1], values[:, j]
        jumped = int(np.sum((stage == 1) & (upstream == 0)))
        if jumped > 0.01 * max(np.sum(stage == 1), 1):
            warnings.warn(
                f"stage {names[j]!r} is 1 on {jumped} rows where the preceding stage {names[j - 1]!r} "
                "is 0; y's stage columns are expected in funnel order (visit before conversion). "
                "HTLNet still trains every stage on every row.",
                UserWarning, stacklevel=user_stacklevel(),
            )
    core = values[:, k]
    if np.isinf(core).any():
        raise ValueError(f"core target column {names[k]!r} contains infinite values")
    if np.isnan(core).all():
        raise ValueError(f"core target column {names[k]!r} has no observed value")
    observed = core[~np.isnan(core)]
    if not incremental and np.isin(observed, (0.0, 1.0)).all() and np.unique(observed).size == 2:
        where = "y's last column" if k else "y's only target"
        warnings.warn(
            f"the core target {names[k]!r} ({where}) holds only 0 and 1{', as the stages do' if k else ''}: it is "
            "fitted as a continuous outcome. If it is a stage, add the continuous core target (spend, "
            "revenue, ...) as y's last column; HTLNetRegressor has no stages-only mode.",
            UserWarning, stacklevel=user_stacklevel(),
        )
    return values, names, was_1d


def resolve_core_loss(core_loss, target_transform, retransformation, core):
    """core_loss with "auto" resolved: "ziln" for an amount (every core value >= 0) unless a
    transform or smearing asks for the MSE on a transformed scale; "mse" otherwise."""
    if core_loss != "auto":
        return core_loss
    amount = np.nanmin(core) >= 0
    return "ziln" if amount and target_transform == "auto" and retransformation != "smearing" else "mse"

def resolve_target_transform(target_transform, core_loss, retransformation, core, name):
    """target_transform with "auto" resolved; checks it against ``core_loss_`` and the data."""
    transform = target_transform
    loss = core_loss
    if core_loss_family(loss).likelihood:
        if transform not in ("auto", "none"):
            raise ValueError(
                f"core_loss={loss!r} models the core target in its own units; "
                f"target_transform must be 'auto' or 'none', got {transform!r}"
            )
        if retransformation == "smearing":
            raise ValueError(
                f"retransformation='smearing' corrects a log1p back-transform; core_loss={loss!r} "
                "predicts the mean directly: use 'isotonic' (recalibrate it) or 'none'"
            )
        if np.nanmin(core) < 0:
            raise ValueError(
                f"core_loss={loss!r} needs a core target >= 0, but column {name!r} has "
                f"values down to {np.nanmin(core):g}; use core_loss='mse'"
            )
        return "none"
    if transform == "auto":
        transform = "log1p" if np.nanmin(core) >= 0 else "standardize"
    return transform
