"""Turn a DataFrame or array into the integer ids and floats the shared embedding reads.

Categorical columns get a vocabulary of the values seen in ``fit``; id 0 of every field is the
out-of-vocabulary row (values first seen at predict time), id 1 the missing-value row.  Numeric
columns are standardised with the training mean and standard deviation and clipped to the training
range (so a value far outside it is treated like the nearest value seen, as a tree would; it cannot
blow the network up); missing numeric values
(NaN / ``pd.NA``) are flagged and embedded by a learned per-field vector, so they need no imputation
(as HistGradientBoosting handles missing values natively).  With ``numeric_encoding="quantile"`` or
``"piecewise_linear"`` the encoder also learns bin edges per numeric column from training quantiles;
"quantile" then encodes every numeric column as a categorical field of bucket ids.  Everything is
vectorised through pandas hash tables and NumPy: no per-row Python.
"""

import collections.abc
import numbers
import os
import sys
import warnings

import numpy as np
import pandas as pd

OOV_ID = 0
MISSING_ID = 1
ID_DTYPE = np.int32  # per-field ids (half the memory of int64); the embedding adds its int64 offsets
# the estimator's numeric encodings: "quantile" is made here (bucket ids, categorical fields); the
# others are embeddings of sk_htlnet.modules.SharedEmbedding (NUMERIC_EMBEDDINGS)
NUMERIC_ENCODINGS = ("linear", "quantile", "piecewise_linear", "periodic")


def _is_numeric_column(series):
    dtype = series.dtype
    return (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)) and not isinstance(
        dtype, pd.CategoricalDtype
    )


def _as_object_index(series):
    """Values of a column as an object Index (category values, not codes; exact for big ints)."""
    return pd.Index(series.to_numpy(dtype=object), dtype=object)


def _vocabulary(col):
    """Distinct non-missing values of a column in order of first appearance, as an object Index.

    A categorical column is read through its codes (the same values and order, without turning
    every row into a Python object)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = pd.unique(col.cat.codes.to_numpy())
        return _as_object_index(pd.Series(col.cat.categories.take(codes[codes >= 0])))
    return _as_object_index(col.dropna()).unique()


def _value_kind(value):
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (numbers.Number, np.number)):
        return "number"
    return "str" if isinstance(value, str) else type(value).__name__


_LARGE = 1e150  # magnitudes whose squares overflow float64


def magnitude_unit(low, high):
    """The unit in which statistics of values in [low, high] are taken: their largest magnitude when
    it exceeds 1e150 (squares and differences would overflow float64), else 1.0."""
    unit = max(abs(float(low)), abs(float(high)))
    return unit if unit > _LARGE else 1.0


def mean_and_std(observed):
    """Mean and standard deviation (floats) of a float64 array of finite values, without overflow
    for values up to the float64 limit (taken in units of :func:`magnitude_unit`)."""
    unit = magnitude_unit(observed.min(), observed.max())
    scaled = observed / unit if unit != 1.0 else observed
    return float(unit * scaled.mean()), float(unit * np.sqrt(scaled.var()))


def standardise(x, mean, scale):
    """``(x - mean) / scale`` (float64 array), also where the difference of two values near the
    float64 limit would overflow (then ``x / scale - mean / scale``).  NaN stays NaN."""
    if max(abs(mean), scale) <= _LARGE:
        return (x - mean) / scale
    return x / scale - mean / scale


def _hashable(column, function, values):
    """``function(values)``, with a clear error for a categorical column holding unhashable values
    (dicts, lists, sets), whose lookup raises a bare TypeError."""
    try:
        return function(values)
    except TypeError as exc:
        kinds = sorted({type(v).__name__ for v in pd.Series(values).dropna()
                        if not isinstance(v, collections.abc.Hashable)})
        raise ValueError(
            f"categorical column {column!r} holds unhashable values ({', '.join(kinds) or exc}); "
            "categories must be hashable: str, numbers, bool or tuples of them (convert with .astype(str))"
        ) from exc


def _is_label_of(value, columns):
    """Whether ``value`` (not a bool) is one of the column labels (False for an unhashable value)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        return value in columns
    except TypeError:
        return False


def user_stacklevel():
    """The ``stacklevel`` that makes a warning point at the user's line: the first frame outside
    this package, skorch and scikit-learn (for ``warnings.warn`` called by the caller of this)."""
    skip = (os.path.dirname(os.path.abspath(__file__)), os.sep + "skorch" + os.sep, os.sep + "sklearn" + os.sep)
    frame, level = sys._getframe(1), 1
    while frame is not None and any(part in frame.f_code.co_filename for part in skip):
        frame, level = frame.f_back, level + 1
    return level


def _warn_type_mismatch(column, vocab, value):
    """Warn when no value of a column was seen in fit and its values have another type than fit's
    (say int categories in fit and strings now): every row would silently get the unseen row.  A
    vocabulary of mixed types (pandas' inferred type "mixed...") is never a mismatch."""
    if not len(vocab) or vocab.inferred_type.startswith("mixed"):
        return
    if _value_kind(value) != _value_kind(vocab[0]):
        warnings.warn(
            f"column {column!r}: none of its values was seen in fit, which saw {_value_kind(vocab[0])} values "
            f"(e.g. {vocab[0]!r}), and this column holds {_value_kind(value)} values (e.g. {value!r}); every "
            "row maps to the out-of-vocabulary embedding. Convert the column to fit's type.",
            UserWarning, stacklevel=user_stacklevel(),
        )


def _table_rows(vocabularies):
    """Embedding rows of each categorical field: its vocabulary, the out-of-vocabulary and the
    missing-value row."""
    return [len(v) + 2 for v in vocabularies]


def numeric_embedding(numeric_encoding):
    """The :class:`~sk_htlnet.modules.SharedEmbedding` encoding of the numeric fields left after
    ``numeric_encoding`` (one of ``NUMERIC_ENCODINGS``): "linear" for "quantile", whose fields
    become categorical bucket ids here (no numeric field is left), else the encoding itself."""
    return "linear" if numeric_encoding == "quantile" else numeric_encoding


class FeatureEncoder:
    """Fit vocabularies and scalers on X; transform X into (cat, num, num_missing) arrays.

    X is a DataFrame or a 2-D array already validated by the estimator (shape, sparse, complex and
    column checks are scikit-learn's, in :class:`~sk_htlnet.HTLNetRegressor`).

    Parameters
    ----------
    categorical_features : "from_dtype", sequence of str or int, or boolean mask
        "from_dtype": DataFrame columns whose dtype is not numeric or bool (category, string, object)
        are categorical; for arrays, none are.  Otherwise the labels (DataFrame only, any hashable
        type; a value that is a label names that column), positions or boolean mask of the
        categorical columns.
    numeric_encoding : {"linear", "quantile", "piecewise_linear", "periodic"}, default="linear"
        See :class:`~sk_htlnet.modules.SharedEmbedding`.  "quantile" and "piecewise_linear" learn
        ``bin_edges_``; "quantile" turns numeric columns into bucket ids (one id per bucket, id 0
        unused, id 1 for a missing value).
    n_bins : int, default=16
        Maximum number of quantile bins per numeric column (fewer when the column has fewer
        distinct values).

    Attributes
    ----------
    categorical_mask_ : ndarray of bool (n_features,)
    vocabularies_ : list of pandas.Index, one per categorical column
    cardinalities_ : list of int, embedding rows per categorical column (vocabulary + OOV + missing)
    mean_, scale_ : ndarray of float64 (n_numeric,)
    min_, max_ : ndarray of float64 (n_numeric,), training range of each numeric column (0 if never observed)
    bin_edges_ : list of ndarray of float64, one per numeric column
        Sorted distinct quantile edges in the column's units (empty lists for "linear" and "periodic").
    """

    def __init__(self, categorical_features="from_dtype", numeric_encoding="linear", n_bins=16):
        self.categorical_features = categorical_features
        self.numeric_encoding = numeric_encoding
        self.n_bins = n_bins

    # ---- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _as_frame(X):
        if isinstance(X, pd.DataFrame):
            return X, True
        return pd.DataFrame(np.asarray(X)), False

    def _resolve_mask(self, frame, is_frame):
        n = frame.shape[1]
        for c in frame.columns:
            kind = frame[c].dtype.kind
            if kind in "mMc":
                what = {"m": "timedelta", "M": "datetime", "c": "complex"}[kind]
                raise ValueError(
                    f"column {c!r} has a {what} dtype ({frame[c].dtype}), which HTLNetRegressor does not "
                    "embed; convert it to numbers (e.g. days since a reference date) or to categories"
                )
        spec = self.categorical_features
        if isinstance(spec, str) and spec == "from_dtype":
            if not is_frame:
                return np.zeros(n, dtype=bool)
            return np.array([not _is_numeric_column(frame[c]) for c in frame.columns], dtype=bool)
        if spec is None:
            return np.zeros(n, dtype=bool)
        spec = list(spec)
        if spec and all(isinstance(s, (bool, np.bool_)) for s in spec):
            if len(spec) != n:
                raise ValueError(
                    f"categorical_features as a boolean mask must have length {n} (n_features), got {len(spec)}"
                )
            return np.asarray(spec, dtype=bool)
        mask = np.zeros(n, dtype=bool)
        for s in spec:
            if is_frame and _is_label_of(s, frame.columns):  # a label of any hashable type, first
                mask[frame.columns.get_loc(s)] = True
            elif isinstance(s, str):
                if not is_frame or s not in frame.columns:
                    raise ValueError(f"categorical_features names column {s!r}, which is not in X")
                mask[frame.columns.get_loc(s)] = True
            elif isinstance(s, numbers.Integral):
                if not -n <= s < n:
                    raise ValueError(f"categorical_features index {s} is out of range for {n} features")
                mask[s] = True
            else:
                raise ValueError(
                    "categorical_features must be 'from_dtype', column names, indices or a boolean mask; "
                    f"got element {s!r}"
                )
        return mask

    @staticmethod
    def _numeric_values(frame, columns):
        if not columns:
            return np.zeros((len(frame), 0))
        out = np.empty((len(frame), len(columns)))
        for j, c in enumerate(columns):
            col = frame[c]
            try:
                out[:, j] = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"column {c!r} is treated as numeric but holds non-numeric values; mark it "
                    "categorical with categorical_features or give it a category/string dtype"
                ) from exc
        if np.isinf(out).any():
            bad = [columns[j] for j in np.flatnonzero(np.isinf(out).any(axis=0))]
            raise ValueError(f"numeric column(s) {bad} contain infinite values; use NaN for missing")
        return out

    # ---- API ------------------------------------------------------------------------------------
    def fit_transform(self, X):
        """Learn vocabularies and scalers from X and encode it."""
        frame, is_frame = self._as_frame(X)
        self._columns = list(frame.columns)
        self.categorical_mask_, self.vocabularies_ = self._mask_and_vocabularies(frame, is_frame)
        cols = list(frame.columns)
        self._cat_cols = [c for c, m in zip(cols, self.categorical_mask_) if m]
        self._num_cols = [c for c, m in zip(cols, self.categorical_mask_) if not m]
        self.cardinalities_ = _table_rows(self.vocabularies_)
        values = self._numeric_values(frame, self._num_cols)
        m = values.shape[1]
        self.mean_, std, self.min_, self.max_ = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
        self.bin_edges_ = [np.zeros(0)] * m
        levels = np.linspace(0.0, 1.0, int(self.n_bins) + 1)
        for j in range(m):  # one column at a time: temporaries of n values, not n * m
            col = values[:, j]
            observed = col[~np.isnan(col)]
            if observed.size == 0:
                continue
            self.min_[j], self.max_[j] = observed.min(), observed.max()
            # values near the float64 limit (1e300) would overflow the squares and differences:
            # their statistics are taken in units of the largest magnitude
            self.mean_[j], std[j] = mean_and_std(observed)
            unit = magnitude_unit(self.min_[j], self.max_[j])
            scaled = observed / unit if unit != 1.0 else observed
            if self.numeric_encoding in ("quantile", "piecewise_linear"):
                self.bin_edges_[j] = np.unique(unit * np.quantile(scaled, levels))
        self.scale_ = np.where(std > 0, std, 1.0)
        return self._encode(frame, values)

    def set_columns(self, columns):
        """Give an encoder whose fitted statistics were restored (a model file) its column labels.

        ``categorical_mask_``, ``vocabularies_`` (one per categorical column), ``mean_``,
        ``scale_``, ``min_``, ``max_`` and ``bin_edges_`` (one per numeric column) must be set;
        ``cardinalities_`` is derived from the vocabularies.

        Parameters
        ----------
        columns : sequence
            The column labels, in the order of ``categorical_mask_``.

        Returns
        -------
        self : FeatureEncoder

        Raises
        ------
        ValueError
            If a fitted statistic is missing, or ``columns`` or a statistic does not fit
            ``categorical_mask_``.
        """
        missing = [n for n in ("categorical_mask_", "vocabularies_", "mean_", "scale_", "min_", "max_", "bin_edges_")
                   if not hasattr(self, n)]
        if missing:
            raise ValueError(f"set_columns needs the fitted statistics {missing} set first")
        columns, mask = list(columns), [bool(m) for m in self.categorical_mask_]
        n_cat = sum(mask)
        sizes = {"columns": (len(columns), len(mask)), "vocabularies_": (len(self.vocabularies_), n_cat)}
        sizes.update({n: (len(getattr(self, n)), len(mask) - n_cat)
                      for n in ("mean_", "scale_", "min_", "max_", "bin_edges_")})
        wrong = [f"{n} has {got} (expected {want})" for n, (got, want) in sizes.items() if got != want]
        if wrong:
            raise ValueError(f"set_columns: for a mask of {len(mask)} columns ({n_cat} categorical): {wrong}")
        self.cardinalities_ = _table_rows(self.vocabularies_)
        self._columns = columns
        self._cat_cols = [c for c, m in zip(columns, mask) if m]
        self._num_cols = [c for c, m in zip(columns, mask) if not m]
        return self

    def _mask_and_vocabularies(self, frame, is_frame):
        """(categorical mask, one vocabulary per categorical column) of a frame, as ``fit_transform`` learns them."""
        mask = self._resolve_mask(frame, is_frame)
        return mask, [_hashable(c, _vocabulary, frame[c]) for c, m in zip(frame.columns, mask) if m]

    def shard_vocabularies(self, X):
        """What ``fit_transform`` would learn of X's categories, without fitting or encoding: the
        categorical mask (ndarray of bool (n_features,)) and one vocabulary (pandas.Index) per
        categorical column; a distributed fit merges the shards' with :meth:`set_vocabularies`."""
        return self._mask_and_vocabularies(*self._as_frame(X))

    def set_vocabularies(self, per_shard):
        """Replace the fitted vocabularies by the union of several shards' (a distributed fit).

        Parameters
        ----------
        per_shard : sequence of lists of pandas.Index
            Each shard's ``vocabularies_`` (one Index per categorical column, as this encoder's),
            in shard order; the union keeps the first shard's values first, each in order of first
            appearance.

        Returns
        -------
        self : FeatureEncoder

        Raises
        ------
        ValueError
            If a shard has another number of categorical columns.
        """
        n = len(self.vocabularies_)
        if any(len(v) != n for v in per_shard):
            raise ValueError(f"set_vocabularies: every shard needs {n} vocabularies, got {[len(v) for v in per_shard]}")
        union = []
        for j in range(n):
            merged = per_shard[0][j] if per_shard else self.vocabularies_[j]
            for other in per_shard[1:]:
                merged = merged.append(other[j].difference(merged, sort=False))
            union.append(merged)
        self.vocabularies_ = union
        self.cardinalities_ = _table_rows(union)
        return self

    @property
    def columns_(self):
        """The column labels seen in ``fit``, in order (list; ints 0..p-1 for an array)."""
        return list(self._columns)

    def embedding_spec(self):
        """What :class:`~sk_htlnet.modules.SharedEmbedding` needs: a dict with ``cardinalities``
        (list of int), ``n_numeric`` (int), ``numeric_encoding`` (str) and ``numeric_edges`` (the bin
        edges on the standardised scale of ``num``, or None)."""
        cardinalities = [int(c) for c in self.cardinalities_]
        n_numeric, edges = len(self.mean_), None
        if self.numeric_encoding == "quantile":
            cardinalities += [max(len(e) - 1, 1) + 2 for e in self.bin_edges_]
            n_numeric = 0
        elif self.numeric_encoding == "piecewise_linear":
            edges = [standardise(e, m, s).tolist() for e, m, s in zip(self.bin_edges_, self.mean_, self.scale_)]
        return {"cardinalities": cardinalities, "n_numeric": n_numeric,
                "numeric_encoding": numeric_embedding(self.numeric_encoding), "numeric_edges": edges}

    def transform(self, X):
        """Encode X, whose columns the caller has checked against those seen in fit (by position)."""
        frame, _ = self._as_frame(X)
        frame = frame.set_axis(self._columns, axis=1)
        return self._encode(frame, self._numeric_values(frame, self._num_cols))

    def _encode(self, frame, values):
        n = len(frame)
        cat = np.empty((n, len(self._cat_cols)), dtype=ID_DTYPE)
        for j, (c, vocab) in enumerate(zip(self._cat_cols, self.vocabularies_)):
            col = frame[c]
            if isinstance(col.dtype, pd.CategoricalDtype):
                # look up each category present once, then gather by the column's codes (-1 = missing,
                # which indexes the lookup's last entry)
                codes = col.cat.codes.to_numpy()
                seen = np.zeros(len(col.cat.categories) + 1, dtype=bool)
                seen[codes] = True
                present = np.flatnonzero(seen[:-1])
                found = vocab.get_indexer(_as_object_index(pd.Series(col.cat.categories.take(present))))
                lookup = np.full(len(col.cat.categories) + 1, OOV_ID, dtype=ID_DTYPE)
                lookup[present] = np.where(found >= 0, found + 2, OOV_ID)
                lookup[-1] = MISSING_ID
                cat[:, j] = lookup[codes]
                if present.size and (found < 0).all():
                    _warn_type_mismatch(c, vocab, col.cat.categories[present[0]])
                continue
            codes = _hashable(c, vocab.get_indexer, _as_object_index(col))
            ids = np.where(codes >= 0, codes + 2, OOV_ID)
            missing = pd.isna(col).to_numpy()
            ids[missing] = MISSING_ID
            cat[:, j] = ids
            if not missing.all() and (codes[~missing] < 0).all():
                _warn_type_mismatch(c, vocab, col.to_numpy()[np.argmin(missing)])
        missing = np.isnan(values)
        if self.numeric_encoding == "quantile":
            buckets = np.empty(values.shape, dtype=ID_DTYPE)
            for j, edges in enumerate(self.bin_edges_):  # bucket b of [edges[b], edges[b + 1]) -> id b + 2
                clipped = np.clip(values[:, j], self.min_[j], self.max_[j])
                buckets[:, j] = np.searchsorted(edges[1:-1], clipped, side="right") + 2
            buckets[missing] = MISSING_ID
            return {"cat": np.concatenate([cat, buckets], axis=1), "num": np.zeros((n, 0), dtype=np.float32),
                    "num_missing": np.zeros((n, 0), dtype=bool)}
        num = np.empty(values.shape, dtype=np.float32)
        for j in range(values.shape[1]):  # one column at a time: temporaries of n values
            clipped = np.clip(values[:, j], self.min_[j], self.max_[j])
            num[:, j] = np.where(missing[:, j], 0.0, standardise(clipped, self.mean_[j], self.scale_[j]))
        return {"cat": cat, "num": num, "num_missing": missing}
