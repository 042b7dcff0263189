"""sk_htlnet.export: onnxruntime's output of the exported graph equals ``predict`` (issue 19).

Real funnels: the bundled Hillstrom, and AutoClaim and ausprivauto from ../shared/data (those cases
skip when the folder is absent).  Every architecture, numeric encoding, core loss, target transform
and retransformation appears in at least one case.
"""

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from sk_htlnet import HTLNetRegressor  # noqa: E402
from sk_htlnet.datasets import load_hillstrom  # noqa: E402
from sk_htlnet.export import input_names, onnx_inputs, to_onnx  # noqa: E402
from sk_htlnet.io import load_model, save_model  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
RTOL = 1e-4  # the bound; float32 networks in torch and onnxruntime differ by ~1e-7


def _datasets():
    spec = importlib.util.spec_from_file_location("bench_datasets", BENCH / "datasets.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    spec.loader.exec_module(module)
    return module


DATASETS = _datasets()


def _load(name, n_rows=6000):
    if name != "hillstrom" and not DATASETS.SHARED.exists():
        pytest.skip("../shared/data is absent")
    X, Y = getattr(DATASETS, name)()
    rng = np.random.default_rng(0)
    rows = rng.choice(len(X), size=min(n_rows, len(X)), replace=False)
    return X.iloc[rows].reset_index(drop=True), Y.iloc[rows].reset_index(drop=True)


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _serve(est, path, X):
    return _session(path).run(None, onnx_inputs(est, X))[0]


def _awkward(X, est):
    """Held-out rows with an unseen category and a missing value in every column."""
    X = X.copy()
    mask = est.feature_encoder_.categorical_mask_
    for j, (column, is_cat) in enumerate(zip(X.columns, mask)):
        rows = [(2 * j) % len(X), (2 * j + 1) % len(X)]
        if is_cat:
            if isinstance(X[column].dtype, pd.CategoricalDtype):
                X[column] = X[column].astype(object)
            X[column] = X[column].astype(object)
            X.loc[rows[0], column] = "never seen in training"
            X.loc[rows[1], column] = None
        else:
            X[column] = X[column].astype(np.float64)
            X.loc[rows[0], column] = np.nan
            X.loc[rows[1], column] = float(X[column].max()) * 10 + 1  # beyond the training range
    return X


# (data set, estimator settings): each architecture, encoding, loss, transform and retransformation
CASES = {
    "htlnet-default": ("hillstrom", {}),
    "single_task-linear-mse-log1p-smearing": (
        "autoclaim", dict(architecture="single_task", numeric_encoding="linear", core_loss="mse",
                          target_transform="log1p", retransformation="smearing")),
    "shared_bottom-quantile-mse-standardize": (
        "ausprivauto", dict(architecture="shared_bottom", numeric_encoding="quantile", core_loss="mse",
                            target_transform="standardize")),
    "mmoe-periodic-tweedie": ("autoclaim", dict(architecture="mmoe", numeric_encoding="periodic",
                                                core_loss="tweedie")),
    "ple-quantile-ziln-none": ("hillstrom", dict(architecture="ple", numeric_encoding="quantile",
                                                 core_loss="ziln", retransformation="none")),
    "esmm-piecewise-mse-raw": ("autoclaim", dict(architecture="esmm", numeric_encoding="piecewise_linear",
                                                 core_loss="mse", target_transform="none")),
    "aitm-linear-ziln-isotonic": ("ausprivauto", dict(architecture="aitm", numeric_encoding="linear",
                                                      core_loss="ziln")),
    "htlnet-relaxed-log1p-isotonic": ("hillstrom", dict(label_sampling="relaxed", core_loss="mse",
                                                        target_transform="log1p")),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    name = request.param
    data, params = CASES[name]
    X, Y = _load(data)
    fit, held = X.iloc[:-500], X.iloc[-500:].reset_index(drop=True)
    est = HTLNetRegressor(max_iter=4, embedding_dim=8, tower_units=(32, 16), random_state=0, **params)
    est.fit(fit, Y.iloc[:-500])
    path = tmp_path_factory.mktemp(name) / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert to_onnx(est, path) == path
    return est, path, held


def test_onnxruntime_equals_predict(exported):
    est, path, X = exported
    X = _awkward(X, est)
    expected = est.predict(X)
    got = _serve(est, path, X)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)


def test_one_row_and_a_batch_of_another_size(exported):
    est, path, X = exported
    session = _session(path)
    for rows in (X.iloc[[7]], X.iloc[:33]):
        got = session.run(None, onnx_inputs(est, rows))[0]
        np.testing.assert_allclose(got, est.predict(rows), rtol=RTOL, atol=0)


def test_graph_inputs_are_the_raw_columns(exported):
    est, path, _ = exported
    inputs = _session(path).get_inputs()
    assert [i.name for i in inputs] == [str(c) for c in est.feature_encoder_.columns_] == input_names(est)
    for i, is_cat in zip(inputs, est.feature_encoder_.categorical_mask_):
        assert i.type == ("tensor(string)" if is_cat else "tensor(double)")
        assert len(i.shape) == 1 and not isinstance(i.shape[0], int)  # a free batch dimension


def test_a_one_dimensional_fit_exports_a_one_dimensional_output(tmp_path):
    X, Y = _load("hillstrom", 3000)
    est = HTLNetRegressor(max_iter=2, embedding_dim=4, tower_units=(8,), random_state=0).fit(X, Y["spend"])
    path = to_onnx(est, tmp_path / "core.onnx")
    got = _serve(est, path, X.iloc[:50])
    assert got.shape == (50,)
    np.testing.assert_allclose(got, est.predict(X.iloc[:50]), rtol=RTOL, atol=0)


def test_a_saved_and_loaded_model_exports_identically(tmp_path):
    X, Y = _load("hillstrom", 3000)
    est = HTLNetRegressor(max_iter=2, embedding_dim=4, tower_units=(8,), random_state=0).fit(X, Y)
    save_model(est, tmp_path / "model.htlnet")
    loaded = load_model(tmp_path / "model.htlnet")
    a = to_onnx(est, tmp_path / "a.onnx").read_bytes()
    b = to_onnx(loaded, tmp_path / "b.onnx").read_bytes()
    assert a == b
    np.testing.assert_array_equal(_serve(loaded, tmp_path / "b.onnx", X.iloc[:20]),
                                  _serve(est, tmp_path / "a.onnx", X.iloc[:20]))


def test_categories_match_as_in_predict(tmp_path):
    """A category given as 1.0 where training saw 1 is that category in predict, and in the graph;
    a category predict has never seen is unseen in the graph too."""
    X, Y = _load("hillstrom", 3000)
    X = X.assign(newbie=X["newbie"].astype(object))  # an integer-valued categorical column
    est = HTLNetRegressor(max_iter=2, embedding_dim=4, tower_units=(8,), random_state=0).fit(X, Y)
    assert est.feature_encoder_.categorical_mask_[list(X.columns).index("newbie")]
    path = to_onnx(est, tmp_path / "m.onnx")
    rows = X.iloc[:40].copy()
    rows["newbie"] = rows["newbie"].astype(float).astype(object)  # 1.0 and 0.0
    rows.loc[:9, "newbie"] = "1"  # a string predict does not match with 1
    np.testing.assert_allclose(_serve(est, path, rows), est.predict(rows), rtol=RTOL, atol=0)
    assert (onnx_inputs(est, rows)["newbie"][10:] != onnx_inputs(est, rows)["newbie"][0]).all()


def test_what_cannot_be_exported_raises(tmp_path):
    with pytest.raises(NotFittedError):
        to_onnx(HTLNetRegressor(), tmp_path / "m.onnx")
    X, Y = _load("hillstrom", 2000)
    est = HTLNetRegressor(max_iter=1, embedding_dim=4, tower_units=(8,), random_state=0).fit(X, Y)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_onnx(est, tmp_path / "no such folder" / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="channel"):  # predict's own check of the columns
        onnx_inputs(est, X.drop(columns=["channel"]))

    mixed = X.copy()
    mixed["channel"] = mixed["channel"].astype(object)
    mixed.loc[: len(mixed) // 2, "channel"] = 1
    mixed.loc[len(mixed) // 2:, "channel"] = "1"  # two categories, one string
    clash = HTLNetRegressor(max_iter=1, embedding_dim=4, tower_units=(8,), random_state=0).fit(mixed, Y)
    with pytest.raises(ValueError, match="'channel'.*same string"):
        to_onnx(clash, tmp_path / "m.onnx")

    numbered = X.set_axis([*X.columns[:-1], 0], axis=1).rename(columns={"recency": "0"})
    twins = HTLNetRegressor(max_iter=1, embedding_dim=4, tower_units=(8,), random_state=0).fit(numbered, Y)
    with pytest.raises(ValueError, match="same string"):
        to_onnx(twins, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
