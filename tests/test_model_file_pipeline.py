"""The model file of a fitted Pipeline ending in an HTLNetRegressor (issue 16): ``save_model`` stores
the other steps with skops and the HTLNetRegressor step as an estimator file, in one archive, and
``load_model`` returns a Pipeline that predicts exactly as the saved one, constructing only the types
skops trusts (and those named in ``trusted=``), under the same ``max_bytes`` and with only
``ModelFileError`` for anything about the file.  Before, ``save_model(pipeline)`` raised a
TypeError and users fell back to pickle."""

import functools
import hashlib
import io
import json
import re
import warnings
import zipfile

import numpy as np
import pytest
import skops.io
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.exceptions import NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.io import ModelFileError, load_model, save_model

from _sizes import SMALL_NET

FAST = dict(SMALL_NET, max_iter=1, random_state=0, n_threads=1)
NUM, CAT = ["num_0", "num_1"], ["cat_0", "cat_1"]


class Doubler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """A transformer of the user's own: outside skops' trusted set.  Counts its constructions from a
    file (skops sets an object's state through ``__setstate__``)."""

    loaded = 0

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X):
        return X * 2.0

    def __setstate__(self, state):
        type(self).loaded += 1
        super().__setstate__(state)


DOUBLER = f"{Doubler.__module__}.{Doubler.__qualname__}"
HERE = re.escape(__name__)


class Keeper(Doubler):
    """Keeps a lambda in a fitted attribute, where no parameter shows it."""

    def fit(self, X, y=None):
        self.fn_ = lambda X: X
        return super().fit(X, y)


def _copy(X):
    return X


_LAMBDA = lambda X: X  # noqa: E731 (as in a script: __main__.<lambda>)


def _local():
    def inner(X):
        return X
    return inner


def _columns(numeric):
    return ColumnTransformer([("num", numeric, NUM), ("cat", OneHotEncoder(sparse_output=False), CAT)],
                             verbose_feature_names_out=False).set_output(transform="pandas")


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(400, n_stages=2, n_categorical=2, n_numeric=2, stage_rates=0.5, random_state=0)


@pytest.fixture(scope="module")
def pipe(funnel):
    return Pipeline([("pre", _columns(StandardScaler())), ("htlnet", HTLNetRegressor(**FAST))]).fit(*funnel)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline") / "p.htlnet"
    save_model(pipe, path)
    return path


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def _write(path, members, digests=True):
    """A pipeline file from its members, with a manifest of recomputed digests unless told not to."""
    members = dict(members)
    if digests:
        manifest = json.loads(members["manifest.json"])
        manifest.update({name: hashlib.sha256(data).hexdigest() for name, data in members.items()
                         if name != "manifest.json"})
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _skops(data, edit=None, compression=zipfile.ZIP_STORED):
    """The skops member rewritten: ``edit(members)`` changes its members' bytes in place."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        inner = {name: z.read(name) for name in z.namelist()}
    if edit is not None:
        edit(inner)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as z:
        for name, value in inner.items():
            z.writestr(name, value)
    return buffer.getvalue()


# ---- round trips ---------------------------------------------------------------------------------
def test_a_column_transformer_pipeline_round_trips_exactly(pipe, saved, funnel):
    X, _ = funnel
    names = list(_members(saved))
    assert sorted(names) == ["config.json", "manifest.json", "pipeline.skops", "weights.safetensors"]
    loaded = load_model(saved)
    assert isinstance(loaded, Pipeline) and [n for n, _ in loaded.steps] == ["pre", "htlnet"]
    assert isinstance(loaded[-1], HTLNetRegressor) and loaded[-1] is not pipe[-1]
    np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))
    assert pipe.steps[-1][1].__class__ is HTLNetRegressor  # the saved Pipeline keeps its step


def test_imputer_function_transformer_selectors_and_a_nested_final_pipeline(funnel, tmp_path):
    """make_column_selector and numpy.dtype (SimpleImputer's fitted dtype) load without trusted=,
    a numpy ufunc in a FunctionTransformer is trusted by skops; the HTLNetRegressor sits in a
    Pipeline nested as the final step."""
    X, Y = funnel
    X = X.assign(num_0=X["num_0"].mask(np.arange(len(X)) % 7 == 0))
    pre = ColumnTransformer([("num", SimpleImputer(), make_column_selector(dtype_include="number")),
                             ("cat", "passthrough", make_column_selector(dtype_exclude="number"))],
                            verbose_feature_names_out=False).set_output(transform="pandas")
    log = ColumnTransformer([("num", FunctionTransformer(np.arcsinh, feature_names_out="one-to-one"), NUM)],
                            remainder="passthrough", verbose_feature_names_out=False).set_output(transform="pandas")
    pipe = Pipeline([("pre", pre), ("model", Pipeline([("log", log), ("htlnet", HTLNetRegressor(**FAST))]))])
    pipe.fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no warning: nothing untrusted
        save_model(pipe, tmp_path / "p.htlnet")
    loaded = load_model(tmp_path / "p.htlnet")
    assert isinstance(loaded["model"][-1], HTLNetRegressor)
    np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))


# ---- trust -----------------------------------------------------------------------------------------
def test_a_custom_transformer_is_refused_unless_trusted(funnel, tmp_path):
    X, Y = funnel
    pipe = Pipeline([("pre", _columns(Doubler())), ("htlnet", HTLNetRegressor(**FAST))]).fit(X, Y)
    with pytest.warns(UserWarning, match=rf"does not trust by default: \['{DOUBLER}'\]"):
        save_model(pipe, tmp_path / "p.htlnet")
    before = Doubler.loaded
    with pytest.raises(ModelFileError, match=rf"not trusted: \['{DOUBLER}'\].*trusted=\['{DOUBLER}'\]"):
        load_model(tmp_path / "p.htlnet")
    assert Doubler.loaded == before  # refused before anything was constructed
    loaded = load_model(tmp_path / "p.htlnet", trusted=[DOUBLER])
    assert Doubler.loaded > before
    np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))


def test_a_file_naming_a_function_of_os_is_refused(saved, tmp_path):
    import os

    hostile = Pipeline([("f", FunctionTransformer(os.getcwd)), ("htlnet", "passthrough")])
    members = dict(_members(saved), **{"pipeline.skops": skops.io.dumps(hostile)})
    with pytest.raises(ModelFileError, match=r"not trusted: \[.*getcwd'\]"):
        load_model(_write(tmp_path / "h.htlnet", members))


@pytest.mark.parametrize("trusted", ["mypackage.MyTransformer", True, [1]])
def test_trusted_must_be_a_list_of_names(saved, trusted):
    with pytest.raises(TypeError, match="trusted must be None or a list of type names"):
        load_model(saved, trusted=trusted)


# ---- a damaged or crafted skops member ------------------------------------------------------------
def _lying_header(inner):
    name = next(n for n in inner if n.endswith(".npy"))
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    inner[name] = buffer.getvalue() + inner[name][128:]


def _sparse(inner):
    inner["1234.npz"] = b"PK"


def _schema_of(obj):
    with zipfile.ZipFile(io.BytesIO(skops.io.dumps(obj))) as z:
        return z.read("schema.json")


def _schema(value):
    return lambda inner: inner.update({"schema.json": value() if callable(value) else value})


@pytest.mark.parametrize("edit, match", [
    (lambda inner: inner.update({"schema.json": inner["schema.json"][:-40]}),
     "pipeline.skops schema.json is not valid JSON"),
    (_schema(b'{"__class__": "Pipeline"}'), "pipeline.skops is not a valid skops file"),
    (_lying_header, r"header declares shape \(1000000000,\)"),
    (_sparse, "unexpected member '1234.npz'"),
    (_schema(lambda: _schema_of(StandardScaler())), "expected a Pipeline, got a StandardScaler"),
    (_schema(lambda: _schema_of(Pipeline([("sc", StandardScaler())]))),
     "expected the final step to be the placeholder 'passthrough'"),
])
def test_a_tampered_skops_member_is_a_model_file_error(saved, tmp_path, edit, match):
    members = _members(saved)
    members["pipeline.skops"] = _skops(members["pipeline.skops"], edit)
    with pytest.raises(ModelFileError, match=match):
        load_model(_write(tmp_path / "t.htlnet", members))


def test_flipped_bytes_are_caught_by_the_digest_or_the_checks(saved, tmp_path):
    members = _members(saved)
    data = bytearray(members["pipeline.skops"])
    data[len(data) // 2] ^= 0xFF
    members["pipeline.skops"] = bytes(data)
    with pytest.raises(ModelFileError, match="pipeline.skops does not match its digest"):
        load_model(_write(tmp_path / "a.htlnet", members, digests=False))
    with pytest.raises(ModelFileError, match="pipeline.skops"):
        load_model(_write(tmp_path / "b.htlnet", members))


def test_the_transformers_must_feed_the_columns_the_estimator_was_fitted_on(saved, funnel, tmp_path):
    X, Y = funnel
    other = Pipeline([("sc", ColumnTransformer([("num", StandardScaler(), NUM)], remainder="passthrough",
                                               verbose_feature_names_out=False).set_output(transform="pandas")),
                      ("htlnet", HTLNetRegressor(**FAST))]).fit(X, Y)
    save_model(other, tmp_path / "other.htlnet")
    members = dict(_members(saved), **{"pipeline.skops": _members(tmp_path / "other.htlnet")["pipeline.skops"]})
    with pytest.raises(ModelFileError, match=r"transformers output the columns \['num_0', 'num_1', 'cat_0'"):
        load_model(_write(tmp_path / "mixed.htlnet", members))


def test_a_manifest_of_another_format_or_other_members_are_refused(saved, tmp_path):
    members = _members(saved)
    manifest = dict(json.loads(members["manifest.json"]), version=2)
    with pytest.raises(ModelFileError, match="expected format 'sk_htlnet.pipeline' version 1"):
        load_model(_write(tmp_path / "v.htlnet", dict(members, **{"manifest.json": json.dumps(manifest).encode()})))
    renamed = {("other.skops" if n == "pipeline.skops" else n): v for n, v in members.items()}
    with pytest.raises(ModelFileError, match="unexpected archive members"):
        load_model(_write(tmp_path / "r.htlnet", renamed, digests=False))


# ---- max_bytes -------------------------------------------------------------------------------------
def test_max_bytes_bounds_the_file_its_members_and_the_skops_members(saved, tmp_path):
    size = saved.stat().st_size
    with pytest.raises(ModelFileError, match=f"the file has {size} bytes, more than max_bytes={size - 1}"):
        load_model(saved, max_bytes=size - 1)
    with pytest.raises(ModelFileError, match="decompresses to more than"):
        load_model(saved, max_bytes=size + 1)
    # the skops member deflated inside: the outer members fit, the skops members do not
    members = _members(saved)
    members["pipeline.skops"] = _skops(members["pipeline.skops"], compression=zipfile.ZIP_DEFLATED)
    path = _write(tmp_path / "deflated.htlnet", members)
    outer = sum(len(v) for v in members.values())
    with pytest.raises(ModelFileError, match="pipeline.skops: schema.json decompresses to more than"):
        load_model(path, max_bytes=outer + 100)
    load_model(path, max_bytes=outer + 300_000)  # within the limit, it loads


def test_references_to_a_member_count_against_max_bytes(saved, tmp_path):
    """skops reads a member once per reference to it in schema.json: 5000 references to one array
    would read 5000 copies."""
    members = _members(saved)

    def repeat(inner):
        schema = json.loads(inner["schema.json"])
        stack, node = [schema], None
        while node is None:
            item = stack.pop()
            if isinstance(item, dict):
                node = item if "file" in item else None
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        copy_ = {k: v for k, v in node.items() if k != "__id__"}
        schema["content"]["content"]["junk"] = {"__class__": "list", "__module__": "builtins",
                                                "__loader__": "ListNode", "content": [copy_] * 5000}
        inner["schema.json"] = json.dumps(schema).encode()

    members["pipeline.skops"] = _skops(members["pipeline.skops"], repeat)
    path = _write(tmp_path / "refs.htlnet", members)
    with pytest.raises(ModelFileError, match="refers to its members"):
        load_model(path, max_bytes=sum(len(v) for v in members.values()) + 1000)


# ---- what save_model refuses -----------------------------------------------------------------------
def test_an_unfitted_pipeline_is_a_not_fitted_error(pipe, tmp_path):
    unfitted = Pipeline([("pre", _columns(StandardScaler())), ("htlnet", HTLNetRegressor(**FAST))])
    with pytest.raises(NotFittedError, match=r"its step 'htlnet' \(HTLNetRegressor\) is not fitted"):
        save_model(unfitted, tmp_path / "u.htlnet")
    half = Pipeline([("pre", _columns(StandardScaler())), ("htlnet", pipe[-1])])
    with pytest.raises(NotFittedError, match=r"its step 'pre' \(ColumnTransformer\) is not fitted"):
        save_model(half, tmp_path / "u.htlnet")
    assert not (tmp_path / "u.htlnet").exists()


def test_pipelines_without_a_final_htlnet_step_are_type_errors(pipe, tmp_path):
    est = pipe[-1]
    with pytest.raises(TypeError, match=r"final step 'sc' is a StandardScaler"):
        save_model(Pipeline([("htlnet", est), ("sc", StandardScaler())]), tmp_path / "x.htlnet")
    with pytest.raises(TypeError, match=r"also has one at \['first'\]"):
        save_model(Pipeline([("first", est), ("htlnet", est)]), tmp_path / "x.htlnet")
    inside = ColumnTransformer([("h", est, NUM)])
    with pytest.raises(TypeError, match=r"also has one at \['ct__h'\]"):
        save_model(Pipeline([("ct", inside), ("htlnet", est)]), tmp_path / "x.htlnet")
    with pytest.raises(TypeError, match="got StandardScaler"):
        save_model(StandardScaler(), tmp_path / "x.htlnet")
    assert not (tmp_path / "x.htlnet").exists()


def test_memory_is_not_carried_and_loading_writes_nothing(pipe, funnel, tmp_path, monkeypatch):
    X, _ = funnel
    cached = Pipeline(pipe.steps, memory=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="sets memory at"):
        save_model(cached, tmp_path / "m.htlnet")
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.warns(UserWarning, match=r"sets memory at \['the Pipeline'\].*reset to None"):
        loaded = load_model(tmp_path / "m.htlnet")
    assert loaded.memory is None and list(empty.iterdir()) == [] and not (tmp_path / "cache").exists()
    np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))


def test_an_estimator_file_ignores_trusted(pipe, funnel, tmp_path):
    save_model(pipe[-1], tmp_path / "e.htlnet")
    assert isinstance(load_model(tmp_path / "e.htlnet", trusted=["x.Y"]), HTLNetRegressor)


# ---- functions skops stores by name (a lambda, a local function) -------------------------------------
@pytest.mark.parametrize("step, match", [
    (lambda: FunctionTransformer(_LAMBDA, feature_names_out="one-to-one"),
     rf"step 'pre__num' \(FunctionTransformer\) holds the function {HERE}\.<lambda> in its 'func' parameter, "
     "a lambda,"),
    (lambda: FunctionTransformer(_local(), feature_names_out="one-to-one"),
     rf"function {HERE}\._local\.<locals>\.inner in its 'func' parameter, a function defined inside another"),
    (lambda: FunctionTransformer(np.arcsinh, functools.partial(lambda X, k: np.sinh(X) * k, k=1),
                                 feature_names_out="one-to-one"),
     r"step 'pre__num' \(FunctionTransformer\) holds the function .*<lambda> in its 'inverse_func' parameter"),
    (lambda: FunctionTransformer(np.arcsinh, Doubler.transform, check_inverse=False, feature_names_out="one-to-one"),
     rf"{HERE}\.Doubler\.transform in its 'inverse_func' parameter, not found as {HERE}\.transform \(not a module"),
    (Keeper, rf"it holds \['{HERE}\.<lambda>'\], which load_model could not import by name"),
], ids=["lambda", "local", "partial", "method", "fitted-attribute"])
def test_a_lambda_or_a_local_function_is_refused_before_anything_is_written(funnel, tmp_path, step, match):
    """Before, save_model wrote a file that never loads, with a warning advising trusted=[that name]."""
    pipe = Pipeline([("pre", _columns(step())), ("htlnet", HTLNetRegressor(**FAST))]).fit(*funnel)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # refused, not warned about
        with pytest.raises(ValueError, match=match) as error:
            save_model(pipe, tmp_path / "f.htlnet")
    assert "module-level named function" in str(error.value) and "pickle" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_module_level_function_saves_and_loads_when_trusted(funnel, tmp_path):
    X, Y = funnel
    pipe = Pipeline([("pre", _columns(FunctionTransformer(_copy, feature_names_out="one-to-one"))),
                     ("htlnet", HTLNetRegressor(**FAST))]).fit(X, Y)
    with pytest.warns(UserWarning, match=rf"does not trust by default: \['{HERE}\._copy'\]"):
        save_model(pipe, tmp_path / "f.htlnet")
    loaded = load_model(tmp_path / "f.htlnet", trusted=[f"{__name__}._copy"])
    np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))


@pytest.mark.parametrize("func", [_LAMBDA, _local()], ids=["lambda", "local"])
def test_a_file_naming_a_lambda_does_not_advise_trusting_it(saved, tmp_path, func):
    """A file an earlier save_model wrote: no trusted= makes it load, and the message says so."""
    crafted = skops.io.dumps(Pipeline([("f", FunctionTransformer(func)), ("htlnet", "passthrough")]))
    path = _write(tmp_path / "l.htlnet", dict(_members(saved), **{"pipeline.skops": crafted}))
    name = skops.io.get_untrusted_types(data=crafted)
    for trusted in (None, name):
        with pytest.raises(ModelFileError, match=rf"names \['{re.escape(name[0])}'\], which no import resolves.*"
                                                 "no trusted= makes the file load") as error:
            load_model(path, trusted=trusted)
        assert "trusted=[" not in str(error.value) and "module-level named functions" in str(error.value)
