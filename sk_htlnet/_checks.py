"""Checks of the estimator's parameters and of X beyond scikit-learn's constraints, and the
bookkeeping of a continued fit (which parameters its network was built with): a mixin of
:class:`sk_htlnet._base.BaseHTLNet`."""

import contextlib
import copy
import inspect
import numbers
import os
import warnings

import numpy as np
import pandas as pd
import scipy.sparse
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_array, validate_data
from skorch.callbacks import Callback

from ._frames import as_pandas
from .preprocessing import user_stacklevel

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _same_value(a, b):
    """Whether two parameter values are equal (arrays element-wise; devices by name; None and an
    empty list of callbacks alike; objects by equality)."""
    if a is b:
        return True
    if isinstance(a, torch.device) or isinstance(b, torch.device):
        return str(a) == str(b)
    if any(x is None and isinstance(y, (list, tuple)) and not y for x, y in ((a, b), (b, a))):
        return True
    if isinstance(a, (np.ndarray, list, tuple)) or isinstance(b, (np.ndarray, list, tuple)):
        try:
            return np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
        except ValueError:
            return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


# skorch settings that HTLNetRegressor derives from its own parameters (net_kwargs may not override them)
_NET_KWARG_OWNERS = {
    "max_epochs": "max_iter", "lr": "learning_rate", "batch_size": "batch_size", "device": "device",
    "verbose": "verbose", "optimizer__weight_decay": "weight_decay", "warm_start": "warm_start",
    "train_split": "early_stopping and validation_fraction", "callbacks": "callbacks",
    "seed": "random_state", "sparse_updates": "sparse_updates", "task_names": "the targets' names",
    "gradient_strategy": "gradient_adjustment and its settings", "module": "the architecture parameters",
    "criterion": "the target and loss parameters", "dataset": "X and y", "optimizer__lr": "learning_rate",
    "iterator_train": "batch_size (the net slices its own batches)",
    "iterator_valid": "batch_size (the net slices its own batches)",
}
# skorch's display callbacks, the only ones net_kwargs may tune (``callbacks__print_log__...``): the
# others (divergence monitor, early stopping, checkpoints, the per-task history) are the estimator's
_TUNABLE_CALLBACKS = ("print_log", "epoch_timer")


def _net_kwarg_owner(key):
    """The estimator parameter(s) behind a skorch setting, or None if net_kwargs may set it."""
    if key.startswith("callbacks__"):
        name = key.split("__")[1]
        return None if name in _TUNABLE_CALLBACKS else "callbacks, n_iter_no_change, tol and checkpoint_dir"
    if key.startswith(("iterator_train", "iterator_valid")):
        return _NET_KWARG_OWNERS["iterator_train"]
    base = key.split("__", 1)[0] if key.startswith(("module__", "criterion__")) else key
    return _NET_KWARG_OWNERS.get(base)



def _check_column_labels(labels, fitted):
    """Match a DataFrame's column labels that are not all str (ints, tuples of a MultiIndex, mixed
    types) against those seen in fit, as scikit-learn does for str names; raises ValueError.

    A model fitted on an array (labels 0..p-1) accepts any labels that are not a reordering of those."""
    if labels == list(fitted) or pd.Index(labels, tupleize_cols=False).equals(pd.Index(list(fitted), tupleize_cols=False)):
        return  # (Index.equals takes NaN labels as equal, which a model file brings back as other objects)
    positional = list(fitted) == list(range(len(fitted)))
    try:
        same_set = set(labels) == set(fitted)
    except TypeError:  # unhashable labels: compare as lists only
        same_set = False
    if positional and not same_set:
        return  # fitted on an array: columns are taken by position
    if same_set:
        raise ValueError(
            f"X has the columns seen in fit in another order: fit saw {list(fitted)}, X has {labels}; "
            "select them in fit's order (X[fitted_columns])"
        )
    unseen = [c for c in labels if c not in fitted]
    missing = [c for c in fitted if c not in labels]
    raise ValueError(
        f"X's column names differ from those seen in fit: unseen at fit time {unseen[:10]}, seen at fit "
        f"time but missing {missing[:10]}"
    )


class _Checks:
    """Parameter and X checks of :class:`~sk_htlnet.HTLNetRegressor` (mixin)."""

    def _validate_X(self, X, reset):
        """scikit-learn's checks and messages: shape, complex, sample and feature counts, feature
        names (``validate_data``); a scipy sparse X is refused with what to pass instead.  A DataFrame
        keeps its columns and dtypes; a polars DataFrame is read as the pandas one it converts to
        (:func:`sk_htlnet._frames.as_pandas`)."""
        X = as_pandas(X, "X")
        if scipy.sparse.issparse(X):  # a TypeError, as scikit-learn's check_array raises
            raise TypeError(
                f"X is a scipy sparse {type(X).__name__} of shape {X.shape}, and {type(self).__name__} takes dense X: "
                "pass a DataFrame with categorical columns (the estimator embeds them itself, no one-hot encoding "
                "needed), or, after a OneHotEncoder, set sparse_output=False in the encoder or sparse_threshold=0 in "
                "the ColumnTransformer (X.toarray() densifies a sparse matrix of your own)"
            )
        min_samples = 2 if reset else 1
        if isinstance(X, pd.DataFrame):
            n, p = X.shape
            duplicated = X.columns[X.columns.duplicated()].unique().tolist()
            if duplicated:
                raise ValueError(f"X has duplicate column names {duplicated}; column names must be unique")
            if p == 0:
                raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
            if n < min_samples:
                raise ValueError(
                    f"Found array with {n} sample(s) (shape={X.shape}) while a minimum of {min_samples} is "
                    "required by HTLNetRegressor."
                )
            # scikit-learn checks str names only (and refuses mixed types): other labels (ints, tuples
            # of a MultiIndex, mixtures) are matched here, then counted positionally
            fitted = self.feature_encoder_.columns_ if not reset and hasattr(self, "feature_encoder_") else None
            if fitted is not None and not all(isinstance(c, str) for c in fitted):
                _check_column_labels(list(X.columns), fitted)
            if not all(isinstance(c, str) for c in X.columns):
                validate_data(self, X.set_axis(pd.RangeIndex(p), axis=1), reset=reset, skip_check_array=True)
                return X
        else:
            if isinstance(X, pd.Series):
                raise ValueError("X is a pandas Series, one column or one row; pass a DataFrame (for one row "
                                 "of a DataFrame X, X.iloc[[i]] keeps it a DataFrame)")
            listed = not (isinstance(self.categorical_features, str) or self.categorical_features is None)
            try:
                X = check_array(
                    X, dtype=None if listed else "numeric", ensure_all_finite="allow-nan",
                    ensure_min_samples=min_samples, estimator=self,
                )
            except ValueError as exc:
                if not any(text in str(exc) for text in ("could not convert", "arrays of bytes/strings")):
                    raise  # numpy's message for an array with strings, or scikit-learn's for a list
                names = getattr(self, "feature_names_in_", None)
                hint = (f" This model was fitted on a DataFrame with columns {list(names)[:10]}: pass X as "
                        "a DataFrame with those columns." if names is not None and not reset else
                        " Pass a DataFrame (its string, category and object columns are embedded as "
                        "categorical features) or list the categorical columns in categorical_features.")
                raise ValueError(f"X holds non-numeric values in an array ({exc}).{hint}") from None
        validate_data(self, X, reset=reset, skip_check_array=True)
        return X

    def check_params(self, *, setup=True):
        """Check the parameters as ``fit`` does, without fitting.

        Parameters
        ----------
        setup : bool, default=True
            Also run the checks scikit-learn's constraints cannot express: the device exists here,
            ``checkpoint_dir`` is a folder, callbacks are skorch callbacks, no bool passes for a
            number, real values fit a float32, ``net_kwargs`` sets nothing the estimator owns.
            False checks the constraints alone (a model file's parameters, before the device to
            load on is chosen).

        Raises
        ------
        ValueError
            Naming the parameter and what was expected (``sklearn.utils._param_validation``'s
            ``InvalidParameterError`` is a ValueError).
        """
        self._validate_params()
        if setup:
            self._check_setup()

    def checked_sizes(self):
        """The sequence parameters checked against the fitted number of stages ``n_stages_``.

        Returns
        -------
        tower_units : tuple of int
        task_weights : ndarray of float64, shape (k + 1,), or None when the parameter is None
        stage_pos_weight : ndarray of float64, shape (k,), or None when the parameter is None

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the number of stages is not known yet (no fit has parsed y).
        ValueError
            If a value does not fit ``n_stages_`` or is not finite and positive where it must be.
        """
        if not hasattr(self, "n_stages_"):
            raise NotFittedError("checked_sizes needs the fitted number of stages (n_stages_): fit first")
        raw_units = np.atleast_1d(self.tower_units)
        units = tuple(int(u) for u in raw_units) if raw_units.dtype.kind in "iuf" else ()
        if not units or min(units) < 1 or not np.array_equal(raw_units, units):
            raise ValueError(f"tower_units must be a non-empty sequence of positive ints, got {self.tower_units!r}")
        weights = None
        if self.task_weights is not None:
            weights = np.asarray(self.task_weights, dtype=np.float64).ravel()
            if (weights.size != self.n_stages_ + 1 or not np.all(np.isfinite(weights)) or (weights < 0).any()
                    or not (weights > 0).any()):
                raise ValueError(
                    f"task_weights must hold {self.n_stages_ + 1} finite non-negative numbers, not all 0 "
                    f"(one per target {self.target_names_}), got {self.task_weights!r}"
                )
        pos = None
        if self.stage_pos_weight is not None:
            pos = np.broadcast_to(np.asarray(self.stage_pos_weight, dtype=np.float64), (self.n_stages_,)) \
                if np.ndim(self.stage_pos_weight) == 0 else np.asarray(self.stage_pos_weight, dtype=np.float64)
            if pos.shape != (self.n_stages_,) or not np.all(np.isfinite(pos)) or (pos <= 0).any():
                raise ValueError(
                    f"stage_pos_weight must be a positive number or {self.n_stages_} positive numbers "
                    f"(one per stage {self.target_names_[:-1]}), got {self.stage_pos_weight!r}"
                )
        return units, weights, pos

    @contextlib.contextmanager
    def _threads(self):
        """Limit torch's intra-op threads to ``n_threads`` for the duration of a call."""
        if self.n_threads is None:
            yield
            return
        if isinstance(self.n_threads, (bool, np.bool_)):
            raise ValueError(f"n_threads must be a number, got {self.n_threads!r} (a bool)")
        previous = torch.get_num_threads()
        torch.set_num_threads(self.n_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _check_setup(self):
        """Checks of parameters that scikit-learn's constraints cannot express."""
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device={self.device!r} is not a torch device; use 'cpu' or 'cuda': {exc}") from exc
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device={self.device!r}: HTLNetRegressor runs on 'cpu' or 'cuda' devices")
        folder = None if self.checkpoint_dir is None else os.path.expanduser(os.fspath(self.checkpoint_dir))
        if folder is not None and os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"checkpoint_dir={folder!r} exists and is not a folder")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={self.device!r}, but torch.cuda.is_available() is False (no GPU, or a CPU "
                "build of torch); use device='cpu'"
            )
        for cb in self.callbacks or []:
            obj = cb[1] if isinstance(cb, tuple) and len(cb) == 2 and isinstance(cb[0], str) else cb
            if not isinstance(obj, Callback) and not (isinstance(obj, type) and issubclass(obj, Callback)):
                raise ValueError(
                    f"callbacks must hold skorch callbacks or (name, callback) tuples, got {cb!r}"
                )
        for name, constraints in self._parameter_constraints.items():  # Interval takes True for 1
            value = getattr(self, name)
            numeric = any(isinstance(c, Interval) for c in constraints) or name == "random_state"
            if isinstance(value, (bool, np.bool_)) and numeric:
                raise ValueError(f"{name} must be a number, got {value!r} (a bool)")
            real = any(isinstance(c, Interval) and c.type is numbers.Real for c in constraints)
            if real and isinstance(value, numbers.Real) and not abs(value) <= _FLOAT32_MAX:
                raise ValueError(f"{name}={value!r} does not fit the network's float32 (at most {_FLOAT32_MAX:.3g})")
        for name in ("tower_units", "task_weights", "stage_pos_weight"):  # sequences of numbers
            value = getattr(self, name)
            if np.ndim(value) == 1 and any(isinstance(v, (bool, np.bool_)) for v in value):
                raise ValueError(f"{name} must hold numbers, got {value!r} (with a bool)")
        for key in self.net_kwargs or {}:
            if key.startswith("optimizer__") and key.count("__") == 1:
                option = key.split("__", 1)[1]
                known = [p for p in inspect.signature(torch.optim.Adam).parameters if p != "params"]
                if option not in known:
                    raise ValueError(f"net_kwargs sets {key!r}, but the optimiser (torch.optim.Adam) has no "
                                     f"option {option!r}; its options are {known}")
            owner = _net_kwarg_owner(key)
            if owner is not None:
                raise ValueError(
                    f"net_kwargs sets {key!r}, which HTLNetRegressor sets itself from {owner}; pass "
                    f"{'that parameter' if ' ' in owner else owner + '='} instead"
                )

    # parameters that a continued fit (warm_start, partial_fit) still honours: the rest are built
    # into the fitted network, its optimiser, callbacks and encoding
    _CONTINUED_FIT_PARAMS = ("max_iter", "n_threads", "warm_start")

    def _params_in_net(self):
        """The parameters a continued fit cannot apply, as values (containers copied, so that an
        in-place change of, say, a task_weights list is seen; callbacks as a list of the same objects)."""
        params = {}
        for k, v in self.get_params(deep=False).items():
            if k in self._CONTINUED_FIT_PARAMS:
                continue
            if k == "callbacks":
                v = None if v is None else list(v)
            elif isinstance(v, (list, tuple, np.ndarray, dict)):
                v = copy.deepcopy(v)
            params[k] = v
        return params

    def _warn_changed_params(self):
        """Warn when a continued fit keeps a network built with other parameter values."""
        built = getattr(self, "_built_with", None)
        if built is None:
            return
        now = self._params_in_net()
        changed = sorted(k for k in built if k in now and not _same_value(built[k], now[k]))
        if changed:
            warnings.warn(
                f"{'warm_start' if self.warm_start else 'partial_fit'} continues the fitted network, which "
                f"was built with other values of {changed}: the new values take effect only in a fresh fit "
                "(fit with warm_start=False)", UserWarning, stacklevel=user_stacklevel(),
            )
