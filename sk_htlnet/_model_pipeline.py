"""The model file of a fitted Pipeline whose final step is an HTLNetRegressor: no pickle anywhere.

:func:`sk_htlnet.io.save_model` given such a Pipeline writes one zip archive of four members:

- ``config.json`` and ``weights.safetensors``: the HTLNetRegressor step, byte for byte what
  ``save_model`` writes for the estimator alone (see :mod:`sk_htlnet.io`);
- ``pipeline.skops``: the Pipeline in the skops format (:mod:`skops.io`: JSON plus ``.npy``
  arrays), with the HTLNetRegressor step replaced by the placeholder ``"passthrough"`` under its
  own name (inside a nested Pipeline when the final step is one, at any depth);
- ``manifest.json``: ``{"format": "sk_htlnet.pipeline", "version": 1}`` and the SHA-256 digest of
  the three other members.

:func:`sk_htlnet.io.load_model` tells the two kinds of file apart by the number of members their
end-of-archive record declares (four here, three for an estimator alone), then reads this one with
the estimator file's reader, :mod:`sk_htlnet._model_archive`, given these members and the manifest's
format and version: the same caps (``max_bytes`` for the file and for its members after
decompression, the zip-bomb ratio, ``config.json`` and the manifest capped on their own), the same
digest check.  The skops member is a zip archive itself, checked before skops reads any of it: its
end records (a bounded central directory), members decompressed by the same bounded reader under
what is left of ``max_bytes`` after the other members,
``schema.json`` parsed as untrusted JSON, every other member a ``.npy`` array (its header declaring
exactly the bytes that follow, no object dtype) or raw ``.bin`` bytes, and the bytes skops would
read for all the schema's references to members together within that budget too (skops reads a
member once per reference).  Only then is the type of every object it declares checked against
skops' trusted set (scikit-learn's estimators, numpy and scipy ufuncs, builtins, ...), plus
:data:`TRUSTED_TYPES`, plus the ``trusted`` names the caller passes: any other type is refused
with the list that :func:`skops.io.get_untrusted_types` reports, before anything is constructed (a
name no import resolves, a lambda's, whatever ``trusted`` says; ``save_model`` does not write one).
The HTLNetRegressor step is loaded, checked and probed as an estimator file is, then put in the
placeholder's place; the transformers' output columns (``get_feature_names_out``, where they
tell) must be those the estimator was fitted on.  A Pipeline's ``memory`` (a cache folder) is
reset to None at load, with a warning, as the estimator's ``checkpoint_dir`` is.
"""

import copy
import functools
import io
import re
import sys
import types
import warnings
import zipfile

import numpy as np

from ._json_input import parse_json
from ._model_archive import config_cap, declared_entries, end_records, read_archive, read_member, write_archive
from ._model_fields import ModelFileError, as_object
from ._model_skops_schema import EXTRA_TRUSTED_LOADERS, check_nodes, expanded_nodes, member_bytes_read

MEMBERS = ("config.json", "weights.safetensors", "pipeline.skops", "manifest.json")  # as save_model writes them
SKOPS_MEMBER = "pipeline.skops"
FORMAT, VERSION = "sk_htlnet.pipeline", 1
HEADER = {"format": FORMAT, "version": VERSION}  # the manifest's keys besides the digests
PLACEHOLDER = "passthrough"

TRUSTED_TYPES = tuple(EXTRA_TRUSTED_LOADERS)  # numpy.dtype, make_column_selector, each from its own node kind
"""Types trusted beyond skops' default set, each only from the node kind skops writes for it
(:data:`sk_htlnet._model_skops_schema.EXTRA_TRUSTED_LOADERS`).  ``numpy.dtype`` (SimpleImputer keeps the fitted dtype):
skops rebuilds it as the dtype of an empty array read with ``allow_pickle=False``.
``make_column_selector`` (the column selection of a ColumnTransformer): three data attributes,
which a fitted ColumnTransformer does not call to transform."""

_MAX_SKOPS_ENTRIES = 65535
_MAX_SKOPS_DIRECTORY = 16 << 20
_SKOPS_NAME = re.compile(r"[0-9A-Za-z_-]{1,64}\.(npy|bin)")


# ---- the containers -----------------------------------------------------------------------------
def is_pipeline_file(f):
    """Whether the open file's end-of-archive record declares the four members of a pipeline file
    (an estimator file declares three; anything else is left to the estimator file's reader)."""
    return declared_entries(f) == len(MEMBERS)


def write_pipeline_archive(path, config_bytes, weights_bytes, skops_bytes):
    """Write the pipeline file at ``path``: the three members and the manifest."""
    members = {"config.json": config_bytes, "weights.safetensors": weights_bytes, SKOPS_MEMBER: skops_bytes}
    write_archive(path, members, HEADER)


def read_pipeline_archive(f, max_bytes):
    """The three members' bytes from the open file ``f``, after bounded reads, the manifest's format
    and version and the digest check (:func:`sk_htlnet._model_archive.read_archive`)."""
    return read_archive(f, max_bytes, MEMBERS, HEADER)


def _check_npy(data, name):
    """A ``.npy`` member: a version 1 or 2 header, no object dtype, exactly the declared bytes."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, _, dtype = read_header[version](f)
    except (KeyError, ValueError, OSError, SyntaxError) as exc:
        raise ModelFileError(f"{SKOPS_MEMBER} {name}: expected a .npy array, got {type(exc).__name__}: "
                             f"{str(exc)[:200]}") from None
    if dtype.hasobject:
        raise ModelFileError(f"{SKOPS_MEMBER} {name}: an array of dtype {dtype} (objects) is refused")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != len(data) - f.tell():
        raise ModelFileError(f"{SKOPS_MEMBER} {name}: the header declares shape {shape} of {dtype} "
                             f"({declared} bytes), but {len(data) - f.tell()} bytes follow")


def check_skops(data, budget, max_bytes):
    """Check the skops member as data before skops reads it (see the module's docstring)."""
    if not data:
        raise ModelFileError(f"{SKOPS_MEMBER} is empty")
    f = io.BytesIO(data)
    declared = end_records(f, len(data))
    if declared is None:
        raise ModelFileError(f"{SKOPS_MEMBER} is not a zip archive (a skops file)")
    for entries, directory in declared:
        if entries > _MAX_SKOPS_ENTRIES or directory > _MAX_SKOPS_DIRECTORY:
            raise ModelFileError(f"{SKOPS_MEMBER} declares {entries} members and a {directory}-byte directory; "
                                 f"expected at most {_MAX_SKOPS_ENTRIES} members and {_MAX_SKOPS_DIRECTORY} bytes")
    try:
        schema, sizes = _read_skops(f, budget, max_bytes)
    except (ModelFileError, MemoryError):
        raise
    except Exception as exc:  # zipfile's errors (BadZipFile, a bad CRC, an unsupported compression, ...)
        raise ModelFileError(f"{SKOPS_MEMBER} is not a readable zip archive: {type(exc).__name__}: "
                             f"{str(exc)[:200]}") from exc
    as_object(schema, f"{SKOPS_MEMBER} schema.json")
    expanded_nodes(schema, SKOPS_MEMBER)
    check_nodes(schema, SKOPS_MEMBER)
    if member_bytes_read(schema, sizes) > budget:
        raise ModelFileError(f"{SKOPS_MEMBER} schema.json refers to its members {member_bytes_read(schema, sizes)} bytes' "
                             f"worth, more than is left of max_bytes={max_bytes} after the other members")


def _read_skops(f, budget, max_bytes):
    """The skops archive's parsed ``schema.json`` and its members' sizes, each member read under
    the budget and checked."""
    with zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names) or "schema.json" not in names:
            raise ModelFileError(f"{SKOPS_MEMBER}: expected one schema.json and uniquely named arrays, "
                                 f"got {names[:10]}")
        sizes, left = {}, budget
        for info in infos:
            if info.filename != "schema.json" and not _SKOPS_NAME.fullmatch(info.filename):
                raise ModelFileError(f"{SKOPS_MEMBER}: unexpected member {info.filename[:80]!r}; expected "
                                     "schema.json, .npy arrays and .bin bytes (a scipy sparse matrix is not supported)")
            try:
                member = read_member(archive, info, left,
                                     f"what is left of max_bytes={max_bytes} after the other members")
            except ModelFileError as exc:
                raise ModelFileError(f"{SKOPS_MEMBER}: {exc}") from None
            left -= len(member)
            sizes[info.filename] = len(member)
            if info.filename == "schema.json":
                schema = parse_json(member, f"{SKOPS_MEMBER} schema.json", config_cap(max_bytes), ModelFileError)
            elif info.filename.endswith(".npy"):
                _check_npy(member, info.filename)
    return schema, sizes


# ---- the trusted types --------------------------------------------------------------------------
def check_trusted(trusted):
    """The caller's ``trusted`` as a list of type names: None or a list (or tuple) of str."""
    if trusted is None:
        return []
    if isinstance(trusted, (str, bytes)) or not isinstance(trusted, (list, tuple)) or not all(
            isinstance(name, str) for name in trusted):
        raise TypeError("trusted must be None or a list of type names (str) such as "
                        f"['mypackage.MyTransformer'], got {trusted!r:.200}")
    return list(trusted)


def untrusted_types(data):
    """The types in the skops bytes that neither skops nor :data:`TRUSTED_TYPES` trust."""
    from skops.io import get_untrusted_types

    return sorted(set(get_untrusted_types(data=data)) - set(TRUSTED_TYPES))


def unimportable(names):
    """The names (``module.name``) no import resolves whatever is trusted: a lambda's, or one its module
    (imported) lacks, as for a function defined in a function.  Nothing is imported, no hook runs."""
    spaces = [(name.rpartition(".")[2], getattr(sys.modules.get(name.rpartition(".")[0]), "__dict__", {}))
              for name in names]
    return [name for name, (attr, space) in zip(names, spaces)
            if not attr.isidentifier() or (space and attr not in space and "__getattr__" not in space)]


def _functions(value):
    """The plain functions in a parameter's value, inside lists, tuples, sets, dicts and partials."""
    if isinstance(value, functools.partial):
        value = [value.func, value.args, value.keywords]
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        for item in (value.values() if isinstance(value, dict) else value):
            yield from _functions(item)
    elif isinstance(value, types.FunctionType):
        yield value


def _function_problem(func):
    """Why load_model could not import ``func`` by the module and ``__name__`` skops stores (None if it can)."""
    name, qualname = func.__name__, func.__qualname__
    if name == "<lambda>" or "<locals>" in qualname:
        return "a lambda" if name == "<lambda>" else "a function defined inside another function"
    found = getattr(sys.modules.get(func.__module__), "__dict__", {}).get(name, func)  # another of its name?
    if qualname != name or found is not func or unimportable([f"{func.__module__}.{name}"]):
        return f"not found as {func.__module__}.{name} (not a module-level function)"


def check_functions(shell):
    """Refuse a function in a step's parameters that load_model could never import (see above)."""
    params = shell.get_params(deep=True)
    for key, func in ((key, func) for key, value in params.items() for func in _functions(value)):
        if problem := _function_problem(func):
            step, _, param = key.rpartition("__")
            where = f"its step {step!r} ({type(params[step]).__name__})" if step else "the Pipeline itself"
            raise ValueError(f"save_model cannot store the Pipeline: {where} holds the function {func.__module__}."
                             f"{func.__qualname__} in its {param!r} parameter, {problem}, which load_model could "
                             "not import by name: use a module-level named function (numpy's, such as np.log1p, or "
                             "a def at the top level of a module) or save with pickle")


# ---- save ---------------------------------------------------------------------------------------
def _levels(pipeline):
    """The Pipeline and the Pipelines nested as final steps, outermost first."""
    from sklearn.pipeline import Pipeline

    levels = [pipeline]
    while True:
        steps = levels[-1].steps
        pairs = isinstance(steps, list) and all(isinstance(s, (tuple, list)) and len(s) == 2 for s in steps)
        if not pairs or not steps:
            raise TypeError(f"save_model: the Pipeline's steps must be a non-empty list of (name, estimator) "
                            f"tuples, got {steps!r:.200}")
        if not isinstance(steps[-1][1], Pipeline):
            return levels
        levels.append(steps[-1][1])


def split_pipeline(pipeline):
    """``(shell, estimator)``: a copy of the fitted Pipeline whose HTLNetRegressor step is the
    placeholder, and that step.  The Pipeline given is not modified."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from .estimator import HTLNetRegressor

    levels = _levels(pipeline)
    name, est = levels[-1].steps[-1]
    if not isinstance(est, HTLNetRegressor):
        raise TypeError(f"save_model saves a Pipeline whose final step is an HTLNetRegressor; its final step "
                        f"{name!r} is a {type(est).__name__}")
    shell = copy.copy(levels[-1])
    shell.steps = [*levels[-1].steps[:-1], (name, PLACEHOLDER)]
    for level in reversed(levels[:-1]):
        outer = copy.copy(level)
        outer.steps = [*level.steps[:-1], (level.steps[-1][0], shell)]
        shell = outer
    others = [key for key, value in shell.get_params(deep=True).items() if isinstance(value, HTLNetRegressor)]
    if others:
        raise TypeError(f"save_model saves a Pipeline whose only HTLNetRegressor is its final step; the Pipeline "
                        f"also has one at {others[:5]}")
    steps = [(name, est)] + [step for level in levels for step in level.steps[:-1]]
    for step_name, step in steps:
        if step is None or isinstance(step, str):
            continue
        try:
            check_is_fitted(step, "net_" if step is est else None)
        except NotFittedError:
            raise NotFittedError(f"save_model needs a fitted Pipeline: its step {step_name!r} "
                                 f"({type(step).__name__}) is not fitted; fit the Pipeline first") from None
    return shell, est


def dump_shell(shell, est):
    """The skops bytes of the shell, checked as :func:`sk_htlnet.io.load_model` will check them (a
    Pipeline it would refuse, or could never load, is not written; untrusted types only warn)."""
    import skops.io

    from .io import DEFAULT_MAX_BYTES

    check_functions(shell)
    try:
        data = skops.io.dumps(shell)
    except Exception as exc:
        raise ValueError(f"save_model cannot store the Pipeline's other steps with skops: {type(exc).__name__}: "
                         f"{str(exc)[:300]}; use pickle") from exc
    try:
        check_skops(data, DEFAULT_MAX_BYTES, DEFAULT_MAX_BYTES)
        _check_columns(_levels(shell), est)
    except ModelFileError as exc:
        raise ValueError(f"save_model cannot store this Pipeline: {exc}") from None
    untrusted = untrusted_types(data)
    if unimportable(untrusted):  # one that check_functions does not see (a fitted attribute, a local class)
        raise ValueError(f"save_model cannot store the Pipeline: it holds {unimportable(untrusted)}, which load_model "
                         "could not import by name; use module-level named functions and classes, or pickle")
    if untrusted:
        warnings.warn(f"the Pipeline holds types that skops does not trust by default: {untrusted}; "
                      f"load_model will refuse the file unless given trusted={untrusted!r}", UserWarning, stacklevel=3)
    memory = [key for key, value in _pipelines(shell) if value.memory is not None]
    if memory:
        warnings.warn(f"the Pipeline sets memory at {memory}: load_model resets it to None (a model file "
                      "names no path)", UserWarning, stacklevel=3)
    return data


# ---- load ---------------------------------------------------------------------------------------
def _pipelines(shell):
    """``(where, Pipeline)`` for the shell and every Pipeline inside it."""
    from sklearn.pipeline import Pipeline

    found = [("the Pipeline", shell)]
    found += [(key, value) for key, value in shell.get_params(deep=True).items() if isinstance(value, Pipeline)]
    return found


def _check_columns(levels, est):
    """The transformers' output columns, where ``get_feature_names_out`` tells them, must be those
    the estimator was fitted on."""
    names = None
    try:
        for level in levels:
            if len(level.steps) > 1:
                names = level[:-1].get_feature_names_out(names)
    except Exception:  # a step that cannot tell (a FunctionTransformer without feature_names_out, ...)
        return
    fitted = getattr(est, "feature_names_in_", None)
    names = [str(n) for n in names] if names is not None else None
    if names is not None and (len(names) != est.n_features_in_ or (
            fitted is not None and names != [str(n) for n in fitted])):
        raise ModelFileError(f"the Pipeline's transformers output the columns {names[:10]} ({len(names)}), but the "
                             f"HTLNetRegressor step was fitted on {est.n_features_in_} columns "
                             f"{[] if fitted is None else list(fitted)[:10]}")


def load_shell(members, max_bytes, trusted):
    """Check and load the skops member (popped from ``members``): the Pipeline with the placeholder."""
    import skops.io
    from sklearn.pipeline import Pipeline

    data = members.pop(SKOPS_MEMBER)
    check_skops(data, max_bytes - sum(len(v) for v in members.values()), max_bytes)
    try:
        untrusted = untrusted_types(data)
    except MemoryError:
        raise
    except Exception as exc:  # skops' errors on a malformed schema (KeyError, ...)
        raise ModelFileError(f"{SKOPS_MEMBER} is not a valid skops file: {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from exc
    if unimportable(untrusted):
        raise ModelFileError(f"{SKOPS_MEMBER} names {unimportable(untrusted)}, which no import resolves (a lambda, "
                             "a function defined in a function): no trusted= makes the file load. Save the Pipeline "
                             "again with module-level named functions (numpy's, or a top-level def), or pickle")
    if untrusted := [name for name in untrusted if name not in trusted]:
        raise ModelFileError(
            f"{SKOPS_MEMBER} holds types that are not trusted: {untrusted}. Loading would construct them, which "
            f"runs their code, so the file is refused. If you trust the file's source and these types, pass "
            f"load_model(path, trusted={untrusted!r})")
    try:
        shell = skops.io.loads(data, trusted=[*TRUSTED_TYPES, *trusted])
    except MemoryError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{SKOPS_MEMBER} does not load: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not isinstance(shell, Pipeline):
        raise ModelFileError(f"{SKOPS_MEMBER}: expected a Pipeline, got a {type(shell).__name__}")
    try:
        levels = _levels(shell)
    except TypeError as exc:
        raise ModelFileError(f"{SKOPS_MEMBER}: {exc}") from None
    last = levels[-1].steps[-1]
    if not (isinstance(last[0], str) and isinstance(last[1], str) and last[1] == PLACEHOLDER):
        raise ModelFileError(f"{SKOPS_MEMBER}: expected the final step to be the placeholder {PLACEHOLDER!r}, got "
                             f"{type(last[1]).__name__}")
    return shell


def attach(shell, est, notes):
    """Put the loaded estimator in the placeholder's place; reset ``memory`` and every ``n_jobs``
    (notes name where: a file must not choose a cache folder or how many processes predict starts)."""
    levels = _levels(shell)
    jobs = sorted(key for key, value in shell.get_params(deep=True).items()
                  if (key == "n_jobs" or key.endswith("__n_jobs")) and value is not None)
    if jobs:
        shell.set_params(**{key: None for key in jobs})
        notes.append(f"the model file sets {jobs}, which a model file does not choose (the processes "
                     "predict starts): reset to None")
    _check_columns(levels, est)
    levels[-1].steps[-1] = (levels[-1].steps[-1][0], est)
    memory = [where for where, pipeline in _pipelines(shell) if pipeline.memory is not None]
    for _, pipeline in _pipelines(shell):
        pipeline.memory = None
    if memory:
        notes.append(f"the model file sets memory at {memory}, which a model file does not carry (a cache "
                     "folder would steer the loaded Pipeline): reset to None")
    return shell
