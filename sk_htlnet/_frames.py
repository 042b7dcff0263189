"""polars input read as pandas: :func:`as_pandas`, the one conversion at the input boundary.

Every place where a user's data comes in (X in the estimator's ``_validate_X``, y in
:func:`sk_htlnet.targets.parse_targets`, the metrics' ``y_true`` / ``y_pred``) passes it through
:func:`as_pandas`, so that a polars DataFrame or Series is from then on exactly the pandas object
polars' own ``to_pandas`` makes of it: String -> object (pandas 2) or str (pandas 3) columns,
Categorical and Enum -> category, numeric nulls -> NaN, column names kept.  Boolean columns
become pandas' nullable "boolean" dtype whether or not they hold a null, so that a bool column
stays a bool column (numeric) in every chunk, where pyarrow's default would make a column with a
null an object column of True/False/None (categorical).  ``sample_weight`` is left to
scikit-learn's ``_check_sample_weight``, which reads a polars Series as it reads a pandas one.

polars is never imported here: an object can only be a polars one once the caller imported polars.
``to_pandas`` needs pyarrow; without it the error says so.
"""

import sys

import pandas as pd

__all__ = ["as_pandas"]


def _polars_kind(data):
    """"DataFrame", "Series" or "LazyFrame" when ``data`` is that polars object, else None."""
    pl = sys.modules.get("polars")
    if pl is None:
        return None
    for kind in ("DataFrame", "Series", "LazyFrame"):
        cls = getattr(pl, kind, None)
        if cls is not None and isinstance(data, cls):
            return kind
    return None


def _nullable_bool(arrow_type):
    """pyarrow ``types_mapper``: pandas' nullable "boolean" for a bool column, else the default."""
    import pyarrow

    return pd.BooleanDtype() if pyarrow.types.is_boolean(arrow_type) else None


def as_pandas(data, name="X"):
    """``data`` as pandas when it is a polars DataFrame or Series; anything else unchanged.

    Parameters
    ----------
    data : object
        What the user passed.
    name : str, default="X"
        The argument's name, for the error messages.

    Returns
    -------
    pandas.DataFrame or pandas.Series, or ``data`` itself
        A polars Series keeps its name, except the name polars gives an unnamed Series (""),
        which becomes None as a pandas Series without a name has.

    Raises
    ------
    ValueError
        If ``data`` is a polars LazyFrame (collect it first).
    ImportError
        If ``data`` is polars and pyarrow, which polars' ``to_pandas`` needs, is not installed.
    """
    kind = _polars_kind(data)
    if kind is None:
        return data
    if kind == "LazyFrame":
        raise ValueError(f"{name} is a polars LazyFrame: pass {name}.collect(), a polars DataFrame")
    try:
        converted = data.to_pandas(types_mapper=_nullable_bool)
    except ImportError as exc:
        raise ImportError(
            f"{name} is a polars {kind}, which sk_htlnet reads through polars' to_pandas; that needs "
            f"pyarrow, which is not installed ({exc}). Install it (pip install pyarrow, or the "
            "sk_htlnet[parquet] extra), or pass a pandas object"
        ) from exc
    if kind == "Series" and data.name == "":
        converted.name = None
    return converted
