"""Schema of ``config.json``, the settings of a model file: every field checked before use.

:func:`check_config` checks the parsed ``config.json`` field by field (types, ranges, sizes
against the caps of :mod:`sk_htlnet._model_fields`) and against the other fields: the parameters
(:func:`check_params`), then the fitted state (:func:`check_fitted`: the encoding against the
columns, the targets, the target transform), then the net's settings against the encoding and the
parameters (:func:`sk_htlnet._model_net_spec.check_net_spec`).  It builds an estimator holding
the parameters and the public fitted attributes without allocating anything the file declares;
the checked fitted state is returned for
:meth:`HTLNetRegressor.set_fitted_state`.  Every refusal is a ``ModelFileError`` naming the field.
"""

import math

import numpy as np

from ._model_fields import (
    MAX_BINS, MAX_EXPERTS, MAX_LAYERS, MAX_STAGES, MAX_THREADS, MAX_WIDTH, ModelFileError, as_bool, as_int, as_list,
    as_number, as_numbers, as_object, as_str, decode_value, fail, is_flat_json, short_repr, unique_index,
)
from ._model_net_spec import check_net_spec
from .core_transform import CoreTransform
from .estimator import HTLNetRegressor
from .core_losses import CORE_LOSSES
from .core_losses import core_loss as core_loss_family
from .preprocessing import FeatureEncoder

FORMAT = "sk_htlnet-model"
VERSION = 1

_BOOL_ALLOWED = ("verbose", "early_stopping")  # parameters with a non-bool default that accept a bool

#: Parameters that name paths, hold Python objects or set skorch internals: a model file does not
#: carry them (save_model stores None, load_model resets any other value with a warning).
NOT_STORED = ("checkpoint_dir", "net_kwargs", "callbacks")

_FITTED_KEYS = {"n_features_in", "feature_names_in", "columns", "categorical_mask", "vocabularies", "mean",
                "scale", "min", "max", "bin_edges", "target_names", "y_1d", "target_transform", "transform",
                "net_spec", "n_iter"}
_TRANSFORM_KEYS = {"mean", "std", "smearing", "low", "high", "knots_z", "knots_y"}


# ---- parameters ---------------------------------------------------------------------------------
def check_params(params, field="config.json params"):
    """Check stored parameters; return (estimator, names of NOT_STORED parameters that were set).

    The estimator is built from the other parameters (their defaults where absent): every value a
    JSON scalar or a flat list of scalars, every float finite, scikit-learn's constraints, then the
    caps on sizes and threads.
    """
    as_object(params, field)
    defaults = HTLNetRegressor().get_params(deep=False)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ModelFileError(f"{field}: unknown parameter(s) {unknown[:5]} (not parameters of HTLNetRegressor)")
    dropped = [name for name in NOT_STORED if params.get(name) not in (None, [], {})]
    kept = {}
    for name, value in params.items():
        if name in NOT_STORED:
            continue
        items = value if isinstance(value, list) else [value]
        if not is_flat_json(value):
            fail(f"{field}.{name}", "a JSON scalar or a flat list of scalars", value)
        for v in items:
            if type(v) is float and not math.isfinite(v):
                fail(f"{field}.{name}", "finite numbers", value)
            if type(v) is int and abs(v) > 2**32:
                fail(f"{field}.{name}", "ints of magnitude at most 2**32", value)
        if type(value) is bool and not isinstance(defaults[name], bool) and name not in _BOOL_ALLOWED:
            fail(f"{field}.{name}", "a number, not true or false", value)
        kept[name] = value
    est = HTLNetRegressor(**kept)
    try:
        est.check_params(setup=False)
    except ValueError as exc:  # sklearn's InvalidParameterError names the parameter and the constraint
        raise ModelFileError(f"{field}: {exc}") from None
    caps = {"embedding_dim": MAX_WIDTH, "label_embedding_dim": MAX_WIDTH, "fusion_dim": MAX_WIDTH,
            "n_bins": MAX_BINS, "n_experts": MAX_EXPERTS}
    for name, cap in caps.items():
        if getattr(est, name) > cap:
            fail(f"{field}.{name}", f"at most {cap}", getattr(est, name))
    if not isinstance(est.random_state, (int, type(None))) or not 0 <= (est.random_state or 0) < 2**32:
        fail(f"{field}.random_state", "None or an int in [0, 2**32 - 1]", est.random_state)
    if est.n_threads is not None and est.n_threads > MAX_THREADS:
        fail(f"{field}.n_threads", f"None or an int in [1, {MAX_THREADS}]", est.n_threads)
    units = est.tower_units if isinstance(est.tower_units, list) else [est.tower_units]
    if not 1 <= len(units) <= MAX_LAYERS or not all(
            type(u) in (int, float) and u == int(u) and 1 <= u <= MAX_WIDTH for u in units):
        fail(f"{field}.tower_units", f"1 to {MAX_LAYERS} ints in [1, {MAX_WIDTH}]", est.tower_units)
    return est, dropped



# ---- fitted state -------------------------------------------------------------------------------
def check_fitted(fitted, est, field="config.json fitted"):
    """Check the fitted state against itself and the parameters and set its public attributes on
    ``est`` (the feature encoder, the targets, the core transform; not the net).

    Returns
    -------
    dict
        The checked fitted state, for ``HTLNetRegressor.set_fitted_state`` (the keys of
        ``fitted_state``; ``net_spec`` checked by :func:`check_net_spec`).
    """
    as_object(fitted, field, _FITTED_KEYS, optional=("bin_edges",))
    columns = [decode_value(c, f"{field}.columns[{i}]", tuples=True)
               for i, c in enumerate(as_list(fitted["columns"], f"{field}.columns"))]
    n = len(columns)
    if n == 0:
        fail(f"{field}.columns", "at least one column", columns)
    is_tuple = [isinstance(c, tuple) for c in columns]
    if any(is_tuple) and (not all(is_tuple) or len({len(c) for c in columns}) != 1):
        fail(f"{field}.columns", "labels that are all scalars or all tuples of one length (a MultiIndex)", columns)
    unique_index(columns, f"{field}.columns")
    as_int(fitted["n_features_in"], f"{field}.n_features_in", n, n)
    names = fitted["feature_names_in"]
    all_str = all(type(c) is str for c in columns)  # scikit-learn records feature names exactly then
    if names != (columns if all_str else None):
        fail(f"{field}.feature_names_in", "the column labels when they are all strings, else None", names)
    mask = as_list(fitted["categorical_mask"], f"{field}.categorical_mask", n)
    features = est.categorical_features
    if isinstance(features, list) and features and all(type(v) is bool for v in features) and len(features) != n:
        fail("config.json params.categorical_features", f"a mask of {n} booleans (one per column)", features)
    for i, m in enumerate(mask):
        as_bool(m, f"{field}.categorical_mask[{i}]")
    n_cat = sum(mask)
    n_num = n - n_cat
    vocabularies = []
    for j, vocab in enumerate(as_list(fitted["vocabularies"], f"{field}.vocabularies", n_cat)):
        where = f"{field}.vocabularies[{j}]"
        values = [decode_value(v, f"{where}[{i}]") for i, v in enumerate(as_list(vocab, where))]
        vocabularies.append(unique_index(values, where))
    mean = as_numbers(fitted["mean"], f"{field}.mean", n_num)
    scale = as_numbers(fitted["scale"], f"{field}.scale", n_num, positive=True)
    low = as_numbers(fitted["min"], f"{field}.min", n_num)
    high = as_numbers(fitted["max"], f"{field}.max", n_num)
    if (low > high).any():
        j = int(np.argmax(low > high))
        fail(f"{field}.min[{j}]", f"at most max[{j}] = {float(high[j])!r}", float(low[j]))
    binned = est.numeric_encoding in ("quantile", "piecewise_linear")
    edges_field = f"{field}.bin_edges"
    raw_edges = fitted.get("bin_edges", [[]] * n_num)
    bin_edges = [as_numbers(e, f"{edges_field}[{j}]", increasing=True)
                 for j, e in enumerate(as_list(raw_edges, edges_field, n_num))]
    for j, e in enumerate(bin_edges):
        if len(e) > (est.n_bins + 1 if binned else 0):
            fail(f"{edges_field}[{j}]", f"at most {est.n_bins + 1 if binned else 0} edges "
                 f"(numeric_encoding={est.numeric_encoding!r}, n_bins={est.n_bins})", e.tolist())
    targets = as_list(fitted["target_names"], f"{field}.target_names")
    if not 1 <= len(targets) <= MAX_STAGES + 1:
        fail(f"{field}.target_names", f"1 to {MAX_STAGES + 1} names (stages, then the core)", targets)
    for i, t in enumerate(targets):
        as_str(t, f"{field}.target_names[{i}]")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: predict_frame and partial_fit would fail later
            fail(f"{field}.target_names[{i}]", "a string encodable as UTF-8 (no lone surrogate)", t)
    k = len(targets) - 1
    y_1d = as_bool(fitted["y_1d"], f"{field}.y_1d")
    if y_1d and k:
        fail(f"{field}.y_1d", f"false for {k + 1} targets", y_1d)
    as_int(fitted["n_iter"], f"{field}.n_iter", 0, 2**62)

    enc = FeatureEncoder(est.categorical_features, est.numeric_encoding, est.n_bins)
    enc.categorical_mask_ = np.asarray(mask, dtype=bool)
    enc.vocabularies_ = vocabularies
    enc.mean_, enc.scale_, enc.min_, enc.max_, enc.bin_edges_ = mean, scale, low, high, bin_edges
    enc.set_columns(columns)
    est.feature_encoder_ = enc
    est.n_features_in_ = n
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    est.target_names_ = list(targets)
    est.n_stages_ = k
    est.n_iter_ = fitted["n_iter"]

    spec = as_object(fitted["net_spec"], f"{field}.net_spec", ("architecture", "module", "criterion", "batch_size"),
                     optional=("batch_size",))  # files written before batch_size="auto" lack it
    criterion = as_object(spec["criterion"], f"{field}.net_spec.criterion")
    core_loss = as_str(criterion.get("core_loss", "mse"), f"{field}.net_spec.criterion.core_loss", CORE_LOSSES)
    if est.core_loss not in ("auto", core_loss):
        fail(f"{field}.net_spec.criterion.core_loss", f"{est.core_loss!r} (the parameter core_loss)", core_loss)
    transform_kind = as_str(fitted["target_transform"], f"{field}.target_transform", ("none", "standardize", "log1p"))
    if core_loss_family(core_loss).likelihood:
        if transform_kind != "none" or est.target_transform not in ("auto", "none"):
            fail(f"{field}.target_transform",
                 f"'none' with target_transform 'auto' or 'none' (core_loss={core_loss!r})",
                 [transform_kind, est.target_transform])
        if est.retransformation == "smearing":
            fail("config.json params.retransformation", f"'isotonic' or 'none' with core_loss={core_loss!r}",
                 "smearing")
    elif est.target_transform not in ("auto", transform_kind):
        fail(f"{field}.target_transform", f"{est.target_transform!r} (the parameter target_transform)", transform_kind)
    est.core_loss_, est.target_transform_ = core_loss, transform_kind
    est.core_transform_ = _check_transform(fitted["transform"], est, f"{field}.transform")
    check_net_spec(spec, est, f"{field}.net_spec")
    return {"feature_encoder": enc, "core_transform": est.core_transform_, "target_names": list(targets),
            "n_stages": k, "n_iter": fitted["n_iter"], "core_loss": core_loss, "target_transform": transform_kind,
            "n_features_in": n, "feature_names_in": names, "y_1d": y_1d, "net_spec": spec}


def _check_transform(stored, est, field):
    as_object(stored, field, _TRANSFORM_KEYS)
    transform = CoreTransform(est.target_transform_, est.retransformation, calibrate=core_loss_family(est.core_loss_).likelihood)
    transform.mean = as_number(stored["mean"], f"{field}.mean")
    transform.std = as_number(stored["std"], f"{field}.std", positive=True)
    transform.smearing = as_number(stored["smearing"], f"{field}.smearing", positive=True)
    transform.low = as_number(stored["low"], f"{field}.low")
    transform.high = as_number(stored["high"], f"{field}.high")
    if transform.low > transform.high:
        fail(f"{field}.low", f"at most high = {transform.high!r}", transform.low)
    knots_z, knots_y = stored["knots_z"], stored["knots_y"]
    if (knots_z is None) != (knots_y is None):
        fail(f"{field}.knots_y", "None exactly when knots_z is None", knots_y)
    if knots_z is not None:
        transform.knots_z = as_numbers(knots_z, f"{field}.knots_z", increasing=True)
        transform.knots_y = as_numbers(knots_y, f"{field}.knots_y", len(knots_z), non_decreasing=True)
        if not len(knots_z):
            fail(f"{field}.knots_z", "None or at least one knot", knots_z)
    return transform



def check_config(config):
    """Check the whole ``config.json`` (a parsed JSON value).

    Returns
    -------
    est : HTLNetRegressor
        The parameters and the public fitted attributes, but no net yet.
    state : dict
        The checked fitted state, from :func:`check_fitted` (the keys of ``fitted_state``).
    dropped : list of str
        The parameters of ``NOT_STORED`` that the file had set (reset to None).
    """
    as_object(config, "config.json", ("format", "version", "params", "fitted"))
    if config["format"] != FORMAT or type(config["version"]) is not int or config["version"] != VERSION:
        raise ModelFileError(f"unknown format {short_repr.repr(config['format'])} version "
                             f"{short_repr.repr(config['version'])}; expected {FORMAT!r} version {VERSION}")
    est, dropped = check_params(config["params"])
    state = check_fitted(config["fitted"], est)
    return est, state, dropped
