"""batch_size="auto" (issue 16): the rule, what a fit resolves it to, and how model files keep it."""

import hashlib
import json
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_regressors_train

from sk_htlnet import HTLNetRegressor
from sk_htlnet.data import resolve_batch_size
from sk_htlnet.datasets import make_funnel
from sk_htlnet.io import ModelFileError, load_model, save_model

from _sizes import SMALL_NET

NET = {k: v for k, v in SMALL_NET.items() if k != "batch_size"}


@pytest.mark.parametrize("n_rows, expected", [
    (1, 32), (127, 32), (128, 64), (200, 64), (255, 64), (256, 128), (1023, 256), (1024, 512),
    (2047, 512), (2048, 1024), (51_840, 1024),
])
def test_auto_is_the_largest_power_of_two_giving_two_steps_an_epoch_within_32_and_1024(n_rows, expected):
    assert resolve_batch_size("auto", n_rows) == expected
    assert resolve_batch_size(100, n_rows) == 100  # an int is kept as given


def test_every_resolved_size_is_a_power_of_two_in_range_with_at_least_two_steps_until_the_cap():
    for n in range(1, 5000):
        b = resolve_batch_size("auto", n)
        assert 32 <= b <= 1024 and b & (b - 1) == 0
        if 64 <= n // 2 < 1024:
            assert n // b >= 2 and n // (2 * b) < 2  # the largest such power of two


@pytest.mark.parametrize("X_dtype", [np.float64, np.float32])
def test_the_default_estimator_fits_scikit_learns_small_regression_problem(X_dtype):
    """check_regressors_train (200 rows, score > 0.5 on them) failed with one batch of 1024 a step:
    30 steps in 30 epochs gave R² 0.22."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_regressors_train("HTLNetRegressor", HTLNetRegressor(n_threads=1), X_dtype=X_dtype)


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(3000, n_stages=1, n_categorical=2, n_numeric=2, random_state=0)


def _steps_per_epoch(est):
    """Optimisation steps of the last epoch (skorch records a train_loss for each training batch)."""
    return sum("train_loss" in b for b in est.history_[-1, "batches"])


def test_auto_is_resolved_on_the_training_rows_without_the_validation_rows(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**NET, max_iter=1, early_stopping=False, random_state=0, n_threads=1).fit(X, Y)
    assert est.batch_size_ == 1024 and est.net_.batch_size == 1024
    assert _steps_per_epoch(est) == 3  # ceil(3000 / 1024)
    est = HTLNetRegressor(**NET, max_iter=1, early_stopping=True, validation_fraction=0.5,
                          random_state=0, n_threads=1).fit(X, Y)
    assert est.batch_size_ == 512  # 1500 training rows
    assert _steps_per_epoch(est) == 3  # ceil(1500 / 512)
    est = HTLNetRegressor(**NET, batch_size=100, max_iter=1, early_stopping=False, random_state=0,
                          n_threads=1).fit(X, Y)
    assert est.batch_size_ == 100 and _steps_per_epoch(est) == 30


def test_partial_fit_resolves_auto_on_the_first_chunk_and_keeps_it(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**NET, random_state=0, n_threads=1)
    est.partial_fit(X[:300], Y[:300])
    assert est.batch_size_ == 128
    est.partial_fit(X, Y)
    assert est.batch_size_ == 128 and est.net_.batch_size == 128
    assert _steps_per_epoch(est) == 24  # ceil(3000 / 128)


def _rewrite(path, edit):
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    manifest = json.loads(members["manifest.json"])
    manifest["config.json"] = hashlib.sha256(members["config.json"]).hexdigest()
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def small_fit(funnel):
    X, Y = funnel
    return HTLNetRegressor(**NET, max_iter=1, random_state=0, n_threads=1).fit(X[:600], Y[:600])


def test_a_model_file_keeps_the_resolved_batch_size(small_fit, funnel, tmp_path):
    X, _ = funnel
    save_model(small_fit, tmp_path / "m.htlnet")
    loaded = load_model(tmp_path / "m.htlnet")
    assert small_fit.batch_size_ == 256 and loaded.batch_size_ == 256 and loaded.net_.batch_size == 256
    assert loaded.get_params()["batch_size"] == "auto"
    np.testing.assert_array_equal(loaded.predict(X), small_fit.predict(X))


def test_files_without_the_resolved_size_load_when_the_parameter_is_an_int(small_fit, tmp_path):
    """A file written before batch_size="auto" has an int parameter and no net_spec.batch_size."""
    save_model(small_fit, tmp_path / "m.htlnet")

    def old(config):
        del config["fitted"]["net_spec"]["batch_size"]
        config["params"]["batch_size"] = 1024

    loaded = load_model(_rewrite(tmp_path / "m.htlnet", old))
    assert loaded.batch_size_ == 1024 and loaded.net_.batch_size == 1024

    def auto_without_size(config):
        del config["fitted"]["net_spec"]["batch_size"]

    save_model(small_fit, tmp_path / "n.htlnet")
    with pytest.raises(ModelFileError, match=r"net_spec.batch_size: expected the resolved batch size"):
        load_model(_rewrite(tmp_path / "n.htlnet", auto_without_size))


@pytest.mark.parametrize("params_size, spec_size, match", [
    (256, 64, r"net_spec.batch_size: expected an int in \[256, 256\]"),
    ("auto", 0, r"net_spec.batch_size: expected an int in \[1, "),
    ("auto", True, r"net_spec.batch_size: expected an int"),
])
def test_a_resolved_size_that_contradicts_the_parameter_is_refused(small_fit, tmp_path, params_size, spec_size,
                                                                   match):
    save_model(small_fit, tmp_path / "m.htlnet")

    def edit(config):
        config["params"]["batch_size"] = params_size
        config["fitted"]["net_spec"]["batch_size"] = spec_size

    with pytest.raises(ModelFileError, match=match):
        load_model(_rewrite(tmp_path / "m.htlnet", edit))
