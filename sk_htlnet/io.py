"""A model file that is data: JSON settings plus safetensors weights, checked before use.

``pickle`` and ``joblib`` work with :class:`~sk_htlnet.HTLNetRegressor` too, but loading a pickle can
run arbitrary code, so a pickle from an untrusted source must never be loaded.  :func:`save_model`
writes a zip archive holding

- ``config.json``: the format version, the estimator's parameters, the fitted feature encoding
  (column labels, vocabularies with their value types, scalers), the target transform and the net's
  settings, all as plain JSON;
- ``weights.safetensors``: the torch module's tensors in the safetensors format (no code, only data);
- ``manifest.json``: the SHA-256 digest of both files.

For a fitted Pipeline whose final step is an HTLNetRegressor, the archive holds that step's two
files as above, ``pipeline.skops`` (the other steps in skops' format, the HTLNetRegressor step
replaced by a placeholder) and a manifest of the three digests; :func:`load_model` returns the
Pipeline, constructing only the types that skops trusts and those its ``trusted`` argument names.

:func:`load_model` treats the file as untrusted data.  It reads at most ``max_bytes`` from it (the
file and its members after decompression, whatever the zip headers declare), checks every field
against a schema (types, ranges, caps on sizes, and the fields against each other: the encoding
against the columns, the net's settings against the encoding and the parameters, the weights'
shapes against the settings) before it allocates anything the file declares, then builds the net
and runs a probe prediction through the whole pipeline.  Any problem with the file is a
:class:`ModelFileError` naming the field.  Nothing in the file is executed, no setting in it names a
path or a skorch internal (``checkpoint_dir``, ``net_kwargs`` and ``callbacks`` are not stored), and
loading writes nothing.  The digests detect corruption and accidental edits; they are not a
signature (anyone able to edit the file can recompute them), which the checks above do not rely on.

The mechanics live in private sibling modules: ``_model_archive`` (the zip container of both
kinds of file, read under size caps), ``_json_input`` (parsing untrusted JSON), ``_model_fields``
(the error, the caps, checks of single fields), ``_model_schema`` and ``_model_net_spec``
(``config.json``), ``_model_weights`` (``weights.safetensors`` against a meta-device build),
``_model_probe`` (the probe prediction), ``_model_pipeline`` (the file of a Pipeline, its skops
member checked as data).  The estimator is read and rebuilt through its documented state methods
(``fitted_state``, ``set_fitted_state``, ``check_params``).
"""

import json
import numbers
import re
import warnings

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ._json_input import parse_json
from ._model_archive import config_cap, open_regular, read_archive, write_archive
from ._model_fields import ModelFileError, encode_value
from ._model_schema import FORMAT, NOT_STORED, VERSION, check_config, check_params
from ._model_pipeline import (SKOPS_MEMBER, attach, check_trusted, dump_shell, is_pipeline_file, load_shell,
                              read_pipeline_archive, split_pipeline, write_pipeline_archive)
from ._model_probe import probe
from ._model_weights import check_weights_header, expected_state

__all__ = ["ModelFileError", "load_model", "save_model"]

DEFAULT_MAX_BYTES = 2 << 30
"""Default ``max_bytes`` of :func:`load_model`: 2 GiB, for the file and for its members after
decompression (a model with 500 million float32 weights)."""


# ---- save ---------------------------------------------------------------------------------------
def _plain(value):
    """NumPy scalars as Python scalars, tuples and arrays as lists (what JSON holds)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return value


def _jsonable_params(est):
    params = est.get_params(deep=False)
    dropped = [name for name in NOT_STORED if params.get(name) not in (None, [], {})]
    for name in NOT_STORED:
        params[name] = None
    if not isinstance(params["random_state"], (numbers.Integral, type(None))):
        params["random_state"] = None
    params["device"] = str(params["device"])
    params = {name: _plain(value) for name, value in params.items()}
    try:
        params = json.loads(json.dumps(params))  # float subclasses as floats
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save_model cannot store a parameter as JSON: {exc}; use pickle") from exc
    try:  # what load_model refuses is not written (n_threads or a size above the caps, ...)
        check_params(params, field="parameters")
    except ModelFileError as exc:
        raise ValueError(f"save_model cannot store these parameters: {exc}") from None
    return params, dropped


def _encode_all(values, what, tuples=False):
    try:
        return [encode_value(v, tuples) for v in values]
    except TypeError as exc:
        raise ValueError(
            f"{what} holds a value of type {exc} that the model file cannot store (str, int, float and "
            "bool can, and tuples of them for column labels); use pickle"
        ) from None


def _members(estimator):
    """``(config.json bytes, weights.safetensors bytes, parameters not stored)`` of a fitted estimator."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "net_")
    enc = estimator.feature_encoder_
    columns = enc.columns_
    categorical = [c for c, m in zip(columns, enc.categorical_mask_) if m]
    vocabularies = [_encode_all(vocab, f"column {column!r}") for column, vocab in zip(categorical, enc.vocabularies_)]
    for c in columns:
        if isinstance(c, tuple) and any(isinstance(part, tuple) for part in c):
            raise ValueError(f"the column label {c!r} nests tuples, which the model file cannot store; use pickle")
    lengths = {len(c) if isinstance(c, tuple) else -1 for c in columns}
    if len(lengths) > 1 and any(isinstance(c, tuple) for c in columns):
        raise ValueError("the column labels mix tuples of different lengths or tuples and scalars, which the model "
                         "file cannot store (a MultiIndex has tuples of one length); use pickle")
    params, dropped = _jsonable_params(estimator)
    state = estimator.fitted_state()
    transform = estimator.core_transform_
    config = {
        "format": FORMAT,
        "version": VERSION,
        "params": params,
        "fitted": {
            "n_features_in": int(estimator.n_features_in_),
            "feature_names_in": None if not hasattr(estimator, "feature_names_in_")
            else [str(c) for c in estimator.feature_names_in_],
            "columns": _encode_all(columns, "the column labels", tuples=True),
            "categorical_mask": [bool(m) for m in enc.categorical_mask_],
            "vocabularies": vocabularies,
            "mean": enc.mean_.tolist(),
            "scale": enc.scale_.tolist(),
            "min": enc.min_.tolist(),
            "max": enc.max_.tolist(),
            "bin_edges": [e.tolist() for e in enc.bin_edges_],
            "target_names": list(estimator.target_names_),
            "y_1d": state["y_1d"],
            "target_transform": estimator.target_transform_,
            "transform": {"mean": transform.mean, "std": transform.std, "smearing": transform.smearing,
                          "low": transform.low, "high": transform.high,
                          "knots_z": None if transform.knots_z is None else transform.knots_z.tolist(),
                          "knots_y": None if transform.knots_y is None else transform.knots_y.tolist()},
            "net_spec": state["net_spec"],
            "n_iter": int(estimator.n_iter_),
        },
    }
    # own storage per tensor: safetensors refuses tensors that share memory (tied or sliced buffers)
    state = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
             for k, v in estimator.net_.module_.state_dict().items()}
    return json.dumps(config).encode("utf-8"), save_safetensors(state), dropped


def save_model(estimator, path):
    """Save a fitted :class:`~sk_htlnet.HTLNetRegressor`, or a Pipeline ending in one, as data.

    The file loads without running code.  A Pipeline's other steps are stored with skops
    (:mod:`skops.io`), its HTLNetRegressor step as the estimator alone is (JSON settings and
    safetensors weights), in one zip archive; see :func:`load_model` and the module's docstring.

    Parameters
    ----------
    estimator : HTLNetRegressor or sklearn.pipeline.Pipeline
        A fitted estimator, or a fitted Pipeline whose final step is one (directly or as the final
        step of a Pipeline nested as its final step), after scikit-learn transformers (a
        ColumnTransformer, OneHotEncoder, StandardScaler, SimpleImputer, a FunctionTransformer of a
        numpy function, ...).  The Pipeline given is not modified.
    path : str or path-like
        Destination file (conventionally ``*.htlnet``); overwritten if it exists.

    Warns
    -----
    UserWarning
        If ``checkpoint_dir``, ``net_kwargs`` or ``callbacks`` is set: the file does not store them
        (a path, skorch settings and Python objects would steer the loaded estimator), and the loaded
        estimator has None; set them again on it if needed.  If the Pipeline holds types that skops
        does not trust by default (the warning names them: :func:`load_model` then needs them in its
        ``trusted`` argument), or sets ``memory`` (reset to None at load).

    Raises
    ------
    TypeError
        If ``estimator`` is neither an HTLNetRegressor nor a Pipeline whose final step is one, or
        the Pipeline has an HTLNetRegressor elsewhere than its final step.
    sklearn.exceptions.NotFittedError
        If the estimator, or a step of the Pipeline, is not fitted (the message names the step).
    ValueError
        If a column label or category value cannot be stored as data (column labels: str, int,
        float, bool, or tuples of them as in a MultiIndex; category values: str, int, float, bool),
        a parameter is not JSON, or a parameter exceeds what :func:`load_model` accepts
        (``n_threads`` above 1024, a size above its cap); if skops cannot store a step of the
        Pipeline, or stores what :func:`load_model` refuses (a scipy sparse matrix, transformers whose
        output columns are not those the HTLNetRegressor step was fitted on) or could never import (a
        lambda or a function defined inside a function, which skops stores by module and name only:
        the message names the step; use a module-level named function such as numpy's); use pickle
        for such models.  Nothing is written.
    """
    from sklearn.pipeline import Pipeline

    from .estimator import HTLNetRegressor

    if isinstance(estimator, Pipeline):
        shell, estimator = split_pipeline(estimator)
        config_bytes, weights_bytes, dropped = _members(estimator)
        write_pipeline_archive(path, config_bytes, weights_bytes, dump_shell(shell, estimator))
    elif isinstance(estimator, HTLNetRegressor):
        config_bytes, weights_bytes, dropped = _members(estimator)
        write_archive(path, {"config.json": config_bytes, "weights.safetensors": weights_bytes})
    else:
        raise TypeError(f"save_model saves a fitted HTLNetRegressor or a fitted Pipeline whose final step is one, "
                        f"got {type(estimator).__name__}")
    if dropped:
        warnings.warn(
            f"save_model did not store {dropped}: a model file holds data only, and a path, skorch settings "
            "or callbacks would steer the loaded estimator; the loaded estimator has None (set them again "
            "on it if needed)", UserWarning, stacklevel=2,
        )


# ---- load ---------------------------------------------------------------------------------------
def _check_device_argument(device):
    from .estimator import HTLNetRegressor

    probe = HTLNetRegressor(device=device)
    probe.check_params()
    target = torch.device(device)
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}, but torch sees {torch.cuda.device_count()} GPU(s)")


def _stored_device(est, notes):
    """The file's device if this machine has it, else "cpu" with a note; a device that is neither
    'cpu' nor 'cuda' is refused."""
    refused = f"config.json params.device: expected 'cpu', 'cuda' or 'cuda:N', got {est.device!r}"
    try:
        device = torch.device(est.device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelFileError(refused) from None
    if device.type not in ("cpu", "cuda") or not re.fullmatch(r"cpu|cuda(:[0-9]{1,4})?", str(est.device)):
        raise ModelFileError(refused)  # "cpu:0" is a torch device, but an estimator holding it does not pickle
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        missing = "no GPU is available" if not torch.cuda.is_available() else (
            f"no GPU of index {device.index} is available (torch sees {torch.cuda.device_count()})")
        notes.append(f"the model was saved from device={est.device!r}, but {missing}: loading it on 'cpu' "
                     "(pass device= to choose)")
        return "cpu"
    return est.device


def load_model(path, device=None, *, max_bytes=DEFAULT_MAX_BYTES, trusted=None):
    """Load a model saved by :func:`save_model`, treating the file as untrusted data.

    Nothing in the file is executed and nothing is written (no folder is created).  The file, and
    its members after decompression, are read with at most ``max_bytes`` bytes in all, in 1 MiB
    chunks whatever the zip headers declare; a member may also decompress to at most 200 times its
    compressed size plus 16 MiB (a zip bomb is refused).  ``config.json`` is checked against a schema before anything it
    declares is allocated: the type and range of every field, caps on sizes (``n_threads`` at most
    1024; ``embedding_dim``, ``label_embedding_dim``, ``fusion_dim`` and each of at most 64 layers of
    ``tower_units`` at most 65536; ``n_bins`` at most 65536; ``n_experts`` at most 1024; at most 256
    stages), and the fields against each other (vocabularies against the categorical mask, scalers
    and bin edges against the numeric columns, target names against the stages, the net's settings
    against the encoding and the parameters; net and loss settings against the constructors'
    signatures).  The weights' header is checked against the tensor names, dtypes and shapes the
    settings imply (computed on torch's meta device, which allocates nothing) before the weights
    are read, and the weights must be finite.  The net is then built, its buffers derived from the
    settings must equal the file's, and a probe prediction (up to 1024 categories of each field, a
    row of out-of-vocabulary values, numeric values from the training minimum to the maximum, then
    a row of missing values; under the caller's thread setting) must give finite values of the
    right shape.  Peak memory is a multiple of the bytes read: parsing JSON takes up to about 15
    times the size of ``config.json``, which is capped at ``max_bytes / 8`` (at least 16 MiB).

    A file of a Pipeline holds its HTLNetRegressor step, loaded as above, and its other steps in
    skops' format, checked as data before skops reads them (under the same ``max_bytes``) and then
    loaded with :func:`skops.io.loads`, which constructs only the types skops trusts
    (scikit-learn's estimators, numpy and scipy functions, builtins, ...), ``numpy.dtype``,
    ``make_column_selector``, and those named in ``trusted``: a file holding any other type is
    refused before anything is constructed, and the error lists the types, as
    :func:`skops.io.get_untrusted_types` reports them.  A Pipeline's ``memory`` is reset to None.

    Parameters
    ----------
    path : str or path-like
    device : str or torch.device, default=None
        Where to put the model (its ``device`` parameter).  None keeps the device it was saved
        from, except that a model saved from a GPU this machine lacks loads on ``"cpu"``, with a
        warning.
    max_bytes : int, default=2 GiB (``DEFAULT_MAX_BYTES``)
        Largest file, and largest total of its members after decompression, that is read.  Lower it
        for a file from an untrusted source to what the models you expect need.
    trusted : list of str, default=None
        For a file of a Pipeline: the fully qualified names of the types to trust beyond skops'
        default set (such as ``["mypackage.MyTransformer"]``, the names the error of a refused file
        lists).  Loading constructs them, which runs their code: name only types you have reviewed,
        from a file whose source you trust.  Ignored for a file of an estimator alone.

    Returns
    -------
    HTLNetRegressor or sklearn.pipeline.Pipeline
        What was saved: a fitted estimator, or a fitted Pipeline whose HTLNetRegressor step is such
        an estimator; its predictions equal those of the saved one.  Its ``history_`` is
        empty (the training history is not part of the file); ``n_iter_`` counts the saved epochs.
        The optimiser state is not part of the file either: training continued with ``partial_fit``
        or ``warm_start`` starts Adam's moments and the random generators afresh.
        ``checkpoint_dir``, ``net_kwargs`` and ``callbacks`` are None.

    Warns
    -----
    UserWarning
        If the file sets ``checkpoint_dir``, ``net_kwargs`` or ``callbacks`` (save_model does not
        write them), or a Pipeline in it sets ``memory``: they are reset to None, and the warning
        names them.  If the model was saved from a GPU this machine lacks and ``device`` is None.

    Raises
    ------
    ModelFileError
        For anything about the file's content: not a zip archive, members other than the three,
        more than ``max_bytes``, a digest that does not match, an unknown format or version,
        invalid JSON (nesting too deep included), a field of the wrong type or range, above a cap,
        or contradicting another field, weights that do not fit the settings or are not finite, or
        a probe prediction that fails; in a file of a Pipeline, a skops member that is malformed or
        too large, holds a type that is not trusted (the message lists them and the ``trusted``
        argument that would accept them) or a name no import resolves (a lambda's, which no
        ``trusted`` makes load), is not a Pipeline ending in the HTLNetRegressor's
        placeholder, or whose transformers output other columns than the HTLNetRegressor step was
        fitted on.  The message names the field and what was expected.
    TypeError
        If ``trusted`` is not None or a list of str.
    ValueError
        If ``device`` is not a "cpu" or "cuda" device or names a GPU that is not available, or
        ``max_bytes`` is not a positive int (errors about the arguments, not the file).
    OSError
        If ``path`` cannot be opened (``FileNotFoundError``, ``PermissionError``, ...).
    MemoryError, torch.cuda.OutOfMemoryError
        Not wrapped: the caps keep a file from declaring more than ``max_bytes`` allows, so running
        out of memory means this machine cannot hold a model of that size.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    if device is not None:  # clear errors for a device that is not one, or a GPU that is not there
        _check_device_argument(device)
    trusted = check_trusted(trusted)
    notes = []
    with open_regular(path) as f:  # a path that cannot be opened raises OSError, as open() does
        try:
            members = read_pipeline_archive(f, max_bytes) if is_pipeline_file(f) else read_archive(f, max_bytes)
        except (ModelFileError, MemoryError):
            raise
        except Exception as exc:  # zipfile's errors (BadZipFile, an unsupported compression, ...)
            raise ModelFileError(f"the file is not a readable zip archive: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}") from exc
    try:
        shell = load_shell(members, max_bytes, trusted) if SKOPS_MEMBER in members else None
        config = parse_json(members.pop("config.json"), "config.json", config_cap(max_bytes), ModelFileError)
        est, fitted, dropped = check_config(config)
        del config
        spec = fitted["net_spec"]
        if dropped:
            notes.append(f"the model file sets {dropped}, which a model file does not carry (a path, skorch "
                         "settings or callbacks would steer the loaded estimator): reset to None")
        est.device = device if device is not None else _stored_device(est, notes)
        weights = members.pop("weights.safetensors")
        check_weights_header(weights, expected_state(spec))
        state = load_safetensors(weights)
        del weights
        for name, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelFileError(f"weights.safetensors {name}: expected finite values")
        net = est.set_fitted_state(fitted).net_  # built from the checked spec, initialised
        derived = {name: buffer for name, buffer in net.module_.state_dict().items()
                   if name not in dict(net.module_.named_parameters())}
        for name, buffer in derived.items():  # bin_low, bin_width: computed from the checked numeric_edges
            if not torch.equal(state[name], buffer.cpu()):
                raise ModelFileError(f"weights.safetensors {name}: expected the values computed from "
                                     "config.json net_spec.module.numeric_edges")
        net.module_.load_state_dict({k: v.to(net.device) for k, v in state.items()})
        del state
        probe(est)
        if shell is not None:
            est = attach(shell, est, notes)
    except ModelFileError:
        raise
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as exc:  # zipfile's, safetensors' and torch's errors on a malformed file
        raise ModelFileError(f"malformed model file: {type(exc).__name__}: {str(exc)[:300]}") from exc
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return est
