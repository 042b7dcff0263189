"""The ONNX graph of a fitted estimator: the string lookup of each categorical column (ONNX-ML
``LabelEncoder``) in front of the exported :class:`._serving_module.ServingModule`."""

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ..preprocessing import MISSING_ID, OOV_ID
from ._serving_module import ServingModule

__all__ = ["input_names", "onnx_inputs", "to_onnx"]

OUTPUT_NAME = "predictions"
MISSING_STRING = ""  # a missing categorical value in a string input
ML_OPSET = 3  # ai.onnx.ml: LabelEncoder with keys_strings / values_int64s
_EXAMPLE_ROWS = 3  # the traced batch; the exported batch dimension is free
_EXTERNAL_DATA_BYTES = 1_500_000_000  # below protobuf's 2 GB limit


def _onnx():
    import torch

    try:
        import onnx
        import onnxscript  # noqa: F401 - the dynamo exporter's
    except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
        raise ImportError('sk_htlnet.export needs onnx and onnxscript: pip install "sk-htlnet[onnx]"') from exc
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    if (major, minor) < (2, 5):  # pragma: no cover - the tests run a recent torch
        raise ImportError(f"sk_htlnet.export needs torch >= 2.5 (torch.onnx.export(dynamo=True)), "
                          f"found {torch.__version__}")
    return onnx


def _fitted(estimator):
    check_is_fitted(estimator, "net_")
    encoder = estimator.feature_encoder_
    return encoder, list(encoder.columns_), [bool(m) for m in encoder.categorical_mask_]


def input_names(estimator):
    """The graph's input names: each fitted column's label as a string, in the fitted order.

    Parameters
    ----------
    estimator : HTLNetRegressor
        Fitted.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        If two column labels have the same string (``1`` and ``"1"``), which one graph cannot
        tell apart.
    """
    _, columns, _ = _fitted(estimator)
    names = [str(c) for c in columns]
    if len(set(names)) != len(names):
        clash = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"column labels {clash} are the same string for several columns; rename them to export")
    return names


def _vocabulary_strings(column, vocabulary):
    strings = [str(v) for v in vocabulary]
    if len(set(strings)) != len(strings):
        clash = sorted({s for s in strings if strings.count(s) > 1})[:5]
        raise ValueError(
            f"categorical column {column!r} holds distinct values with the same string {clash} (such as 1 "
            "and '1'); a string input cannot tell them apart: map them to distinct strings and refit")
    return strings


def onnx_inputs(estimator, X):
    """The inputs of the graph of :func:`to_onnx` for the rows of X.

    Each categorical value is looked up as ``predict`` looks it up (so ``1`` and ``1.0`` match
    the same training category, as they do in ``predict``) and passed as that category's string;
    a value ``predict`` treats as unseen is passed as a string the graph does not know.

    Parameters
    ----------
    estimator : HTLNetRegressor
        Fitted (the graph's estimator).
    X : DataFrame or array-like of shape (n_samples, n_features)
        The columns seen in ``fit``, checked as ``predict`` checks them.

    Returns
    -------
    dict of str to ndarray of shape (n_samples,)
        One entry per column, named by :func:`input_names`: a numpy object array of str for a
        categorical column (the empty string for a missing value), float64 for a numeric column
        (NaN for a missing value).

    Raises
    ------
    ValueError
        If X does not have the fitted columns (the message of ``predict``), or a numeric column
        holds non-numbers.
    """
    encoder, columns, mask = _fitted(estimator)
    names = input_names(estimator)
    ids = estimator.make_dataset(X).cat.numpy()  # X checked, and categories looked up, as predict does
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object), columns=columns)
    vocabularies = iter(encoder.vocabularies_)
    out, j = {}, 0
    for name, position, is_cat in zip(names, range(len(columns)), mask):
        if is_cat:
            strings = _vocabulary_strings(columns[position], next(vocabularies))
            unseen = _unseen_string(strings)
            table = np.empty(len(strings) + 2, dtype=object)  # indexed by the encoder's ids
            table[OOV_ID], table[MISSING_ID], table[2:] = unseen, MISSING_STRING, strings
            out[name] = table[ids[:, j]]
            j += 1
        else:
            col = frame.iloc[:, position]
            try:
                out[name] = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"numeric column {columns[position]!r} holds non-numeric values") from exc
    return out


def _unseen_string(strings):
    """A string that is no training category's (the graph maps it to the out-of-vocabulary id)."""
    known, unseen = set(strings), "\x00unseen"
    while unseen in known:
        unseen += "\x00"
    return unseen


@contextlib.contextmanager
def _quiet_logger(name):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _torch_graph(module, n_columns, mask, ids_names, names, opset):
    """The ONNX model of the serving module (dynamo exporter), its inputs renamed."""
    import torch

    example = []
    for is_cat in mask:
        example.append(torch.full((_EXAMPLE_ROWS,), 2, dtype=torch.long) if is_cat
                       else torch.linspace(-1.0, 1.0, _EXAMPLE_ROWS, dtype=torch.float64))
    batch = torch.export.Dim("batch", min=1)
    graph_names = [ids if is_cat else name for ids, name, is_cat in zip(ids_names, names, mask)]
    module.eval()
    with warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        # the exporter's notes on our module (attention weights kept for inspection, a torchvision
        # it does not need, renamed axes) are not the user's to act on
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, tuple(example), dynamo=True, input_names=graph_names, output_names=[OUTPUT_NAME],
            dynamic_shapes=(tuple({0: batch} for _ in range(n_columns)),), opset_version=opset, verbose=False,
        )
    return program.model_proto


def to_onnx(estimator, path, *, opset=18):
    """Write a fitted estimator as one ONNX graph: raw columns in, ``predict``'s array out.

    The graph holds every step of ``predict``: the category lookup (an ONNX-ML ``LabelEncoder``
    per categorical column, with the out-of-vocabulary and missing ids), the missing flags, the
    clipping of each numeric column to its training range and its encoding (standardisation, the
    quantile buckets or the piecewise-linear bins with their edges), the network in eval mode, the
    stage sigmoids, the core head's mean, the retransformation (the isotonic knots as a
    piecewise-linear interpolation, Duan's smearing, or the inverse standardisation) and the
    clipping to the training range of the core target.

    Parameters
    ----------
    estimator : HTLNetRegressor
        Fitted; every architecture, numeric encoding, core loss and retransformation exports.
    path : str or path-like
        The ``.onnx`` file to write (its folder must exist); a model over 1.5 GB of weights keeps
        them in a ``<name>.data`` file beside it (ONNX external data).
    opset : int, default=18
        The ONNX operator set of the graph's default domain (``ai.onnx.ml`` is at version 3).

    Returns
    -------
    pathlib.Path
        The written file.

    Notes
    -----
    Inputs, one per fitted column, named by :func:`input_names`, each of shape (n,) with a free
    batch dimension: ``tensor(string)`` for a categorical column (matched against ``str`` of
    each training category; the empty string is a missing value unless it was a training
    category), ``tensor(double)`` for a numeric one (NaN = missing).  Output ``"predictions"``:
    ``tensor(double)`` (n, k + 1), stage probabilities then the core target's conditional mean
    in its units ((n,) when the estimator was fitted on a 1-D y), as ``predict`` returns them.
    Unlike ``predict``, the graph cannot raise: a non-finite prediction (inputs far outside the
    training range) is returned as is.  :func:`onnx_inputs` builds the inputs from a DataFrame.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If two columns' labels, or two categories of a column, have the same string.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    ImportError
        Without onnx and onnxscript, or with torch older than 2.5.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper

    encoder, columns, mask = _fitted(estimator)
    names = input_names(estimator)
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"to_onnx: the folder {str(path.parent)!r} of path does not exist")
    vocabularies = iter(encoder.vocabularies_)
    lookups = {}
    for name, column, is_cat in zip(names, columns, mask):
        if is_cat:
            lookups[name] = _vocabulary_strings(column, next(vocabularies))
    module = ServingModule(estimator.net_.module_, encoder, estimator.core_transform_, estimator.core_loss_,
                           estimator.n_stages_, estimator.predict_ndim_ == 1)
    ids_names = [f"sk_htlnet_ids_{i}" for i in range(len(columns))]
    model = _torch_graph(module, len(columns), mask, ids_names, names, opset)

    graph = model.graph
    inputs = {i.name: i for i in graph.input}
    lookup_nodes, new_inputs = [], []
    for name, ids, is_cat in zip(names, ids_names, mask):
        if not is_cat:
            new_inputs.append(inputs[name])
            continue
        strings = lookups[name]
        keys, values = list(strings), [2 + i for i in range(len(strings))]
        if MISSING_STRING not in keys:
            keys.append(MISSING_STRING)
            values.append(MISSING_ID)
        lookup_nodes.append(helper.make_node(
            "LabelEncoder", [name], [ids], domain="ai.onnx.ml", name=f"lookup_{ids}",
            keys_strings=keys, values_int64s=values, default_int64=OOV_ID))
        new_inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, ["batch"]))
    nodes = lookup_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.extend(new_inputs)
    kept = [o for o in model.opset_import if o.domain != "ai.onnx.ml"]
    del model.opset_import[:]
    model.opset_import.extend(kept + [helper.make_opsetid("ai.onnx.ml", ML_OPSET)])
    model.doc_string = (f"sk_htlnet HTLNetRegressor: inputs {names}; output {OUTPUT_NAME!r} = predict's "
                        f"{estimator.target_names_}")
    onnx.checker.check_model(model)
    external = sum(t.ByteSize() for t in graph.initializer) > _EXTERNAL_DATA_BYTES
    # written beside the target and renamed, so a failed write leaves no half file at path
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".onnx.tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        onnx.save_model(model, str(tmp_path), save_as_external_data=external,
                        location=f"{path.name}.data" if external else None)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path
