"""HTLNetRegressor: HTLNet for hybrid funnel targets as a scikit-learn estimator (DESIGN.md)."""

import contextlib
import copy
import numbers
import os
import re
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import r2_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, validate_data
from skorch.callbacks import Callback, EarlyStopping

from .checkpoint import (
    AtomicCheckpoint, VerifiedLoadInitState, checkpoint_folder, checkpoint_lock, data_digest,
)
from .gradient import GRADIENT_ADJUSTMENTS, get_strategy
from .modules import ARCHITECTURES
from .modules.embedding import NUMERIC_ENCODINGS
from .divergence import DivergenceMonitor, TrainingDivergedError, dead_network_error, find_monitor
from .net import CORE_LOSSES, FunnelDataset, FunnelValidSplit, HybridLoss, HybridNet, core_mean
from .preprocessing import FeatureEncoder, mean_and_std, standardise, user_stacklevel

_EPS_RATE = 1e-4
_CALIBRATION_ROWS = 200_000  # training rows the retransformation is fitted on, at most
_ALIVE_ROWS = 10_000  # training rows the dead-network check forwards when the retransformation does not
# target_transform="none": the factor of the optimised core MSE on z is the core's variance up to this
# cap (Adam's second moments and the gradient rule's squared norms stay within float32); beyond it the
# stages' share of the shared embedding's gradient is already below float32's resolution (1e-12 of the
# core's), so the capped and the raw objective train alike.  The history reports the raw squared error.
_MAX_CORE_LOSS_SCALE = 1e12
_MAX_RAW_STD = 1e150  # its square must be a float64
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# parameters a resumed checkpoint may change: the rest are in its fingerprint (checkpoint_fingerprint)
_RESUMABLE_PARAMS = ("max_iter", "n_threads", "verbose", "learning_rate", "weight_decay", "warm_start",
                     "checkpoint_dir", "callbacks", "device")


def _json_safe(value):
    """A parameter value as JSON data, equal for equal values: numbers, str, bool and None as they
    are (non-finite floats as text), arrays and tuples as lists, dicts with str keys, classes and
    functions by qualified name, anything else by repr without memory addresses."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else repr(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


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


class CoreTransform:
    """Transform of the core target before the MSE (HTLNet §3 decision) and its inverse.

    ``"standardize"``: z = (y - mean) / std; the inverse is exact, and a network trained with the MSE
    on z estimates the conditional mean.  ``"none"`` (the paper's raw squared error): the same z, so
    the network's outputs stay of order 1 at any scale of y, but the loss is the squared error in y's
    units, ``(y_hat - y)^2 = std^2 (z_hat - z)^2`` (:attr:`loss_scale` is ``std^2``); the two differ
    only in how much the core's gradient weighs against the stages'.  With a likelihood core loss
    (``calibrate=True``) the estimator sets ``std`` to the training mean and ``mean`` to 0 (amounts in
    units of their mean) and the loss scale is 1.  ``"log1p"``: z = log(1 + y); the network
    then estimates E[log(1 + y) | x], and ``expm1`` of it is not the conditional mean, so the inverse
    is a *retransformation* fitted on the training rows:

    - ``"isotonic"`` (default): the conditional mean as a monotone function of z_hat, estimated by
      centered isotonic regression of y on z_hat (Oron and Flournoy, 2017: isotonic regression whose
      blocks are replaced by points at their centres and joined linearly), so the calibration adapts
      to zero inflation and heteroscedastic tails; a negligible term (1e-9 of the target's range per
      unit of z_hat) keeps the network's ranking where the map is flat;
    - ``"smearing"``: Duan's (1983) smearing estimate E[y | x] = s exp(z_hat) - 1 with
      s = mean(exp(z_i - z_hat_i)), which assumes homoscedastic residuals on the log scale and
      compresses predictions on zero-inflated data;
    - ``"none"``: ``expm1(z_hat)``, the uncorrected back-transform (a median-like value, biased low).

    With a likelihood core loss (``calibrate=True``; kind "none", z in units of the training mean)
    ``"isotonic"`` likewise recalibrates the distribution's mean on the training rows, and "none"
    keeps it as the model computes it.

    Predictions are clipped to the range of the training core values (a conditional mean lies within
    the support: no negative expected spend from a model trained on amounts >= 0).
    """

    def __init__(self, kind, retransformation="isotonic", calibrate=False):
        self.kind = kind
        self.retransformation = retransformation
        self.calibrate = calibrate
        self.mean = 0.0
        self.std = 1.0
        self.smearing = 1.0
        self.knots_z = None
        self.knots_y = None
        self.low = -np.inf
        self.high = np.inf

    def _check(self, observed):
        if self.kind == "log1p" and observed.size and observed.min() <= -1:
            raise ValueError(
                "target_transform='log1p' needs a core target > -1 (amounts are usually >= 0); "
                f"the smallest core value is {observed.min():g}. Use 'standardize' instead."
            )

    def fit(self, y):
        observed = y[~np.isnan(y)]
        self.low, self.high = float(observed.min()), float(observed.max())
        self._check(observed)
        if (self.kind == "standardize" or (self.kind == "none" and not self.calibrate)) and observed.size:
            self.mean, self.std = mean_and_std(observed)  # without overflow up to the float64 limit
            self.std = self.std or 1.0
            if self.kind == "none" and not self.std <= _MAX_RAW_STD:
                raise ValueError(
                    f"target_transform='none' reports the squared error in the core target's units, which "
                    f"a float64 cannot hold for a core target with a standard deviation of {self.std:.3g} "
                    f"(above {_MAX_RAW_STD:g}); use target_transform='standardize' or rescale the target"
                )
        return self

    @property
    def loss_scale(self):
        """Factor from the squared error on z to the squared error in y's units: ``std^2`` for
        ``"none"`` without a likelihood, else 1 (float)."""
        return self.std ** 2 if self.kind == "none" and not self.calibrate else 1.0

    def update(self, y):
        """A later chunk of training rows (``partial_fit``, warm start): the same check as ``fit``,
        and the clipping range widened to its values; the scale is kept."""
        observed = y[~np.isnan(y)]
        self._check(observed)
        if observed.size:
            self.low, self.high = min(self.low, float(observed.min())), max(self.high, float(observed.max()))
        return self

    def forward(self, y):
        if self.kind == "log1p":
            return np.log1p(y)
        return standardise(y, self.mean, self.std)

    def inverse(self, z):
        if self.knots_z is not None:
            y = np.interp(z, self.knots_z, self.knots_y)
            y = y + 1e-9 * (self.high - self.low) * (z - self.knots_z[0])
        elif self.kind == "log1p":
            y = self.smearing * np.exp(z) - 1.0
        else:
            with np.errstate(over="ignore"):  # beyond float64 only near its limit: clipped below
                y = z * self.std + self.mean
        return np.clip(y, self.low, self.high)

    @property
    def fitted_on_predictions(self):
        """Whether :meth:`fit_retransformation` uses the network's predictions (else it only resets)."""
        return self.retransformation != "none" and (self.kind == "log1p" or self.calibrate)

    def fit_retransformation(self, y_true, z_pred, sample_weight=None):
        """Fit the log1p inverse (or the likelihood mean's calibration) on training rows: ``y_true`` in
        y's units, ``z_pred`` the network's (for a likelihood, its mean in units of the training mean)."""
        self.knots_z = self.knots_y = None
        if not self.fitted_on_predictions:
            return
        ok = ~np.isnan(y_true)
        w = np.ones(ok.sum()) if sample_weight is None else np.asarray(sample_weight, dtype=float)[ok]
        if self.retransformation == "smearing" and self.kind == "log1p":
            smearing = _weighted_nanmean(np.exp(np.log1p(y_true) - z_pred), sample_weight)
            self.smearing = smearing if np.isfinite(smearing) else 1.0
            return
        self.knots_z, self.knots_y = _centered_isotonic(z_pred[ok], y_true[ok], w)


def _centered_isotonic(x, y, w):
    """Knots of centered isotonic regression of y on x (Oron and Flournoy, 2017).

    Returns float64 arrays (knots_x, knots_y), both non-decreasing, knots_x strictly increasing: one
    knot per block of the weighted isotonic fit, at the block's weighted mean x and value.
    """
    keep = w > 0
    x, y, w = x[keep], y[keep], w[keep]
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    fitted = IsotonicRegression(increasing=True).fit(x, y, sample_weight=w).predict(x)
    new_block = np.r_[True, np.diff(fitted) != 0]
    block = np.cumsum(new_block) - 1
    centres = np.bincount(block, weights=x * w) / np.bincount(block, weights=w)
    values = fitted[new_block]
    centres, first = np.unique(centres, return_index=True)  # guard against equal centres
    return centres, values[first]


def _core_prior(z, core_loss, sample_weight=None):
    """Initial core-head bias for a likelihood loss, from the scaled core target z >= 0 (NaN = missing).

    "tweedie": log of the mean.  "ziln": [logit of P(z > 0), mean and softplus^-1 of the standard
    deviation of log z over the positive rows].
    """
    w = np.ones_like(z) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    ok = ~np.isnan(z)
    if core_loss == "tweedie":
        return float(np.log(max(np.average(z[ok], weights=w[ok]) if w[ok].sum() > 0 else 1.0, 1e-6)))
    positive = ok & (z > 0)
    rate = np.clip(np.average(positive[ok], weights=w[ok]) if w[ok].sum() > 0 else 0.5, _EPS_RATE, 1 - _EPS_RATE)
    mu, sigma = 0.0, 1.0
    if positive.any() and w[positive].sum() > 0:
        log_z = np.log(z[positive])
        mu = float(np.average(log_z, weights=w[positive]))
        sigma = float(np.sqrt(np.average((log_z - mu) ** 2, weights=w[positive]))) or 1.0
    sigma = max(sigma, 1e-2)
    return [float(np.log(rate / (1 - rate))), mu, float(np.log(np.expm1(sigma)))]


def _weighted_nanmean(values, sample_weight=None):
    """Mean of the non-NaN values, weighted if weights are given (float)."""
    ok = ~np.isnan(values)
    w = None if sample_weight is None else sample_weight[ok]
    if not ok.any() or (w is not None and w.sum() == 0):
        return float("nan")
    return float(np.average(values[ok], weights=w))


def _target_frame(y, n_rows=None):
    """Parse y into (float64 array (n, T), names, was_1d).

    A list or tuple of 1-D columns (arrays or Series, each of length ``n_rows``) is read as columns
    when its length differs from ``n_rows``; otherwise a list is read as rows, as in scikit-learn.
    """
    if (
        isinstance(y, (list, tuple)) and n_rows is not None and len(y) != n_rows and len(y) > 0
        and all(np.ndim(c) == 1 and len(c) == n_rows for c in y)
    ):
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
        try:
            values = np.column_stack(
                [pd.to_numeric(y[c]).to_numpy(dtype=np.float64, na_value=np.nan) for c in y.columns]
            ) if y.shape[1] else np.empty((len(y), 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"y must hold numeric values (0/1 stages, a numeric core target): {exc}") from exc
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


class HTLNetRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """HTLNet for hybrid targets: k binary funnel stages, then a continuous core target.

    Tang et al., "Touch the Core: Exploring Task Dependence Among Hybrid Targets for
    Recommendation", RecSys 2024 (arXiv 2403.17442).  Shared field embeddings feed one tower per
    task; each stage's prediction is turned into a label embedding by Gumbel-softmax sampling (LEU)
    and passed downstream with the stage's representation through attention (IFU); the shared
    embedding's gradient is arbitrated by a rule anchored on the core regression task.  Backed by a
    skorch ``NeuralNet`` (``net_``).

    Parameters
    ----------
    architecture : {"htlnet", "single_task", "shared_bottom", "mmoe", "ple", "esmm", "aitm"}, \
            default="htlnet"
        The model (:mod:`sk_htlnet.modules`): HTLNet, or one of the paper's baselines with the same
        embedding and tower sizes: independent single-task DNNs, Shared-Bottom, MMoE, PLE, and our
        adaptations of ESMM (entire-space products for the stages, a plain core tower) and AITM
        (attention transfer along the chain, a regression head for the core) to hybrid targets.
    gradient_adjustment : {"htlnet", "none", "pcgrad", "metabalance", "uncertainty"}, default="htlnet"
        How the task gradients on the shared embedding are combined: HTLNet §4's rule, the plain
        sum, PCGrad (Yu et al., 2020), MetaBalance with the core as target task (He et al., 2022,
        using ``relax_factor``), or Kendall et al.'s (2018) learned uncertainty loss weights.  Has no
        effect with ``architecture="single_task"`` (nothing is shared).
    categorical_features : "from_dtype", list of column labels or int, or bool mask, default="from_dtype"
        Categorical columns, embedded natively.  "from_dtype": DataFrame columns of category,
        string or object dtype; an array has none unless listed here.  A listed value that is one of
        a DataFrame's column labels (str, int, a MultiIndex tuple) names that column; other ints are
        positions.
    embedding_dim : int, default=16
        Size of each field's embedding.
    numeric_encoding : {"linear", "quantile", "piecewise_linear", "periodic"}, \
            default="piecewise_linear"
        How numeric columns enter the shared embedding (standardised and clipped to the training
        range first): "linear" ``x W_j + b_j`` (the paper's sketch); "quantile" one learned row per
        training-quantile bucket (``n_bins``), like a categorical field; "piecewise_linear" Gorishniy et al.'s (2022)
        piecewise-linear encoding over the same quantile bins, then a linear map; "periodic" their
        PLR embedding (trainable sin/cos frequencies, linear, ReLU).  Bin edges are learned in
        ``fit`` from the training rows and reused by ``predict``.  Missing values always get their
        own learned vector.  The default won on the real funnels of docs/comparison.md.
    n_bins : int, default=16
        Maximum number of quantile bins per numeric column for "quantile" and "piecewise_linear"
        (columns with fewer distinct values get fewer).
    tower_units : tuple of int, default=(128, 64, 32)
        Hidden widths of every task tower (AITM's sizes).
    label_embedding_dim : int, default=16
        Size of the LEU's label vectors.
    fusion_dim : int, default=32
        Output size of each IFU.
    fusion : {"attention", "concat"}, default="attention"
        IFU operator (HTLNet §2.4).
    label_sampling : {"hard", "relaxed"}, default="hard"
        LEU sampling (straight-through hard sample, or relaxed Gumbel-softmax), HTLNet §2.3.
    tau : float, default=1.0
        Gumbel-softmax temperature (> 0).
    relax_factor : float, default=0.1
        gamma of HTLNet §4, in [0, 1].
    clip_ratio : float, default=10.0
        C of HTLNet §4, >= 1.
    target_transform : {"auto", "none", "standardize", "log1p"}, default="auto"
        Transform of the core target inside the MSE (``core_loss_ == "mse"``).  "auto" is "log1p"
        when every observed core value is >= 0 (amounts: zero-inflated, heavy-tailed) and
        "standardize" otherwise; with a likelihood core loss it is "none".
        Predictions are always in the target's units and estimate the conditional mean (with
        "log1p", through ``retransformation``).  "none" is the paper's squared error in the
        target's own units at any scale: the network's output is scaled by the core's training
        standard deviation, and the loss is its square times the standardised error (the factor
        capped at 1e12 for float32, with no effect on training; the history reports the raw error).
    core_loss : {"auto", "mse", "ziln", "tweedie"}, default="auto"
        Loss of the core target.  "auto" is "ziln" when every observed core value is >= 0,
        ``target_transform`` is "auto" and ``retransformation`` is not "smearing" (any explicit
        transform, "none" included, or smearing asks for the paper's MSE); else "mse" (so a signed
        target still fits).  "mse" (the paper's) on the ``target_transform`` scale; "ziln" the
        zero-inflated lognormal likelihood (Wang et al., 2019: a probability of a positive amount
        and lognormal parameters ``mu``, ``sigma``, whose mean is ``p exp(mu + sigma^2 / 2)``);
        "tweedie" the Tweedie likelihood with log link and power ``tweedie_power`` (mean
        ``exp(eta)``).  ``predict`` returns that mean, recalibrated by ``retransformation``.  "ziln"
        and "tweedie" need a core target >= 0 and model it in its own units (``target_transform``
        must be "auto" or "none"; internally it is divided by its training mean for
        conditioning).  Which combination estimates what: the user guide page
        "Choosing a target transform and a core loss".
    tweedie_power : float in (1, 2), default=1.5
        Power of the Tweedie variance function (near 1: Poisson-like; near 2: Gamma-like).
    retransformation : {"isotonic", "smearing", "none"}, default="isotonic"
        With ``target_transform="log1p"``, how predictions on the log scale are mapped back to the
        conditional mean, fitted on the training rows (a seeded sample of 200,000 when there are
        more): "isotonic" (centered isotonic regression of y on the network's output; adapts to
        zero inflation, keeps the ranking), "smearing" (Duan's 1983 estimate, a single factor;
        biased when the log-scale residuals are not homoscedastic, as on zero-inflated amounts) or
        "none" (``expm1``, uncorrected: biased low).
        With ``core_loss`` "ziln" or "tweedie": "isotonic" recalibrates the distribution's mean
        the same way, "none" returns it as computed ("smearing" is refused).  No effect with
        "standardize" or "none" transforms of the MSE (their inverse is exact).
    task_weights : array-like of shape (k + 1,), default=None
        Static weights of the task losses in the optimised sum; None means all 1.
    stage_pos_weight : float or array-like of shape (k,), default=None
        Weight of the positive class in each stage's log loss (one value for all stages, or one
        per stage); None means 1.  Values above 1 make a rare stage's positives count more, at the
        price of calibration: the predicted probabilities then estimate the odds multiplied by the
        weight, not P(stage = 1 | x).
    dropout : float, default=0.0
        Dropout after each tower layer.
    n_experts : int, default=4
        Experts of MMoE; PLE uses ``max(1, n_experts // 2)`` task-specific experts per task and as
        many shared experts, on two extraction levels.
    label_embedding, representation_transfer, stop_gradient : bool, default=True
        HTLNet's ablation switches (the paper's "without LEU", "without the IFU representation
        path", "without stop-gradient").
    gradient_projection, gradient_rescaling : bool, default=True
        Ablations of the gradient rule: "without projection", "without magnitude rule".
    learning_rate : float, default=1e-3
        Adam step size.
    weight_decay : float, default=0.0
        Adam's L2 penalty (with ``sparse_updates``, on every parameter but the embedding tables).
    sparse_updates : bool, default=True
        Train the embedding tables with ``torch.optim.SparseAdam`` (lazy Adam: a step updates only
        the rows of the categories present in the batch, and their moments) and the rest with Adam.
        A step then costs O(batch) instead of O(number of categories), which keeps an epoch linear
        in the rows when fields have millions of categories (docs/performance.md).  False trains the
        tables with dense Adam like every other parameter (the paper's setting; absent rows then
        keep moving with their momentum).
    batch_size : int, default=1024
        Rows per optimisation step.
    max_iter : int, default=30
        Maximum number of epochs.
    early_stopping : "auto" or bool, default="auto"
        Stop when the validation loss stops improving and restore the best weights; "auto" enables
        it when there are more than 10,000 rows.
    validation_fraction : float, default=0.1
        Share of the training rows held out for early stopping (stratified on funnel depth, never
        on the core target).
    n_iter_no_change : int, default=5
        Patience in epochs.
    tol : float, default=1e-4
        Minimum absolute decrease of the validation loss that counts as an improvement.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, the validation split, the shuffle and the Gumbel noise; an int makes
        two fits bit-identical on CPU.  The global torch seed is not touched.
    device : str, default="cpu"
        Torch device, e.g. "cuda".
    n_threads : int or None, default=None
        Number of CPU threads torch may use during ``fit`` and ``predict`` (restored afterwards);
        None leaves torch's setting (by default, one per core).  Set ``n_threads=1`` when a search
        runs several fits at once (``GridSearchCV(..., n_jobs=2)``) so the processes do not
        oversubscribe the cores.
    verbose : int, default=0
        0 is silent; 1 prints skorch's per-epoch table.
    warm_start : bool, default=False
        Continue training the fitted net on the next ``fit`` instead of starting afresh.  The net
        keeps what it was built with (architecture, encoding, optimiser, callbacks): a continued
        fit (or ``partial_fit``) honours a new ``max_iter`` and ``n_threads`` only, and warns
        naming any other parameter changed since the fit that built the net.
    checkpoint_dir : str or path-like, default=None
        If set (a leading ``~`` is the home folder), the net's weights, optimiser state and
        history are written to this folder after every epoch, each epoch as new files written
        atomically (temporary file, fsync, rename), then a ``manifest.json`` with their SHA-256
        digests and the fit's fingerprint, then the previous epoch's files are deleted
        (:mod:`sk_htlnet.checkpoint`), so that a process killed at any instant leaves the last
        complete epoch.  The fingerprint is the net's settings, every parameter but ``max_iter``,
        ``n_threads``, ``verbose``, ``learning_rate``, ``weight_decay``, ``warm_start``,
        ``checkpoint_dir``, ``callbacks`` and ``device``, and a SHA-256 of the training data (the
        encoded rows, the raw targets, the encoder's statistics, vocabularies and column labels).
        A later ``fit`` (or first ``partial_fit``) with the same data and fingerprinted parameters
        resumes from it and runs the remaining ``max_iter`` epochs, with the current
        ``learning_rate`` and ``weight_decay``, after checking the manifest, the digests and that
        the loaded weights equal the files; a checkpoint that fails a check (a missing, truncated
        or altered file, a fingerprint that differs, whose message names the parameters or says
        the training data differ, or one written with the other ``sparse_updates``) raises
        ``ValueError`` naming the folder, and is never resumed in part.  Files of an epoch after
        the first without a manifest (a lost manifest) are refused too; a folder without a manifest
        holding nothing or only files of epoch 1 (a fit killed in its first epoch) holds no
        complete epoch: the fit starts afresh there.  While a fit runs it holds the folder's lock
        (``checkpoint.lock``, released by the operating system if the process dies): a second fit
        on the same folder raises ``ValueError``; a folder removed or replaced during the fit
        stops it with ``OSError`` when the epoch ends.  A continued fit (``warm_start``, later
        ``partial_fit`` calls) keeps the fingerprint of the fit that built the net.  None writes
        nothing.  The resumed fit is not bit-identical to an uninterrupted one (the shuffle and
        Gumbel generators restart).
    callbacks : list of skorch callbacks or (name, callback) tuples, default=None
        Extra callbacks for the skorch net.
    net_kwargs : dict, default=None
        skorch double-underscore settings applied to the net, e.g. ``{"optimizer__betas": (0.9, 0.99)}``.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when X is a DataFrame
    target_names_ : list of str
        Names of the k stages and the core target, in funnel order.
    n_stages_ : int
        Number k of binary stages.
    target_transform_ : str
        The transform used ("auto" resolved; "none" for ``core_loss`` "ziln" and "tweedie").
    core_loss_ : str
        The core loss used ("auto" resolved).
    net_ : HybridNet
        The fitted skorch net.
    history_ : skorch.History
        Per-epoch records: ``train_loss``, ``valid_loss`` (monitored totals: stage BCEs plus the core
        MSE over the transformed core's training variance, or the likelihood core loss as is), and
        per task ``train_loss_<name>``, ``valid_loss_<name>`` (each task's optimised loss), plus
        skorch's ``dur`` and ``epoch``.
    n_iter_ : int
        Epochs run.
    feature_encoder_ : sk_htlnet.preprocessing.FeatureEncoder
        The fitted encoding of X's columns (vocabularies, bin edges, missing flags).
    core_transform_ : CoreTransform
        The fitted transform of the core target to the scale the loss sees, and back (with the
        isotonic retransformation's knots when ``retransformation="isotonic"``).

    Examples
    --------
    >>> from sk_htlnet import HTLNetRegressor
    >>> from sk_htlnet.datasets import load_hillstrom
    >>> X, Y = load_hillstrom()
    >>> est = HTLNetRegressor(max_iter=2, random_state=0).fit(X, Y)
    >>> est.predict(X).shape
    (64000, 3)
    """

    _parameter_constraints = {
        "architecture": [StrOptions(set(ARCHITECTURES))],
        "gradient_adjustment": [StrOptions(set(GRADIENT_ADJUSTMENTS))],
        "categorical_features": [StrOptions({"from_dtype"}), "array-like", None],
        "embedding_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "numeric_encoding": [StrOptions(set(NUMERIC_ENCODINGS))],
        "n_bins": [Interval(numbers.Integral, 2, None, closed="left")],
        "tower_units": ["array-like"],
        "label_embedding_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "fusion_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "fusion": [StrOptions({"attention", "concat"})],
        "label_sampling": [StrOptions({"hard", "relaxed"})],
        "tau": [Interval(numbers.Real, 0, None, closed="neither")],
        "relax_factor": [Interval(numbers.Real, 0, 1, closed="both")],
        "clip_ratio": [Interval(numbers.Real, 1, None, closed="left")],
        "target_transform": [StrOptions({"auto", "none", "standardize", "log1p"})],
        "core_loss": [StrOptions({"auto", *CORE_LOSSES})],
        "tweedie_power": [Interval(numbers.Real, 1, 2, closed="neither")],
        "retransformation": [StrOptions({"isotonic", "smearing", "none"})],
        "task_weights": ["array-like", None],
        "stage_pos_weight": [Interval(numbers.Real, 0, None, closed="neither"), "array-like", None],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "n_experts": [Interval(numbers.Integral, 1, None, closed="left")],
        "label_embedding": ["boolean"],
        "representation_transfer": ["boolean"],
        "stop_gradient": ["boolean"],
        "gradient_projection": ["boolean"],
        "gradient_rescaling": ["boolean"],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "sparse_updates": ["boolean"],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
        "callbacks": [list, None],
        "net_kwargs": [dict, None],
    }

    def __init__(
        self,
        *,
        architecture="htlnet",
        gradient_adjustment="htlnet",
        categorical_features="from_dtype",
        embedding_dim=16,
        numeric_encoding="piecewise_linear",
        n_bins=16,
        tower_units=(128, 64, 32),
        label_embedding_dim=16,
        fusion_dim=32,
        fusion="attention",
        label_sampling="hard",
        tau=1.0,
        relax_factor=0.1,
        clip_ratio=10.0,
        target_transform="auto",
        core_loss="auto",
        tweedie_power=1.5,
        retransformation="isotonic",
        task_weights=None,
        stage_pos_weight=None,
        dropout=0.0,
        n_experts=4,
        label_embedding=True,
        representation_transfer=True,
        stop_gradient=True,
        gradient_projection=True,
        gradient_rescaling=True,
        learning_rate=1e-3,
        weight_decay=0.0,
        sparse_updates=True,
        batch_size=1024,
        max_iter=30,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=5,
        tol=1e-4,
        random_state=None,
        device="cpu",
        n_threads=None,
        verbose=0,
        warm_start=False,
        checkpoint_dir=None,
        callbacks=None,
        net_kwargs=None,
    ):
        self.architecture = architecture
        self.gradient_adjustment = gradient_adjustment
        self.categorical_features = categorical_features
        self.embedding_dim = embedding_dim
        self.numeric_encoding = numeric_encoding
        self.n_bins = n_bins
        self.tower_units = tower_units
        self.label_embedding_dim = label_embedding_dim
        self.fusion_dim = fusion_dim
        self.fusion = fusion
        self.label_sampling = label_sampling
        self.tau = tau
        self.relax_factor = relax_factor
        self.clip_ratio = clip_ratio
        self.target_transform = target_transform
        self.core_loss = core_loss
        self.tweedie_power = tweedie_power
        self.retransformation = retransformation
        self.task_weights = task_weights
        self.stage_pos_weight = stage_pos_weight
        self.dropout = dropout
        self.n_experts = n_experts
        self.label_embedding = label_embedding
        self.representation_transfer = representation_transfer
        self.stop_gradient = stop_gradient
        self.gradient_projection = gradient_projection
        self.gradient_rescaling = gradient_rescaling
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.sparse_updates = sparse_updates
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.verbose = verbose
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
        self.callbacks = callbacks
        self.net_kwargs = net_kwargs

    # ---- validation -----------------------------------------------------------------------------
    def _validate_X(self, X, reset):
        """scikit-learn's checks and messages: shape, sparse, complex, sample and feature counts,
        feature names (``validate_data``).  A DataFrame keeps its columns and dtypes."""
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
            listed = not (isinstance(self.categorical_features, str) or self.categorical_features is None)
            X = check_array(
                X, dtype=None if listed else "numeric", ensure_all_finite="allow-nan",
                ensure_min_samples=min_samples, estimator=self,
            )
        validate_data(self, X, reset=reset, skip_check_array=True)
        return X

    def _check_targets(self, y, n_rows, incremental=False):
        """Parse and check y; ``incremental`` (a later chunk of partial_fit or a warm start) accepts
        a stage with one class, which a chunk of a rare stage often has."""
        values, names, was_1d = _target_frame(y, n_rows)
        if values.shape[0] != n_rows:
            raise ValueError(f"X and y have different numbers of rows: {n_rows} and {values.shape[0]}")
        if values.shape[1] == 0:
            raise ValueError("y has no columns; expected k binary stages then the core target")
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
                    UserWarning, stacklevel=3,
                )
        core = values[:, k]
        if np.isinf(core).any():
            raise ValueError(f"core target column {names[k]!r} contains infinite values")
        if np.isnan(core).all():
            raise ValueError(f"core target column {names[k]!r} has no observed value")
        return values, names, was_1d

    def _check_sizes(self):
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # k stages + the core; 1-D y is plain regression
        tags.target_tags.single_output = True
        tags.input_tags.allow_nan = True  # missing numeric values (and labels) are supported
        tags.input_tags.categorical = True
        tags.input_tags.string = True  # string / object / category DataFrame columns are embedded
        return tags

    # ---- fit --------------------------------------------------------------------------------------
    def _net_spec(self, y_transformed, sample_weight=None):
        """Module and criterion settings derived from the data (plain Python values, JSON-able)."""
        units, weights, pos = self._check_sizes()
        k = self.n_stages_
        means = [_weighted_nanmean(y_transformed[:, j], sample_weight) for j in range(k + 1)]
        rates = np.clip(np.asarray(means[:k]), _EPS_RATE, 1 - _EPS_RATE)
        # with a positive-class weight w the loss is minimised by log(w p / (1 - p))
        priors = np.log(rates / (1 - rates)) + (np.log(pos) if pos is not None else 0.0)
        core = y_transformed[:, k]
        raw_scale = self.core_transform_.loss_scale  # "none": the squared error in the core's units
        loss_scale = min(raw_scale, _MAX_CORE_LOSS_SCALE)
        core_var = (_weighted_nanmean((core - means[k]) ** 2, sample_weight) or 1.0) * loss_scale
        core_prior = float(means[k])
        if self.core_loss_ != "mse":
            core_var = 1.0  # likelihoods are already free of the target's units
            core_prior = _core_prior(core, self.core_loss_, sample_weight)
        embedding = self.feature_encoder_.embedding_spec()
        module = dict(
            cardinalities=embedding["cardinalities"],
            n_numeric=embedding["n_numeric"],
            numeric_encoding=embedding["numeric_encoding"],
            numeric_edges=embedding["numeric_edges"],
            n_stages=k,
            embedding_dim=int(self.embedding_dim),
            tower_units=list(units),
            dropout=float(self.dropout),
            stage_logit_priors=[float(v) for v in np.atleast_1d(priors)] if k else [],
            core_prior=core_prior,
        )
        if self.architecture == "htlnet":
            module.update(
                label_embedding_dim=int(self.label_embedding_dim),
                fusion_dim=int(self.fusion_dim),
                fusion=self.fusion,
                label_sampling=self.label_sampling,
                tau=float(self.tau),
                label_embedding=bool(self.label_embedding),
                representation_transfer=bool(self.representation_transfer),
                stop_gradient=bool(self.stop_gradient),
            )
        elif self.architecture == "mmoe":
            module["n_experts"] = int(self.n_experts)
        elif self.architecture == "ple":
            module["n_experts"] = max(1, int(self.n_experts) // 2)
        criterion = dict(
            n_stages=k,
            core_scale=float(core_var),
            core_loss_scale=float(loss_scale),
            core_report_scale=float(raw_scale / loss_scale),
            task_weights=None if weights is None else weights.tolist(),
            pos_weight=None if pos is None else pos.tolist(),
            uncertainty=self.gradient_adjustment == "uncertainty",
            core_loss=self.core_loss_,
            tweedie_power=float(self.tweedie_power),
        )
        return {"architecture": self.architecture, "module": module, "criterion": criterion}

    def _checkpoint_fingerprint(self, spec, dataset, encoder, targets, target_names, seed):
        """What a checkpoint records of its fit, to resume only the same one: the net's spec, the
        parameters but those a resumed fit may change (``_RESUMABLE_PARAMS``; random_state as
        given, or the seed a RandomState drew), and a SHA-256 of the training data (the encoded
        tensors, the raw targets, the encoder's statistics, vocabularies and column labels)."""
        params = {k: _json_safe(v) for k, v in self.get_params(deep=False).items() if k not in _RESUMABLE_PARAMS}
        if not (self.random_state is None or isinstance(self.random_state, numbers.Integral)):
            params["random_state"] = f"{type(self.random_state).__name__} drawing seed {seed}"
        arrays = [("cat", dataset.cat), ("num", dataset.num), ("num_missing", dataset.num_missing),
                  ("y", dataset.y), ("sample_weight", dataset.sample_weight), ("targets", targets),
                  ("categorical_mask", encoder.categorical_mask_), ("mean", encoder.mean_),
                  ("scale", encoder.scale_), ("min", encoder.min_), ("max", encoder.max_)]
        arrays += [(f"bin_edges[{j}]", e) for j, e in enumerate(encoder.bin_edges_)]
        labels = [("columns", encoder.columns_), ("targets", list(target_names))]
        labels += [(f"vocabulary[{j}]", list(v)) for j, v in enumerate(encoder.vocabularies_)]
        data = {"sha256": data_digest(arrays, labels), "rows": len(dataset)}
        return {**spec, "params": params, "data": data}

    def _make_net(self, spec, seed, early, checkpoint_settings=None):
        """The skorch net for a spec from :meth:`_net_spec` (not yet initialised); its checkpoint
        (with ``checkpoint_dir``) records ``checkpoint_settings`` (:meth:`_checkpoint_fingerprint`),
        or the spec alone when None."""
        # first of all callbacks but skorch's defaults: a diverged epoch is caught before early
        # stopping, a checkpoint or the user's callbacks see it (sk_htlnet.divergence)
        priors = list(spec["module"]["stage_logit_priors"]) + list(np.atleast_1d(spec["module"]["core_prior"]))
        callbacks = [("divergence_monitor", DivergenceMonitor([float(v) for v in priors]))]
        if early:
            callbacks.append(
                ("early_stopping", EarlyStopping(
                    monitor="valid_loss", patience=self.n_iter_no_change, threshold=self.tol,
                    threshold_mode="abs", load_best=True, sink=self._sink,
                ))
            )
        if self.checkpoint_dir is not None:
            checkpoint = AtomicCheckpoint(
                os.path.expanduser(os.fspath(self.checkpoint_dir)),
                settings=spec if checkpoint_settings is None else checkpoint_settings,
                embedding_optimizer=bool(self.sparse_updates),
                sink=self._sink,
            )
            callbacks += [("checkpoint", checkpoint), ("resume", VerifiedLoadInitState(checkpoint))]
        callbacks += list(self.callbacks or [])
        k = spec["module"]["n_stages"]
        net = HybridNet(
            ARCHITECTURES[spec["architecture"]],
            **{f"module__{key}": value for key, value in spec["module"].items()},
            criterion=HybridLoss,
            **{f"criterion__{key}": value for key, value in spec["criterion"].items()},
            optimizer=torch.optim.Adam,
            optimizer__weight_decay=self.weight_decay,
            lr=self.learning_rate,
            batch_size=self.batch_size,
            max_epochs=self.max_iter,
            train_split=FunnelValidSplit(self.validation_fraction, k, seed) if early else None,
            callbacks=callbacks or None,
            device=self.device,
            verbose=self.verbose,
            task_names=self.target_names_,
            gradient_strategy=get_strategy(
                self.gradient_adjustment, relax_factor=self.relax_factor, clip_ratio=self.clip_ratio,
                project=self.gradient_projection, rescale=self.gradient_rescaling, seed=seed,
            ),
            seed=seed,
            sparse_updates=bool(self.sparse_updates),
        )
        if self.net_kwargs:
            net.set_params(**self.net_kwargs)
        return net

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

    def _sink(self, msg):
        if self.verbose:
            print(msg)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model on features X and hybrid targets y.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Numeric, bool, category, string or object columns; NaN marks a missing numeric value.
        y : array-like or DataFrame of shape (n_samples, k + 1), or (n_samples,)
            k binary stages in funnel order (0, 1, or NaN for a missing label), then the continuous
            core target (NaN = missing).  A 1-D y is plain regression (k = 0).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights: every task's loss is a weighted mean over its observed labels
            (weights of 1 give the same model as no weights).  Also weights the head priors, the
            validation loss and the smearing factor.

        Returns
        -------
        self : HTLNetRegressor

        Raises
        ------
        ValueError
            If X and y differ in length, a stage holds values other than 0/1/NaN or a single class,
            the core target is infinite or never observed, or a parameter is invalid; or if
            ``checkpoint_dir`` holds a checkpoint that cannot be resumed, or is in use by another
            fit (:class:`sk_htlnet.checkpoint.CheckpointError`).
        OSError
            If a checkpoint cannot be written to ``checkpoint_dir`` (the folder keeps the last
            complete epoch), or the folder was removed or replaced during the fit.
        sk_htlnet.TrainingDivergedError
            If training diverges (also in ``partial_fit``): a task's batch loss becomes NaN or
            infinite, at the end of an epoch a task's epoch training loss is more than 10
            times as far above the loss's lower bound as the loss of predicting the base rates on
            the same batches, or, at the end of training, every head's output is constant across
            training rows whose inputs differ (``reason="dead"``: the network's units died; a fresh
            fit is then left unfitted) (:mod:`sk_htlnet.divergence`).  The message names the task, the epoch and a lower
            ``learning_rate`` to try.  The estimator is then left fitted on its best weights before
            the divergence (early stopping's best epoch, else the epoch with the lowest
            ``train_loss``, or for a continued fit the weights it started from), with the error's
            ``best_epoch`` saying which and ``history_`` holding every epoch run; a fresh fit whose
            first epoch diverged leaves it unfitted (``best_epoch`` is None).
        """
        with self._threads():
            return self._fit(X, y, sample_weight)

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

    def _fit(self, X, y, sample_weight=None, incremental=False):
        if y is None:
            raise ValueError("HTLNetRegressor requires y to be passed, but the target y is None")
        self._check_setup()
        fitted = hasattr(self, "net_")
        keep = fitted and (self.warm_start or incremental)
        if keep:
            self._warn_changed_params()
            epochs_before = len(self.net_.history)
        X = self._validate_X(X, reset=not keep)
        if keep:
            encoder = self.feature_encoder_
            inputs = encoder.transform(X)
        else:
            encoder = FeatureEncoder(self.categorical_features, self.numeric_encoding, self.n_bins)
            inputs = encoder.fit_transform(X)
        n_rows = inputs["cat"].shape[0]
        values, names, was_1d = self._check_targets(y, n_rows, incremental=keep)
        if keep and names != self.target_names_:
            raise ValueError(f"y has targets {names}, but the model was fitted on {self.target_names_}")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
            if not (sample_weight[~np.isnan(values[:, -1])] > 0).any():
                raise ValueError(
                    f"no row with an observed core target ({names[-1]!r}) has a positive sample_weight"
                )
            # every loss, prior and calibration is a weighted mean: free of the weights' scale, so
            # they are brought to a mean of 1 (weights of 1e39 would overflow the float32 batches)
            sample_weight = sample_weight / sample_weight.max()
            sample_weight /= sample_weight[sample_weight > 0].mean()
        y_model = values.copy()
        k = values.shape[1] - 1
        if not keep:
            if fitted:  # a failed refit must not leave the old net beside the new encoding
                del self.net_
            self.feature_encoder_ = encoder
            self.target_names_ = names
            self.n_stages_ = k
            self._y_1d = was_1d
            self.core_loss_ = self._resolve_core_loss(values[:, k])
            self.target_transform_ = transform = self._resolve_target_transform(values[:, k], names[k])
            self.core_transform_ = CoreTransform(
                transform, self.retransformation, calibrate=self.core_loss_ != "mse"
            ).fit(values[:, k])
            if self.core_loss_ != "mse":  # condition the likelihood: amounts in units of their mean
                self.core_transform_.std = _weighted_nanmean(values[:, k], sample_weight) or 1.0
        else:  # a later chunk: the same checks of the core against the loss; widen the clipping range
            self._resolve_target_transform(values[:, k], names[k])
            self.core_transform_.update(values[:, k])
        y_model[:, k] = self.core_transform_.forward(values[:, k])  # the scale the loss sees
        dataset = FunnelDataset(
            inputs["cat"], inputs["num"], inputs["num_missing"], y_model.astype(np.float32), sample_weight
        )
        if keep:
            net = self.net_
        else:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            self._net_spec_ = self._net_spec(y_model, sample_weight)
            early = self.early_stopping if self.early_stopping != "auto" else n_rows > 10_000
            if early and not incremental:
                n_valid = int(np.ceil(self.validation_fraction * n_rows))
                if n_valid < 1 or n_rows - n_valid < 2:
                    raise ValueError(
                        f"validation_fraction={self.validation_fraction} holds out {n_valid} of {n_rows} rows "
                        f"for early stopping, leaving {n_rows - n_valid} to train on (at least 2 are needed); "
                        "use a smaller validation_fraction or early_stopping=False"
                    )
            fingerprint = None if self.checkpoint_dir is None else self._checkpoint_fingerprint(
                self._net_spec_, dataset, encoder, values, names, seed)
            net = self._make_net(self._net_spec_, seed, early=early and not incremental,
                                 checkpoint_settings=fingerprint)
        core = values[:, k].copy()  # for the retransformation; the float64 targets are freed before training
        del values, y_model
        monitor = find_monitor(net)
        if monitor is not None:
            monitor.resumed = keep  # a continued fit falls back on the weights it starts from
        diverged = None
        with checkpoint_lock(checkpoint_folder(net)):  # a second fit on the same checkpoint_dir is refused
            try:
                if incremental:
                    net.partial_fit(dataset, None, epochs=1)
                elif keep:
                    net.partial_fit(dataset, None, epochs=self.max_iter)
                else:
                    net.fit(dataset, None)
            except TrainingDivergedError as exc:
                if exc.best_epoch is None:
                    raise  # a fresh fit's first epoch diverged: left unfitted (self.net_ is not set)
                diverged = exc  # the net holds its best weights again: finish the fit on them, then raise
        self.net_ = net
        if not keep:
            self._built_with = self._params_in_net()
        self.history_ = self.net_.history
        # epochs trained in all: a model from load_model has an empty history but n_iter_ epochs behind it
        self.n_iter_ = (self.n_iter_ - epochs_before if keep else 0) + len(self.history_)
        # the network's output on a seeded sample of training rows: for the retransformation (at most
        # _CALIBRATION_ROWS) and the dead-network check (at most _ALIVE_ROWS when it is alone)
        calibrate = self.core_transform_.fitted_on_predictions
        if calibrate or diverged is None:
            rows = self._sample_rows(n_rows, _CALIBRATION_ROWS if calibrate else _ALIVE_ROWS)
            checked = dataset if len(rows) == n_rows else dataset.subset(rows)
            raw = self._forward(checked)
        if diverged is None:
            self._check_alive(inputs, keep, rows, raw, checked)
        if calibrate:
            self.core_transform_.fit_retransformation(
                core[rows], core_mean(raw[:, k:], self.core_loss_),
                None if sample_weight is None else sample_weight[rows],
            )
        else:
            self.core_transform_.fit_retransformation(None, None)
        if diverged is not None:
            raise diverged
        return self

    def _sample_rows(self, n_rows, cap):
        """Sorted positions of at most ``cap`` of the ``n_rows`` training rows, drawn with the net's
        seed (every row when there are no more)."""
        if n_rows <= cap:
            return np.arange(n_rows)
        return np.sort(np.random.default_rng(self.net_.seed).choice(n_rows, cap, replace=False))

    def _check_alive(self, inputs, keep, rows, raw, dataset):
        """Raise :class:`TrainingDivergedError` (``reason="dead"``) when the output of every head,
        ``raw`` on the training ``rows`` (``dataset``), is constant across rows whose encoded
        ``inputs`` differ although it was not at initialisation.  A fresh fit is left unfitted
        (``net_`` removed); a continued one keeps the network (sk_htlnet.divergence).  A network
        constant from its initialisation on gets a ConvergenceWarning instead."""
        features = [np.asarray(inputs[key])[rows] for key in ("cat", "num", "num_missing") if key in inputs]
        error = dead_network_error(self.net_, raw, self.n_stages_, features, fresh=not keep)
        if error is not None and dead_network_error(
            self.net_, self._forward(dataset, initial=True), self.n_stages_, features
        ) is not None:
            # constant already at initialisation: no ReLU unit is active on any row, so no gradient
            # ever reached them; an architecture too narrow for the data, not a diverged training
            warnings.warn(
                f"every head predicts one value whatever the input: with tower_units={self.tower_units!r} "
                f"and random_state={self.random_state!r} the network's output was the same on all {len(rows)} "
                "training rows checked already at initialisation (no ReLU unit active on them, so no gradient "
                "reaches them and training cannot change that). Use wider tower_units or another random_state.",
                ConvergenceWarning, stacklevel=user_stacklevel(),
            )
            return
        if error is not None:
            if not keep:
                del self.net_  # no model that predicts one value per target is returned as fitted
            raise error

    def _resolve_core_loss(self, core):
        """core_loss with "auto" resolved: "ziln" for an amount (every core value >= 0) unless a
        transform or smearing asks for the MSE on a transformed scale; "mse" otherwise."""
        if self.core_loss != "auto":
            return self.core_loss
        amount = np.nanmin(core) >= 0
        return "ziln" if amount and self.target_transform == "auto" and self.retransformation != "smearing" else "mse"

    def _resolve_target_transform(self, core, name):
        """target_transform with "auto" resolved; checks it against ``core_loss_`` and the data."""
        transform = self.target_transform
        loss = self.core_loss_
        if loss != "mse":
            if transform not in ("auto", "none"):
                raise ValueError(
                    f"core_loss={loss!r} models the core target in its own units; "
                    f"target_transform must be 'auto' or 'none', got {transform!r}"
                )
            if self.retransformation == "smearing":
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

    def partial_fit(self, X, y, sample_weight=None):
        """Train for one epoch on (X, y), starting from the current weights if fitted.

        The first call fixes the feature encoding (vocabularies, scalers) and the targets; later
        calls must use the same columns and targets, and categories unseen in the first call map to
        the out-of-vocabulary row.  No validation split or early stopping is used (as in
        scikit-learn's ``MLPRegressor.partial_fit``); a net built by ``fit`` with early stopping
        keeps its callback but it is not consulted here.

        Parameters
        ----------
        X, y, sample_weight
            As in :meth:`fit`.

        Returns
        -------
        self : HTLNetRegressor
        """
        if not hasattr(self, "net_"):
            self._validate_params()
        with self._threads(), self._incremental():
            return self._fit(X, y, sample_weight, incremental=True)

    @contextlib.contextmanager
    def _incremental(self):
        """Run the fitted net without its validation split and early stopping for one call."""
        net = getattr(self, "net_", None)
        if net is None:
            yield
            return
        saved = net.train_split, net.callbacks_
        net.train_split = None
        net.callbacks_ = [(name, cb) for name, cb in saved[1] if not isinstance(cb, EarlyStopping)]
        try:
            yield
        finally:
            net.train_split, net.callbacks_ = saved

    def _core_targets(self, y):
        """y as float64 (n, k + 1) with the core column on the transformed scale the loss uses."""
        values = _target_frame(y)[0].copy()
        values[:, self.n_stages_] = self.core_transform_.forward(values[:, self.n_stages_])
        return values

    # ---- predict ----------------------------------------------------------------------------------
    def _forward(self, dataset, initial=False):
        """The network's eval-mode output (rows, outputs) as float64; ``initial``: with the weights
        it was initialised with."""
        out = self.net_.forward_at_initialisation(dataset) if initial else self.net_.forward(dataset, training=False)
        return out.detach().cpu().numpy().astype(np.float64)

    def make_dataset(self, X, y=None, sample_weight=None):
        """The :class:`sk_htlnet.net.FunnelDataset` the fitted network reads.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Checked and encoded as in ``predict``.
        y : DataFrame or array-like of shape (n_samples, k + 1) or (n_samples,), default=None
            When given, checked as in ``fit``; the core column is put on the scale the loss sees
            (``core_transform_``), as float32.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        FunnelDataset
            Its tensors hold ``feature_encoder_.transform(X)``; ``net_.forward(dataset)`` gives the
            network's raw outputs (k stage logits, then the core head's outputs).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before ``fit``.
        ValueError
            If X or y do not match the fitted columns and targets.
        """
        check_is_fitted(self, "net_")
        inputs = self.feature_encoder_.transform(self._validate_X(X, reset=False))
        targets = None
        if y is not None:
            targets = self._core_targets(y).astype(np.float32)
            if len(targets) != len(inputs["cat"]):
                raise ValueError(f"y has {len(targets)} rows, X has {len(inputs['cat'])}")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, inputs["cat"], dtype=np.float32)
        return FunnelDataset(inputs["cat"], inputs["num"], inputs["num_missing"], targets, sample_weight)

    def predict(self, X):
        """Predict every head.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Same columns (names and order) as in ``fit``.

        Returns
        -------
        ndarray of float64, shape (n_samples, k + 1), or (n_samples,) when y was 1-D
            Columns ``target_names_``: entire-space stage probabilities P(stage t = 1 | x) in [0, 1],
            then the conditional mean of the core target in y's units.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before ``fit``.
        ValueError
            If X's columns differ from those seen in ``fit``.
        FloatingPointError
            If a prediction is not finite (extreme inputs); predictions are never NaN silently.
        """
        check_is_fitted(self, "net_")
        inputs = self.feature_encoder_.transform(self._validate_X(X, reset=False))
        dataset = FunnelDataset(inputs["cat"], inputs["num"], inputs["num_missing"])
        with self._threads():
            raw = self._forward(dataset)
        k = self.n_stages_
        pred = np.empty_like(raw)
        pred[:, :k] = 1.0 / (1.0 + np.exp(-raw[:, :k]))
        pred = pred[:, : k + 1]
        pred[:, k] = self.core_transform_.inverse(core_mean(raw[:, k:], self.core_loss_))
        bad = ~np.isfinite(pred).all(axis=1)
        if bad.any():
            raise FloatingPointError(
                f"{int(bad.sum())} of {len(pred)} rows got a non-finite prediction (first: row "
                f"{int(np.argmax(bad))}); check them for extreme numeric values far outside the "
                "training range"
            )
        return pred[:, 0] if self._y_1d else pred

    def predict_frame(self, X):
        """Predict every head as a DataFrame named after the targets.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)

        Returns
        -------
        pandas.DataFrame of shape (n_samples, k + 1), float64
            Columns ``target_names_`` (stage probabilities, then the core target's conditional mean
            in its units); the index is X's when X is a DataFrame.
        """
        pred = self.predict(X).reshape(-1, len(self.target_names_))
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(pred, columns=self.target_names_, index=index)

    def score(self, X, y, sample_weight=None):
        """Mean R^2 over all targets, missing labels masked.

        For a stage column R^2 is the Brier skill score against the base rate, for the core target the
        usual coefficient of determination: 1 is perfect, 0 is the base rate / mean predictor.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples, k + 1) or (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        float
        """
        pred = self.predict(X).reshape(len(y), -1) if hasattr(y, "__len__") else self.predict(X)
        values, _, _ = _target_frame(y)
        if values.shape != pred.shape:
            raise ValueError(f"y has shape {values.shape}, but the model predicts {pred.shape}")
        scores = []
        for j in range(values.shape[1]):
            ok = ~np.isnan(values[:, j])
            w = None if sample_weight is None else np.asarray(sample_weight)[ok]
            scores.append(r2_score(values[ok, j], pred[ok, j], sample_weight=w))
        return float(np.mean(scores))
