"""Schema of the model file of :mod:`sk_htlnet.io`: what every field may hold, checked before use.

A model file is data.  :func:`check_config` checks ``config.json`` field by field (types, ranges,
sizes against the caps below) and against the other fields (the encoding against the columns, the
net's settings against the encoding and the parameters), and builds the estimator's fitted state
from it without allocating anything the file declares; :func:`check_weights_header` checks the
header of ``weights.safetensors`` against the tensor shapes the settings imply, computed on torch's
meta device (:func:`expected_state`, which allocates no memory).  Every refusal is a
:class:`ModelFileError` naming the field and what was expected.
"""

import collections
import inspect
import json
import math
import numbers
import re
import reprlib

import numpy as np
import pandas as pd
import torch
from torch.overrides import TorchFunctionMode

from .estimator import HTLNetRegressor, CoreTransform
from .modules import ARCHITECTURES
from .net import CORE_LOSSES, HybridLoss, core_loss_width
from .preprocessing import FeatureEncoder

FORMAT = "sk_htlnet-model"
VERSION = 1

# Caps on sizes that the parameter constraints allow but a model file must not declare: they bound
# the time and memory of building the network from the settings, before the weights are compared.
MAX_THREADS = 1024  # n_threads
MAX_WIDTH = 65536  # embedding_dim, label_embedding_dim, fusion_dim, and each layer of tower_units
MAX_LAYERS = 64  # layers of tower_units
MAX_BINS = 65536  # n_bins
MAX_EXPERTS = 1024  # n_experts
MAX_STAGES = 256  # binary stages (targets - 1)
MAX_SAFETENSORS_HEADER = 16 << 20  # bytes of the weights' JSON header

_BOOL_ALLOWED = ("verbose", "early_stopping")  # parameters with a non-bool default that accept a bool

#: Parameters that name paths, hold Python objects or set skorch internals: a model file does not
#: carry them (save_model stores None, load_model resets any other value with a warning).
NOT_STORED = ("checkpoint_dir", "net_kwargs", "callbacks")

# torch dtypes of the module's tensors and their names in the safetensors header
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
                       torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}
_ITEMSIZES = {name: torch.empty(0, dtype=dtype).element_size() for dtype, name in _SAFETENSORS_DTYPES.items()}
_SCALAR_KINDS = {"bool": bool, "int": int, "float": float, "str": str}
_FITTED_KEYS = {"n_features_in", "feature_names_in", "columns", "categorical_mask", "vocabularies", "mean",
                "scale", "min", "max", "bin_edges", "target_names", "y_1d", "target_transform", "transform",
                "net_spec", "n_iter"}
_TRANSFORM_KEYS = {"mean", "std", "smearing", "low", "high", "knots_z", "knots_y"}
# module settings that repeat an estimator parameter of the same name and must agree with it
_SAME_AS_PARAM = ("embedding_dim", "label_embedding_dim", "fusion_dim", "fusion", "label_sampling", "tau",
                  "label_embedding", "representation_transfer", "stop_gradient", "dropout")

_short_repr = reprlib.Repr()
_short_repr.maxlevel, _short_repr.maxlist, _short_repr.maxdict, _short_repr.maxstring = 2, 4, 4, 40
_short_repr.maxother = 40


class ModelFileError(ValueError):
    """The file is not a valid, intact sk_htlnet model file (the message names what is wrong)."""


ModelFileError.__module__ = "sk_htlnet.io"


def _fail(field, expected, value):
    raise ModelFileError(f"{field}: expected {expected}, got {_short_repr.repr(value)}")


# ---- JSON ---------------------------------------------------------------------------------------
def _unique_keys(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):
        duplicated = sorted(k for k, count in collections.Counter(k for k, _ in pairs).items() if count > 1)
        raise ModelFileError(f"a JSON object repeats the key(s) {duplicated[:5]}")
    return result


# JSON bytes per object or array that a model file needs at least: a category is ``["int", 1], ``
# (12 bytes); ``{},`` (3 bytes) costs 64 bytes as a Python dict, and a file of them about 25 times
# its size while it is parsed.  With this bound, parsing takes at most about 15 times the bytes.
MIN_BYTES_PER_CONTAINER = 8
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _count_containers(data):
    """Objects and arrays in JSON bytes: ``{`` and ``[`` outside strings."""
    count = data.count(b"{") + data.count(b"[")
    if count * MIN_BYTES_PER_CONTAINER > len(data):  # some may be inside strings: count exactly
        stripped = _JSON_STRING.sub(b"", data)
        count = stripped.count(b"{") + stripped.count(b"[")
    return count


def parse_json(data, what):
    """Parse UTF-8 JSON bytes; duplicate keys, invalid text, nesting too deep for the parser
    (RecursionError) and more objects and arrays than one per ``MIN_BYTES_PER_CONTAINER`` bytes
    (plus 64) are a :class:`ModelFileError` naming ``what``."""
    containers = _count_containers(data)
    if containers > len(data) // MIN_BYTES_PER_CONTAINER + 64:
        raise ModelFileError(f"{what}: {containers} JSON objects and arrays in {len(data)} bytes, more than one "
                             f"per {MIN_BYTES_PER_CONTAINER} bytes (a model file needs far fewer)")
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except ModelFileError as exc:
        raise ModelFileError(f"{what}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ModelFileError(f"{what} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None


def _dict(value, field, keys=None, optional=()):
    if not isinstance(value, dict):
        _fail(field, "a JSON object", value)
    if keys is not None:
        missing = sorted(set(keys) - set(value) - set(optional))
        unknown = sorted(set(value) - set(keys))
        if missing or unknown:
            raise ModelFileError(f"{field}: missing keys {missing[:5]}, unknown keys {unknown[:5]}")
    return value


def _list(value, field, length=None):
    if not isinstance(value, list) or (length is not None and len(value) != length):
        _fail(field, "a list" if length is None else f"a list of {length} items", value)
    return value


def _int(value, field, low, high):
    if type(value) is not int or not low <= value <= high:
        _fail(field, f"an int in [{low}, {high}]", value)
    return value


def _bool(value, field):
    if type(value) is not bool:
        _fail(field, "true or false", value)
    return value


def _str(value, field, options=None):
    if type(value) is not str or (options is not None and value not in options):
        _fail(field, "a string" if options is None else f"one of {sorted(options)}", value)
    return value


def _number(value, field, positive=False):
    """A finite int or float (not a bool), as float."""
    try:
        ok = type(value) in (int, float) and math.isfinite(value) and (value > 0 or not positive)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        _fail(field, "a finite positive number" if positive else "a finite number", value)
    return float(value)


def _numbers(value, field, length=None, positive=False, increasing=False, non_decreasing=False):
    """A list of finite numbers, as a float64 array."""
    _list(value, field, length)
    if not all(type(v) in (int, float) for v in value):
        bad = next(v for v in value if type(v) not in (int, float))
        _fail(f"{field} items", "numbers", bad)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except OverflowError:
        _fail(f"{field} items", "finite numbers", value)
    if not np.isfinite(arr).all() or (positive and (arr <= 0).any()):
        _fail(f"{field} items", "finite positive numbers" if positive else "finite numbers", value)
    if increasing and (np.diff(arr) <= 0).any():
        _fail(field, "strictly increasing numbers", value)
    if non_decreasing and (np.diff(arr) < 0).any():
        _fail(field, "non-decreasing numbers", value)
    return arr


# ---- values and column labels -------------------------------------------------------------------
def encode_value(value, tuples=False):
    """A category value or column label as ``[kind, value]``; where ``tuples``, a tuple of them (a
    MultiIndex label) as ``["tuple", [items]]``.  Raises TypeError naming the type for anything else."""
    if tuples and isinstance(value, tuple):
        return ["tuple", [_encode_scalar(v) for v in value]]
    return _encode_scalar(value)


def _encode_scalar(value):
    if isinstance(value, (bool, np.bool_)):
        return ["bool", bool(value)]
    if isinstance(value, (int, np.integer)):
        return ["int", int(value)]
    if isinstance(value, (float, np.floating)):
        return ["float", float(value)]
    if isinstance(value, str):
        return ["str", str(value)]
    raise TypeError(type(value).__name__)


def decode_value(item, field, tuples=False):
    """The inverse of :func:`encode_value` (tuples only where ``tuples``)."""
    if tuples and isinstance(item, list) and len(item) == 2 and item[0] == "tuple":
        parts = _list(item[1], f"{field} (a tuple)")
        if not parts:
            _fail(field, "a non-empty tuple", item)
        return tuple(decode_value(part, f"{field}[{i}]") for i, part in enumerate(parts))
    if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is str and item[0] in _SCALAR_KINDS):
        _fail(field, '[kind, value] with kind "str", "int", "float" or "bool"' + (' (or "tuple")' if tuples else ""),
              item)
    kind, value = item
    if kind == "float" and type(value) is int:
        try:
            value = float(value)
        except OverflowError:
            _fail(field, "a float", item)
    if type(value) is not _SCALAR_KINDS[kind]:
        _fail(field, f"[kind, value] whose value is a {kind}", item)
    return value


def _unique_index(values, field):
    index = pd.Index(values, dtype=object, tupleize_cols=False)
    if not index.is_unique:
        dup = _short_repr.repr(index[index.duplicated()].tolist()[:3])
        raise ModelFileError(f"{field}: expected distinct values, {dup} repeat (1, 1.0 and True count as equal)")
    return index


# ---- parameters ---------------------------------------------------------------------------------
def _json_scalar(value):
    return value is None or type(value) in (bool, int, float, str)


def check_params(params, field="config.json params"):
    """Check stored parameters; return (estimator, names of NOT_STORED parameters that were set).

    The estimator is built from the other parameters (their defaults where absent): every value a
    JSON scalar or a flat list of scalars, every float finite, scikit-learn's constraints, then the
    caps on sizes and threads.
    """
    _dict(params, field)
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
        if not all(_json_scalar(v) for v in items):
            _fail(f"{field}.{name}", "a JSON scalar or a flat list of scalars", value)
        for v in items:
            if type(v) is float and not math.isfinite(v):
                _fail(f"{field}.{name}", "finite numbers", value)
            if type(v) is int and abs(v) > 2**32:
                _fail(f"{field}.{name}", "ints of magnitude at most 2**32", value)
        if type(value) is bool and not isinstance(defaults[name], bool) and name not in _BOOL_ALLOWED:
            _fail(f"{field}.{name}", "a number, not true or false", value)
        kept[name] = value
    est = HTLNetRegressor(**kept)
    try:
        est._validate_params()
    except ValueError as exc:  # sklearn's InvalidParameterError names the parameter and the constraint
        raise ModelFileError(f"{field}: {exc}") from None
    caps = {"embedding_dim": MAX_WIDTH, "label_embedding_dim": MAX_WIDTH, "fusion_dim": MAX_WIDTH,
            "n_bins": MAX_BINS, "n_experts": MAX_EXPERTS}
    for name, cap in caps.items():
        if getattr(est, name) > cap:
            _fail(f"{field}.{name}", f"at most {cap}", getattr(est, name))
    if not isinstance(est.random_state, (int, type(None))) or not 0 <= (est.random_state or 0) < 2**32:
        _fail(f"{field}.random_state", "None or an int in [0, 2**32 - 1]", est.random_state)
    if est.n_threads is not None and est.n_threads > MAX_THREADS:
        _fail(f"{field}.n_threads", f"None or an int in [1, {MAX_THREADS}]", est.n_threads)
    units = est.tower_units if isinstance(est.tower_units, list) else [est.tower_units]
    if not 1 <= len(units) <= MAX_LAYERS or not all(
            type(u) in (int, float) and u == int(u) and 1 <= u <= MAX_WIDTH for u in units):
        _fail(f"{field}.tower_units", f"1 to {MAX_LAYERS} ints in [1, {MAX_WIDTH}]", est.tower_units)
    return est, dropped


# ---- fitted state -------------------------------------------------------------------------------
def check_fitted(fitted, est, field="config.json fitted"):
    """Check the fitted state against itself and the parameters; set it on ``est`` (everything but
    the net) and return the net spec, checked by :func:`check_net_spec`."""
    _dict(fitted, field, _FITTED_KEYS, optional=("bin_edges",))
    columns = [decode_value(c, f"{field}.columns[{i}]", tuples=True)
               for i, c in enumerate(_list(fitted["columns"], f"{field}.columns"))]
    n = len(columns)
    if n == 0:
        _fail(f"{field}.columns", "at least one column", columns)
    is_tuple = [isinstance(c, tuple) for c in columns]
    if any(is_tuple) and (not all(is_tuple) or len({len(c) for c in columns}) != 1):
        _fail(f"{field}.columns", "labels that are all scalars or all tuples of one length (a MultiIndex)", columns)
    _unique_index(columns, f"{field}.columns")
    _int(fitted["n_features_in"], f"{field}.n_features_in", n, n)
    names = fitted["feature_names_in"]
    all_str = all(type(c) is str for c in columns)  # scikit-learn records feature names exactly then
    if names != (columns if all_str else None):
        _fail(f"{field}.feature_names_in", "the column labels when they are all strings, else None", names)
    mask = _list(fitted["categorical_mask"], f"{field}.categorical_mask", n)
    features = est.categorical_features
    if isinstance(features, list) and features and all(type(v) is bool for v in features) and len(features) != n:
        _fail(f"config.json params.categorical_features", f"a mask of {n} booleans (one per column)", features)
    for i, m in enumerate(mask):
        _bool(m, f"{field}.categorical_mask[{i}]")
    n_cat = sum(mask)
    n_num = n - n_cat
    vocabularies = []
    for j, vocab in enumerate(_list(fitted["vocabularies"], f"{field}.vocabularies", n_cat)):
        where = f"{field}.vocabularies[{j}]"
        values = [decode_value(v, f"{where}[{i}]") for i, v in enumerate(_list(vocab, where))]
        vocabularies.append(_unique_index(values, where))
    mean = _numbers(fitted["mean"], f"{field}.mean", n_num)
    scale = _numbers(fitted["scale"], f"{field}.scale", n_num, positive=True)
    low = _numbers(fitted["min"], f"{field}.min", n_num)
    high = _numbers(fitted["max"], f"{field}.max", n_num)
    if (low > high).any():
        j = int(np.argmax(low > high))
        _fail(f"{field}.min[{j}]", f"at most max[{j}] = {float(high[j])!r}", float(low[j]))
    binned = est.numeric_encoding in ("quantile", "piecewise_linear")
    edges_field = f"{field}.bin_edges"
    raw_edges = fitted.get("bin_edges", [[]] * n_num)
    bin_edges = [_numbers(e, f"{edges_field}[{j}]", increasing=True)
                 for j, e in enumerate(_list(raw_edges, edges_field, n_num))]
    for j, e in enumerate(bin_edges):
        if len(e) > (est.n_bins + 1 if binned else 0):
            _fail(f"{edges_field}[{j}]", f"at most {est.n_bins + 1 if binned else 0} edges "
                  f"(numeric_encoding={est.numeric_encoding!r}, n_bins={est.n_bins})", e.tolist())
    targets = _list(fitted["target_names"], f"{field}.target_names")
    if not 1 <= len(targets) <= MAX_STAGES + 1:
        _fail(f"{field}.target_names", f"1 to {MAX_STAGES + 1} names (stages, then the core)", targets)
    for i, t in enumerate(targets):
        _str(t, f"{field}.target_names[{i}]")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: predict_frame and partial_fit would fail later
            _fail(f"{field}.target_names[{i}]", "a string encodable as UTF-8 (no lone surrogate)", t)
    k = len(targets) - 1
    y_1d = _bool(fitted["y_1d"], f"{field}.y_1d")
    if y_1d and k:
        _fail(f"{field}.y_1d", f"false for {k + 1} targets", y_1d)
    _int(fitted["n_iter"], f"{field}.n_iter", 0, 2**62)

    enc = FeatureEncoder(est.categorical_features, est.numeric_encoding, est.n_bins)
    enc._columns = columns
    enc.categorical_mask_ = np.asarray(mask, dtype=bool)
    enc._cat_cols = [c for c, m in zip(columns, mask) if m]
    enc._num_cols = [c for c, m in zip(columns, mask) if not m]
    enc.vocabularies_ = vocabularies
    enc.cardinalities_ = [len(v) + 2 for v in vocabularies]
    enc.mean_, enc.scale_, enc.min_, enc.max_, enc.bin_edges_ = mean, scale, low, high, bin_edges
    est.feature_encoder_ = enc
    est.n_features_in_ = n
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    est.target_names_ = list(targets)
    est.n_stages_ = k
    est._y_1d = y_1d
    est.n_iter_ = fitted["n_iter"]

    spec = _dict(fitted["net_spec"], f"{field}.net_spec", ("architecture", "module", "criterion"))
    criterion = _dict(spec["criterion"], f"{field}.net_spec.criterion")
    core_loss = _str(criterion.get("core_loss", "mse"), f"{field}.net_spec.criterion.core_loss", CORE_LOSSES)
    if est.core_loss not in ("auto", core_loss):
        _fail(f"{field}.net_spec.criterion.core_loss", f"{est.core_loss!r} (the parameter core_loss)", core_loss)
    transform_kind = _str(fitted["target_transform"], f"{field}.target_transform", ("none", "standardize", "log1p"))
    if core_loss != "mse":
        if transform_kind != "none" or est.target_transform not in ("auto", "none"):
            _fail(f"{field}.target_transform",
                  f"'none' with target_transform 'auto' or 'none' (core_loss={core_loss!r})",
                  [transform_kind, est.target_transform])
        if est.retransformation == "smearing":
            _fail("config.json params.retransformation", f"'isotonic' or 'none' with core_loss={core_loss!r}",
                  "smearing")
    elif est.target_transform not in ("auto", transform_kind):
        _fail(f"{field}.target_transform", f"{est.target_transform!r} (the parameter target_transform)", transform_kind)
    est.core_loss_, est.target_transform_ = core_loss, transform_kind
    est.core_transform_ = _check_transform(fitted["transform"], est, f"{field}.transform")
    check_net_spec(spec, est, f"{field}.net_spec")
    est._net_spec_ = spec
    return spec


def _check_transform(stored, est, field):
    _dict(stored, field, _TRANSFORM_KEYS)
    transform = CoreTransform(est.target_transform_, est.retransformation, calibrate=est.core_loss_ != "mse")
    transform.mean = _number(stored["mean"], f"{field}.mean")
    transform.std = _number(stored["std"], f"{field}.std", positive=True)
    transform.smearing = _number(stored["smearing"], f"{field}.smearing", positive=True)
    transform.low = _number(stored["low"], f"{field}.low")
    transform.high = _number(stored["high"], f"{field}.high")
    if transform.low > transform.high:
        _fail(f"{field}.low", f"at most high = {transform.high!r}", transform.low)
    knots_z, knots_y = stored["knots_z"], stored["knots_y"]
    if (knots_z is None) != (knots_y is None):
        _fail(f"{field}.knots_y", "None exactly when knots_z is None", knots_y)
    if knots_z is not None:
        transform.knots_z = _numbers(knots_z, f"{field}.knots_z", increasing=True)
        transform.knots_y = _numbers(knots_y, f"{field}.knots_y", len(knots_z), non_decreasing=True)
        if not len(knots_z):
            _fail(f"{field}.knots_z", "None or at least one knot", knots_z)
    return transform


# ---- net spec -----------------------------------------------------------------------------------
def _signature(cls):
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_keys(spec, cls, field):
    """Keys of a settings dict against the constructor's signature: none unknown, none required
    missing; returns the signature."""
    sig = _signature(cls)
    unknown = sorted(set(spec) - set(sig))
    missing = sorted(n for n, p in sig.items() if p.default is p.empty and n not in spec)
    if unknown or missing:
        raise ModelFileError(f"{field}: unknown settings {unknown[:5]}, missing settings {missing[:5]} "
                             f"of {cls.__name__}")
    return sig


def _like_default(value, default, field):
    """A setting the schema has no specific rule for: of the type of its default."""
    if isinstance(default, bool):
        _bool(value, field)
    elif isinstance(default, numbers.Integral):  # a count (PLE's n_levels): bounded like the layers
        _int(value, field, 0, MAX_LAYERS)
    elif isinstance(default, numbers.Real):  # of the default's sign: a scale stays positive
        if _number(value, field) < 0 <= default or (value <= 0 < default):
            _fail(field, f"a number {'> 0' if default > 0 else '>= 0'} (like its default {default!r})", value)
    elif isinstance(default, str):
        _str(value, field)
    elif not (_json_scalar(value) or (isinstance(value, list) and all(_json_scalar(v) for v in value))):
        _fail(field, "a JSON scalar or a flat list of scalars", value)


def _same_setting(value, param):
    """Equal, and of the same type (an int and a float count as the same type)."""
    numeric = (int, float)
    if type(value) in numeric and type(param) in numeric:
        return value == param
    return type(value) is type(param) and value == param


def check_net_spec(spec, est, field):
    """The net's settings against the estimator's parameters and encoding (sizes and flags), and
    every setting against the constructor's signature (unknown settings refused, the type of the
    default for those without a specific rule)."""
    _str(spec["architecture"], f"{field}.architecture", (est.architecture,))
    k = est.n_stages_
    module = _dict(spec["module"], f"{field}.module")
    sig = _check_keys(module, ARCHITECTURES[est.architecture], f"{field}.module")
    embedding = est.feature_encoder_.embedding_spec()
    cardinalities = _list(module["cardinalities"], f"{field}.module.cardinalities")
    if cardinalities != embedding["cardinalities"]:
        _fail(f"{field}.module.cardinalities",
              f"{_short_repr.repr(embedding['cardinalities'])} (vocabulary sizes + 2, from the fitted encoding)",
              cardinalities)
    _int(module["n_numeric"], f"{field}.module.n_numeric", embedding["n_numeric"], embedding["n_numeric"])
    _str(module.get("numeric_encoding", "linear"), f"{field}.module.numeric_encoding", (est.numeric_encoding,))
    edges = module.get("numeric_edges")
    if embedding["numeric_edges"] is None:
        if edges is not None:
            _fail(f"{field}.module.numeric_edges", f"None for numeric_encoding={est.numeric_encoding!r}", edges)
    else:
        _list(edges, f"{field}.module.numeric_edges", len(embedding["numeric_edges"]))
        for j, (got, want) in enumerate(zip(edges, embedding["numeric_edges"])):
            got = _numbers(got, f"{field}.module.numeric_edges[{j}]", len(want))
            if not np.allclose(got, want, rtol=1e-9, atol=1e-12):
                _fail(f"{field}.module.numeric_edges[{j}]", "the bin edges standardised by mean and scale",
                      got.tolist())
    _int(module["n_stages"], f"{field}.module.n_stages", k, k)
    units = _list(module.get("tower_units"), f"{field}.module.tower_units")
    if units != [int(u) for u in est.tower_units] or not all(type(u) is int for u in units):
        _fail(f"{field}.module.tower_units", f"{list(est.tower_units)} (the parameter tower_units)", units)
    same = {name: getattr(est, name) for name in _SAME_AS_PARAM}
    if est.architecture in ("mmoe", "ple"):  # PLE: as many task-specific as shared experts
        same["n_experts"] = est.n_experts if est.architecture == "mmoe" else max(1, est.n_experts // 2)
    for name, param in same.items():
        if name in sig and (name not in module or not _same_setting(module[name], param)):
            _fail(f"{field}.module.{name}", f"{param!r} (from the parameter {name})", module.get(name, "nothing"))
    priors = module.get("stage_logit_priors")
    if priors is not None or k:
        _numbers(priors, f"{field}.module.stage_logit_priors", k)
    criterion = spec["criterion"]
    core_prior = module.get("core_prior", 0.0)
    width = core_loss_width(est.core_loss_)
    if width == 1:
        _number(core_prior, f"{field}.module.core_prior")
    else:
        _numbers(core_prior, f"{field}.module.core_prior", width)
    checked = {"cardinalities", "n_numeric", "numeric_encoding", "numeric_edges", "n_stages", "tower_units",
               "n_experts", "stage_logit_priors", "core_prior", *_SAME_AS_PARAM}
    for name in set(module) - checked:
        _like_default(module[name], sig[name].default, f"{field}.module.{name}")
    _check_criterion(criterion, est, f"{field}.criterion")


def _check_criterion(criterion, est, field):
    sig = _check_keys(criterion, HybridLoss, field)
    k = est.n_stages_
    _int(criterion["n_stages"], f"{field}.n_stages", k, k)
    if "core_scale" in criterion:
        _number(criterion["core_scale"], f"{field}.core_scale", positive=True)
    try:
        _, weights, pos = est._check_sizes()
    except ValueError as exc:  # task_weights or stage_pos_weight against the number of targets
        raise ModelFileError(f"config.json params: {exc}") from None
    expected = {"task_weights": None if weights is None else weights.tolist(),
                "pos_weight": None if pos is None else pos.tolist(),
                "uncertainty": est.gradient_adjustment == "uncertainty",
                "core_loss": est.core_loss_, "tweedie_power": float(est.tweedie_power)}
    for name, want in expected.items():
        if name in criterion and not _same_setting(criterion[name], want):
            _fail(f"{field}.{name}", f"{_short_repr.repr(want)} (from the parameters)", criterion[name])
    for name in set(criterion) - {"n_stages", "core_scale", *expected}:
        _like_default(criterion[name], sig[name].default, f"{field}.{name}")
    try:  # small: a few numbers per stage, and the stages are capped
        HybridLoss(**criterion)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{field}: HybridLoss refuses these settings: {exc}") from None


# ---- weights ------------------------------------------------------------------------------------
class _SizedOnMeta(TorchFunctionMode):
    """Tensors created from a size (``torch.empty``, ``zeros``, ``randn``, ...) go to torch's meta
    device, which allocates nothing; tensors created from Python data (``torch.tensor``) stay on the
    CPU, so a module may still turn its priors into floats (ESMM does), and their size is that of
    data already parsed from the file.

    Only torch's native meta kernels run: constructors, ``uniform_``, ``copy_``, indexing and views
    have them, but arithmetic on a meta tensor (``torch.randn(...) * 0.05``) and ``arange`` or
    ``eye`` on the meta device run Python reference kernels that import ``torch._dynamo`` (which
    creates ``$TMPDIR/torchinductor_<user>`` and reads its settings): arithmetic with a meta operand
    is answered here with an empty meta tensor of the broadcast shape and promoted dtype, and a small
    ``arange`` (at most ``_SMALL_ARANGE`` values) runs on the CPU."""

    _SIZED = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
              torch.empty_strided, torch.linspace}
    _SMALL_ARANGE = 1 << 16
    _ARITHMETIC = {"add", "sub", "mul", "div", "true_divide", "rsub", "pow", "neg", "__add__", "__radd__",
                   "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__neg__",
                   "__pow__", "__rpow__", "add_", "sub_", "mul_", "div_", "__iadd__", "__isub__", "__imul__",
                   "__itruediv__"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if func in self._SIZED and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        elif func is torch.eye and kwargs.get("device") is None:
            size = [int(a) for a in args[:2] if isinstance(a, (int, torch.SymInt))] or [int(kwargs["n"])]
            return torch.empty(size * (2 // len(size)), dtype=kwargs.get("dtype"), device="meta")
        elif func is torch.arange and kwargs.get("device") is None:
            bounds = [float(a) for a in args if isinstance(a, (int, float))]
            start, end, step = (0.0, *bounds, 1.0)[-3:] if len(bounds) == 1 else (*bounds, 1.0)[:3]
            if math.ceil((end - start) / step) > self._SMALL_ARANGE:
                kwargs["device"] = "meta"  # a size from the file: never allocated (arange's meta kernel
                # imports dynamo, but no module of this package builds a large arange)
        elif name in self._ARITHMETIC:
            operands = list(args) + list(kwargs.values())
            if any(isinstance(a, torch.Tensor) and a.is_meta for a in operands):
                tensors = [a for a in operands if isinstance(a, torch.Tensor)]
                numbers_ = [a for a in operands if isinstance(a, (bool, int, float, complex))]
                dtype = tensors[0].dtype
                for other in tensors[1:] + numbers_:
                    dtype = torch.result_type(torch.empty(0, dtype=dtype, device="meta"), other)
                if name.endswith("_") and not name.startswith("__") or name.startswith("__i"):
                    return args[0]  # in place: same shape and dtype
                shape = torch.broadcast_shapes(*(t.shape for t in tensors))
                return torch.empty(shape, dtype=dtype, device="meta")
        return func(*args, **kwargs)


def expected_state(spec):
    """``{name: (safetensors dtype, shape)}`` of the state dict of the module the spec builds,
    built with every sized tensor on torch's meta device (nothing allocated)."""
    with _SizedOnMeta():
        module = ARCHITECTURES[spec["architecture"]](**spec["module"])
    return {name: (_SAFETENSORS_DTYPES[t.dtype], list(t.shape)) for name, t in module.state_dict().items()}


def check_weights_header(data, expected):
    """Check the header of the safetensors bytes ``data`` against ``expected`` (names, dtypes,
    shapes) and the tensors' byte ranges against the data, before anything is read from it."""
    field = "weights.safetensors"
    if len(data) < 8:
        raise ModelFileError(f"{field}: {len(data)} bytes, too short for a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > min(len(data) - 8, MAX_SAFETENSORS_HEADER):
        raise ModelFileError(f"{field}: declares a header of {size} bytes; the file has {len(data) - 8} "
                             f"after the length (and a header may have at most {MAX_SAFETENSORS_HEADER})")
    header = _dict(parse_json(bytes(data[8:8 + size]), f"{field} header"), f"{field} header")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(type(v) is str for v in metadata.values()):
        _fail(f"{field} __metadata__", "an object of strings", metadata)
    missing, unknown = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unknown:
        raise ModelFileError(f"{field}: tensors {missing[:5]} are missing and {unknown[:5]} unexpected for "
                             "the net that config.json describes")
    ranges = []
    for name, (dtype, shape) in expected.items():
        entry = _dict(header[name], f"{field} {name}", ("dtype", "shape", "data_offsets"))
        if entry["dtype"] != dtype or entry["shape"] != shape:
            _fail(f"{field} {name}", f"dtype {dtype} and shape {shape} (from config.json)",
                  [entry["dtype"], entry["shape"]])
        offsets = _list(entry["data_offsets"], f"{field} {name}.data_offsets", 2)
        begin, end = (_int(o, f"{field} {name}.data_offsets", 0, len(data)) for o in offsets)
        itemsize = _ITEMSIZES[dtype]
        if end - begin != math.prod(shape) * itemsize:
            _fail(f"{field} {name}.data_offsets", f"a range of {math.prod(shape) * itemsize} bytes", offsets)
        ranges.append((begin, end))
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise ModelFileError(f"{field}: the tensors' byte ranges overlap or leave gaps")
        position = end
    if position != len(data) - 8 - size:
        raise ModelFileError(f"{field}: the tensors cover {position} bytes, the data has {len(data) - 8 - size}")


def check_config(config):
    """Check the whole ``config.json`` (a parsed JSON value) and return (estimator, spec, dropped):
    the estimator holds the parameters and the fitted state but no net yet; ``dropped`` names the
    parameters of NOT_STORED the file had set (reset to None)."""
    _dict(config, "config.json", ("format", "version", "params", "fitted"))
    if config["format"] != FORMAT or type(config["version"]) is not int or config["version"] != VERSION:
        raise ModelFileError(f"unknown format {_short_repr.repr(config['format'])} version "
                             f"{_short_repr.repr(config['version'])}; expected {FORMAT!r} version {VERSION}")
    est, dropped = check_params(config["params"])
    spec = check_fitted(config["fitted"], est)
    return est, spec, dropped
