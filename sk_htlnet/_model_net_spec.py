"""Schema of ``config.json``'s net spec: the torch module's and the loss's settings.

:func:`check_net_spec` checks the settings that build the net (``fitted.net_spec.module``) and
its loss (``fitted.net_spec.criterion``) against the estimator's parameters and its fitted
encoding (sizes, flags, bin edges, priors), and every setting against the constructor's
signature: unknown settings are refused, and a setting without a specific rule must have the type
(and sign) of its default.  Every refusal is a ``ModelFileError`` naming the field.
"""

import inspect
import numbers

import numpy as np

from ._model_fields import (
    MAX_LAYERS, ModelFileError, as_bool, as_int, as_list, as_number, as_numbers, as_object, as_str, fail,
    is_flat_json, short_repr,
)
from .modules import ARCHITECTURES
from .core_losses import core_loss_width
from .losses import HybridLoss


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
        as_bool(value, field)
    elif isinstance(default, numbers.Integral):  # a count (PLE's n_levels): bounded like the layers
        as_int(value, field, 0, MAX_LAYERS)
    elif isinstance(default, numbers.Real):  # of the default's sign: a scale stays positive
        if as_number(value, field) < 0 <= default or (value <= 0 < default):
            fail(field, f"a number {'> 0' if default > 0 else '>= 0'} (like its default {default!r})", value)
    elif isinstance(default, str):
        as_str(value, field)
    elif not is_flat_json(value):
        fail(field, "a JSON scalar or a flat list of scalars", value)


def _same_setting(value, param):
    """Equal, and of the same type (an int and a float count as the same type)."""
    numeric = (int, float)
    if type(value) in numeric and type(param) in numeric:
        return value == param
    return type(value) is type(param) and value == param


def check_net_spec(spec, est, field):
    """Check the net spec against the estimator's parameters and encoding, and each setting against
    its constructor's signature.

    Parameters
    ----------
    spec : dict
        ``{"architecture": str, "module": dict, "criterion": dict}``, as parsed.
    est : HTLNetRegressor
        Holds the checked parameters and the fitted encoding, targets and core loss.
    field : str
        The spec's place in the file, for messages (``"config.json fitted.net_spec"``).
    """
    as_str(spec["architecture"], f"{field}.architecture", (est.architecture,))
    if "batch_size" not in spec:  # a file from before batch_size="auto": its parameter is the int trained with
        if est.batch_size == "auto":
            fail(f"{field}.batch_size", 'the resolved batch size (params.batch_size is "auto")', None)
        spec["batch_size"] = est.batch_size
    low, high = (1, 2**62) if est.batch_size == "auto" else (est.batch_size, est.batch_size)
    as_int(spec["batch_size"], f"{field}.batch_size", low, high)
    k = est.n_stages_
    module = as_object(spec["module"], f"{field}.module")
    sig = _check_keys(module, ARCHITECTURES[est.architecture], f"{field}.module")
    embedding = est.feature_encoder_.embedding_spec()
    cardinalities = as_list(module["cardinalities"], f"{field}.module.cardinalities")
    if cardinalities != embedding["cardinalities"]:
        fail(f"{field}.module.cardinalities",
             f"{short_repr.repr(embedding['cardinalities'])} (vocabulary sizes + 2, from the fitted encoding)",
             cardinalities)
    as_int(module["n_numeric"], f"{field}.module.n_numeric", embedding["n_numeric"], embedding["n_numeric"])
    as_str(module.get("numeric_encoding", "linear"), f"{field}.module.numeric_encoding",
           (embedding["numeric_encoding"], est.numeric_encoding))  # files of 0.1.0.dev0 stored "quantile"
    module["numeric_encoding"] = embedding["numeric_encoding"]
    edges = module.get("numeric_edges")
    if embedding["numeric_edges"] is None:
        if edges is not None:
            fail(f"{field}.module.numeric_edges", f"None for numeric_encoding={est.numeric_encoding!r}", edges)
    else:
        as_list(edges, f"{field}.module.numeric_edges", len(embedding["numeric_edges"]))
        for j, (got, want) in enumerate(zip(edges, embedding["numeric_edges"])):
            got = as_numbers(got, f"{field}.module.numeric_edges[{j}]", len(want))
            if not np.allclose(got, want, rtol=1e-9, atol=1e-12):
                fail(f"{field}.module.numeric_edges[{j}]", "the bin edges standardised by mean and scale",
                     got.tolist())
    as_int(module["n_stages"], f"{field}.module.n_stages", k, k)
    units = as_list(module.get("tower_units"), f"{field}.module.tower_units")
    if units != [int(u) for u in est.tower_units] or not all(type(u) is int for u in units):
        fail(f"{field}.module.tower_units", f"{list(est.tower_units)} (the parameter tower_units)", units)
    try:
        settings = est.param_settings()  # the spec's part that follows from the parameters
    except ValueError as exc:  # task_weights or stage_pos_weight against the number of targets
        raise ModelFileError(f"config.json params: {exc}") from None
    same = {name: value for name, value in settings["module"].items() if name != "tower_units"}
    for name, param in same.items():
        if name in sig and (name not in module or not _same_setting(module[name], param)):
            fail(f"{field}.module.{name}", f"{param!r} (from the parameter {name})", module.get(name, "nothing"))
    priors = module.get("stage_logit_priors")
    if priors is not None or k:
        as_numbers(priors, f"{field}.module.stage_logit_priors", k)
    criterion = spec["criterion"]
    core_prior = module.get("core_prior", 0.0)
    width = core_loss_width(est.core_loss_)
    if width == 1:
        as_number(core_prior, f"{field}.module.core_prior")
    else:
        as_numbers(core_prior, f"{field}.module.core_prior", width)
    checked = {"cardinalities", "n_numeric", "numeric_encoding", "numeric_edges", "n_stages", "tower_units",
               "stage_logit_priors", "core_prior", *same}
    for name in set(module) - checked:
        _like_default(module[name], sig[name].default, f"{field}.module.{name}")
    _check_criterion(criterion, est, settings["criterion"], f"{field}.criterion")


def _check_criterion(criterion, est, expected, field):
    sig = _check_keys(criterion, HybridLoss, field)
    k = est.n_stages_
    as_int(criterion["n_stages"], f"{field}.n_stages", k, k)
    if "core_scale" in criterion:
        as_number(criterion["core_scale"], f"{field}.core_scale", positive=True)
    for name, want in expected.items():
        if name in criterion and not _same_setting(criterion[name], want):
            fail(f"{field}.{name}", f"{short_repr.repr(want)} (from the parameters)", criterion[name])
    for name in set(criterion) - {"n_stages", "core_scale", *expected}:
        _like_default(criterion[name], sig[name].default, f"{field}.{name}")
    try:  # small: a few numbers per stage, and the stages are capped
        HybridLoss(**criterion)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{field}: HybridLoss refuses these settings: {exc}") from None
