"""A model file that loads without executing code: JSON settings plus safetensors weights.

``pickle`` and ``joblib`` work with :class:`~sk_htlnet.HTLNetRegressor` too, but loading a pickle can
run arbitrary code, so a pickle from an untrusted source must never be loaded.  :func:`save_model`
writes a zip archive holding

- ``config.json``: the format version, the estimator's parameters, the fitted feature encoding
  (column names, vocabularies with their value types, scalers), the target transform and the net's
  settings, all as plain JSON;
- ``weights.safetensors``: the torch module's tensors in the safetensors format (no code, only data);
- ``manifest.json``: the SHA-256 digest of both files.

:func:`load_model` checks the archive's members, the digests and every field it reads, and refuses a
file that fails any check with :class:`ModelFileError`.  It parses JSON and tensors only: nothing
in the file is executed.  The digests detect corruption and accidental edits; they are not a
signature (anyone able to edit the file can recompute them), which is fine because the format
cannot carry code.
"""

import hashlib
import json
import warnings
import zipfile

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from skorch.callbacks import LoadInitState

__all__ = ["ModelFileError", "load_model", "save_model"]

FORMAT = "sk_htlnet-model"
VERSION = 1
_MEMBERS = {"config.json", "weights.safetensors", "manifest.json"}
# Parameters that hold Python objects (callbacks) cannot be stored as data.
_UNSTORABLE = ("callbacks",)


class ModelFileError(ValueError):
    """The file is not a valid, intact sk_htlnet model file."""


def _encode_value(value):
    if isinstance(value, (bool, np.bool_)):
        return ["bool", bool(value)]
    if isinstance(value, (int, np.integer)):
        return ["int", int(value)]
    if isinstance(value, (float, np.floating)):
        return ["float", float(value)]
    if isinstance(value, str):
        return ["str", value]
    raise TypeError(type(value).__name__)


def _decode_value(item):
    kinds = {"bool": bool, "int": int, "float": float, "str": str}
    if not (isinstance(item, list) and len(item) == 2 and item[0] in kinds):
        raise ModelFileError(f"invalid vocabulary entry {item!r}")
    kind, value = item
    if kind == "float" and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kinds[kind]) or (kind == "int" and isinstance(value, bool)):
        raise ModelFileError(f"vocabulary entry {item!r} does not hold a {kind}")
    return value


def _jsonable_params(est):
    params = est.get_params(deep=False)
    for name in _UNSTORABLE:
        if params.get(name):
            raise ValueError(f"save_model cannot store the parameter {name!r} (Python objects); use pickle")
    params = {k: v for k, v in params.items() if k not in _UNSTORABLE}
    if not isinstance(params["random_state"], (int, type(None))):
        params["random_state"] = None
    for key in ("tower_units", "task_weights", "stage_pos_weight", "categorical_features"):
        if isinstance(params[key], (tuple, np.ndarray)):
            params[key] = np.asarray(params[key]).tolist()
    params["device"] = str(params["device"])
    if params["checkpoint_dir"] is not None:
        params["checkpoint_dir"] = str(params["checkpoint_dir"])
    try:
        json.dumps(params)
    except TypeError as exc:
        raise ValueError(f"save_model cannot store a parameter as JSON: {exc}; use pickle") from exc
    return params


def save_model(estimator, path):
    """Save a fitted :class:`~sk_htlnet.HTLNetRegressor` to a file that loads without running code.

    Parameters
    ----------
    estimator : HTLNetRegressor
        A fitted estimator.
    path : str or path-like
        Destination file (conventionally ``*.htlnet``); overwritten if it exists.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If a parameter (``callbacks``) or a category value (a type other than str, int, float or
        bool) cannot be stored as data; use pickle for such models.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "net_")
    enc = estimator._encoder
    vocabularies = []
    for column, vocab in zip(enc._cat_cols, enc.vocabularies_):
        try:
            vocabularies.append([_encode_value(v) for v in vocab])
        except TypeError as exc:
            raise ValueError(
                f"column {column!r} has a category value of type {exc} that the model file cannot "
                "store (str, int, float and bool can); use pickle"
            ) from exc
    transform = estimator._core_transform
    config = {
        "format": FORMAT,
        "version": VERSION,
        "params": _jsonable_params(estimator),
        "fitted": {
            "n_features_in": int(estimator.n_features_in_),
            "feature_names_in": None if not hasattr(estimator, "feature_names_in_")
            else [str(c) for c in estimator.feature_names_in_],
            "columns": [_encode_value(c) for c in enc._columns],
            "categorical_mask": [bool(m) for m in enc.categorical_mask_],
            "vocabularies": vocabularies,
            "mean": enc.mean_.tolist(),
            "scale": enc.scale_.tolist(),
            "min": enc.min_.tolist(),
            "max": enc.max_.tolist(),
            "bin_edges": [e.tolist() for e in enc.bin_edges_],
            "target_names": list(estimator.target_names_),
            "y_1d": bool(estimator._y_1d),
            "target_transform": estimator.target_transform_,
            "transform": {"mean": transform.mean, "std": transform.std, "smearing": transform.smearing,
                          "low": transform.low, "high": transform.high,
                          "knots_z": None if transform.knots_z is None else transform.knots_z.tolist(),
                          "knots_y": None if transform.knots_y is None else transform.knots_y.tolist()},
            "net_spec": estimator._net_spec_,
            "n_iter": int(estimator.n_iter_),
        },
    }
    config_bytes = json.dumps(config).encode("utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in estimator.net_.module_.state_dict().items()}
    weights_bytes = save_safetensors(state)
    manifest = {
        "config.json": hashlib.sha256(config_bytes).hexdigest(),
        "weights.safetensors": hashlib.sha256(weights_bytes).hexdigest(),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", config_bytes)
        archive.writestr("weights.safetensors", weights_bytes)
        archive.writestr("manifest.json", json.dumps(manifest))


def _read_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if names != _MEMBERS:
                raise ModelFileError(f"unexpected archive members {sorted(names)}; expected {sorted(_MEMBERS)}")
            members = {name: archive.read(name) for name in _MEMBERS}
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{path} is not an sk_htlnet model file (not a zip archive)") from exc
    try:
        manifest = json.loads(members["manifest.json"])
    except ValueError as exc:
        raise ModelFileError("manifest.json is not valid JSON") from exc
    for name in ("config.json", "weights.safetensors"):
        if hashlib.sha256(members[name]).hexdigest() != manifest.get(name):
            raise ModelFileError(f"{name} does not match its digest in the manifest: the file was altered")
    return members


def load_model(path, device=None):
    """Load a model saved by :func:`save_model`, executing nothing from the file.

    Parameters
    ----------
    path : str or path-like
    device : str or torch.device, default=None
        Where to put the model (its ``device`` parameter).  None keeps the device it was saved
        from, except that a model saved from a GPU loads on ``"cpu"``, with a warning, where no
        GPU is available (as skorch does for pickles).

    Returns
    -------
    HTLNetRegressor
        A fitted estimator whose predictions equal those of the saved one.  Its ``history_`` is
        empty (the training history is not part of the file); ``n_iter_`` counts the saved epochs.
        The optimiser state is not part of the file either: training continued with ``partial_fit``
        or ``warm_start`` starts Adam's moments and the random generators afresh (a checkpoint
        folder, ``checkpoint_dir``, keeps them).

    Raises
    ------
    ModelFileError
        If the file is not a zip archive with exactly the expected members, a digest does not
        match, the format or version is unknown, or a field is malformed.
    ValueError
        If ``device`` is not a "cpu" or "cuda" device, or names a GPU where none is available.
    """
    from .estimator import HTLNetRegressor, _CoreTransform
    from .preprocessing import FeatureEncoder

    if device is not None:  # clear errors for a device that is not one, or a GPU that is not there
        probe = HTLNetRegressor(device=device)
        probe._validate_params()
        probe._check_setup()
    members = _read_archive(path)
    try:
        config = json.loads(members["config.json"])
    except ValueError as exc:
        raise ModelFileError("config.json is not valid JSON") from exc
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise ModelFileError(f"unknown format {config.get('format')!r} version {config.get('version')!r}")
    try:
        fitted = config["fitted"]
        params = dict(config["params"])
        if device is not None:
            params["device"] = device
        elif torch.device(params.get("device", "cpu")).type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"the model was saved from device={params['device']!r}, but no GPU is available: "
                "loading it on 'cpu' (pass device= to choose)", UserWarning, stacklevel=2,
            )
            params["device"] = "cpu"
        est = HTLNetRegressor(**params)
        est._validate_params()
        enc = FeatureEncoder(est.categorical_features, est.numeric_encoding, est.n_bins)
        enc._columns = [_decode_value(c) for c in fitted["columns"]]
        enc.categorical_mask_ = np.asarray(fitted["categorical_mask"], dtype=bool)
        enc._cat_cols = [c for c, m in zip(enc._columns, enc.categorical_mask_) if m]
        enc._num_cols = [c for c, m in zip(enc._columns, enc.categorical_mask_) if not m]
        enc.vocabularies_ = [
            pd.Index([_decode_value(v) for v in vocab], dtype=object) for vocab in fitted["vocabularies"]
        ]
        enc.cardinalities_ = [len(v) + 2 for v in enc.vocabularies_]
        enc.mean_ = np.asarray(fitted["mean"], dtype=np.float64)
        enc.scale_ = np.asarray(fitted["scale"], dtype=np.float64)
        enc.min_ = np.asarray(fitted["min"], dtype=np.float64)
        enc.max_ = np.asarray(fitted["max"], dtype=np.float64)
        enc.bin_edges_ = [np.asarray(e, dtype=np.float64) for e in fitted.get("bin_edges", [[]] * len(enc.mean_))]
        est._encoder = enc
        est.n_features_in_ = int(fitted["n_features_in"])
        if fitted["feature_names_in"] is not None:
            est.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)
        est.target_names_ = [str(n) for n in fitted["target_names"]]
        est.n_stages_ = len(est.target_names_) - 1
        est._y_1d = bool(fitted["y_1d"])
        est.target_transform_ = str(fitted["target_transform"])
        est.core_loss_ = str(fitted["net_spec"]["criterion"].get("core_loss", "mse"))
        transform = _CoreTransform(est.target_transform_, est.retransformation, calibrate=est.core_loss_ != "mse")
        transform.mean = float(fitted["transform"]["mean"])
        transform.std = float(fitted["transform"]["std"])
        transform.smearing = float(fitted["transform"]["smearing"])
        transform.low = float(fitted["transform"]["low"])
        transform.high = float(fitted["transform"]["high"])
        for name in ("knots_z", "knots_y"):
            knots = fitted["transform"][name]
            setattr(transform, name, None if knots is None else np.asarray(knots, dtype=np.float64))
        est._core_transform = transform
        est._net_spec_ = fitted["net_spec"]
        net = est._make_net(est._net_spec_, seed=0, early=False)
        net.initialize()
        state = load_safetensors(members["weights.safetensors"])
        net.module_.load_state_dict({k: v.to(net.device) for k, v in state.items()})
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"malformed model file: {type(exc).__name__}: {exc}") from exc
    for _, callback in net.callbacks_:  # a continued fit starts from these weights, not from checkpoint_dir
        if isinstance(callback, LoadInitState):
            callback.did_load_ = True
    est.net_ = net
    est.history_ = net.history
    est._built_with = est._params_in_net()
    est.n_iter_ = int(fitted["n_iter"])
    return est
