"""Everyday scikit-learn workflows and input kinds with HTLNetRegressor (issue: first-class citizen)."""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV, KFold, RandomizedSearchCV, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import load_hillstrom, make_funnel

FAST = dict(embedding_dim=4, tower_units=(16, 8), label_embedding_dim=4, fusion_dim=8, batch_size=256,
            max_iter=2, random_state=0, n_threads=1)


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(1500, n_stages=2, n_categorical=2, n_numeric=3, stage_rates=0.5, random_state=0)


@pytest.fixture(scope="module")
def hillstrom():
    X, Y = load_hillstrom()
    rows = np.random.default_rng(0).choice(len(X), 3000, replace=False)
    return X.iloc[rows].reset_index(drop=True), Y.iloc[rows].reset_index(drop=True)


def test_pipeline_with_column_transformer(hillstrom):
    X, Y = hillstrom
    numeric = ["recency", "history"]
    pre = ColumnTransformer(
        [("num", StandardScaler(), numeric)], remainder="passthrough", verbose_feature_names_out=False
    ).set_output(transform="pandas")
    pipe = Pipeline([("pre", pre), ("htlnet", HTLNetRegressor(**FAST))]).fit(X, Y)
    est = pipe[-1]
    # categorical columns kept their dtype through the passthrough and are embedded natively
    assert est.feature_encoder_.categorical_mask_.sum() == 4
    assert set(est.feature_names_in_) == set(X.columns)
    assert pipe.predict(X).shape == (3000, 3)


def test_clone_and_nested_skorch_settings(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**FAST, net_kwargs={"optimizer__betas": (0.5, 0.9)})
    est.fit(X, Y)
    assert est.net_.optimizer_.param_groups[0]["betas"] == (0.5, 0.9)
    twin = clone(est)
    assert not hasattr(twin, "net_") and twin.get_params()["net_kwargs"] == est.net_kwargs
    twin.set_params(net_kwargs={"optimizer__betas": (0.8, 0.95)}, learning_rate=0.02)
    twin.fit(X, Y)
    assert twin.net_.optimizer_.param_groups[0]["betas"] == (0.8, 0.95)
    assert twin.net_.optimizer_.param_groups[0]["lr"] == 0.02
    with pytest.raises(ValueError):
        HTLNetRegressor(**FAST, net_kwargs={"no_such_setting": 1}).fit(X, Y)


@pytest.mark.parametrize("dump, load", [(pickle.dumps, pickle.loads), ("joblib", "joblib")])
def test_pickle_and_joblib_round_trip(funnel, tmp_path, dump, load):
    X, Y = funnel
    est = HTLNetRegressor(**FAST).fit(X, Y)
    if dump == "joblib":
        joblib.dump(est, tmp_path / "model.joblib")
        again = joblib.load(tmp_path / "model.joblib")
    else:
        again = load(dump(est))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


def test_warm_start_continues_training(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**{**FAST, "max_iter": 1}, warm_start=True).fit(X, Y)
    first = est.predict(X)
    est.fit(X, Y)
    assert est.n_iter_ == 2  # one more epoch on the same net and history
    assert not np.array_equal(first, est.predict(X))
    cold = HTLNetRegressor(**{**FAST, "max_iter": 1}).fit(X, Y)
    cold.fit(X, Y)
    assert cold.n_iter_ == 1


def test_partial_fit_runs_one_epoch_per_call(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**FAST)
    for i in range(3):
        est.partial_fit(X.iloc[i * 500:(i + 1) * 500], Y.iloc[i * 500:(i + 1) * 500])
        assert est.n_iter_ == i + 1
    # after a fit with early stopping, partial_fit still trains one epoch without validation
    est = HTLNetRegressor(**FAST, early_stopping=True).fit(X, Y)
    est.partial_fit(X, Y)
    assert est.n_iter_ == 3 and "valid_loss" not in est.history_[-1]
    assert any(name == "early_stopping" for name, _ in est.net_.callbacks_)


def test_sample_weight_ones_equal_none_and_weights_matter(funnel):
    X, Y = funnel
    plain = HTLNetRegressor(**FAST).fit(X, Y).predict(X)
    ones = HTLNetRegressor(**FAST).fit(X, Y, sample_weight=np.ones(len(X))).predict(X)
    np.testing.assert_array_equal(plain, ones)
    w = np.where(Y["stage_1"] == 1, 5.0, 1.0)
    weighted = HTLNetRegressor(**FAST).fit(X, Y, sample_weight=w).predict(X)
    assert weighted[:, 0].mean() > plain[:, 0].mean() + 0.05  # up-weighted positives raise P(stage 1)
    with pytest.raises(ValueError, match="[Nn]egative"):
        HTLNetRegressor(**FAST).fit(X, Y, sample_weight=-np.ones(len(X)))


def test_sample_weight_routed_through_pipeline_and_search(funnel):
    X, Y = funnel
    w = np.where(Y["stage_1"] == 1, 5.0, 1.0)
    with sklearn.config_context(enable_metadata_routing=True):
        est = HTLNetRegressor(**FAST).set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        scaler = StandardScaler().set_output(transform="pandas").set_fit_request(sample_weight=False)
        pipe = Pipeline([("scale", scaler), ("htlnet", est)])
        routed = pipe.fit(X, Y, sample_weight=w).predict(X)
        Xs = StandardScaler().set_output(transform="pandas").fit_transform(X)
        direct = HTLNetRegressor(**FAST).fit(Xs, Y, sample_weight=w).predict(Xs)
        np.testing.assert_allclose(routed, direct, rtol=1e-6)
        # the weights reached the estimator's fit: an unweighted fit predicts otherwise
        assert not np.allclose(routed, HTLNetRegressor(**FAST).fit(Xs, Y).predict(Xs))
        # ...and its fit and score inside a search (a refused weight would raise here)
        GridSearchCV(clone(pipe), {"htlnet__relax_factor": [0.1, 0.5]}, cv=2, error_score="raise").fit(
            X, Y, sample_weight=w)


def test_searches_and_cross_validate_in_parallel(funnel):
    X, Y = funnel
    grid = GridSearchCV(HTLNetRegressor(**FAST), {"learning_rate": [1e-3, 1e-2]}, cv=2, n_jobs=2)
    grid.fit(X, Y)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_estimator_.n_iter_ == 2
    rand = RandomizedSearchCV(HTLNetRegressor(**FAST), {"relax_factor": [0.0, 0.1, 0.5, 1.0]}, n_iter=2,
                              cv=2, n_jobs=2, random_state=0).fit(X, Y)
    assert np.isfinite(rand.cv_results_["mean_test_score"]).all()
    cv = cross_validate(HTLNetRegressor(**FAST), X, Y, cv=KFold(3), return_estimator=True, n_jobs=2)
    assert len(cv["estimator"]) == 3 and all(hasattr(e, "net_") for e in cv["estimator"])
    assert np.isfinite(cv["test_score"]).all()


def test_dataframe_column_kinds():
    rng = np.random.default_rng(0)
    n = 600
    X = pd.DataFrame({
        "i": rng.integers(0, 10, n),
        "f": rng.normal(size=n),
        "b": rng.random(n) < 0.5,
        "c": pd.Categorical(rng.choice(["a", "b", "c"], n)),
        "s": pd.array(rng.choice(["x", "y"], n), dtype="string"),
        "o": pd.Series(rng.choice(["u", "v", "w"], n), dtype=object),
        "ni": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 5, n)), dtype="Int64"),
        "nf": pd.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)), dtype="Float64"),
        "nb": pd.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5), dtype="boolean"),
    })
    y = pd.DataFrame({"stage": (X["f"] + (X["c"] == "a") > 0).astype("boolean"),
                      "core": rng.gamma(1.0, 10.0, n) * (X["f"] > 0)})
    est = HTLNetRegressor(**FAST).fit(X, y)
    assert list(est.feature_names_in_) == list(X.columns) and est.n_features_in_ == 9
    assert list(est.feature_encoder_.categorical_mask_) == [False, False, False, True, True, True, False, False, False]
    assert est.predict(X).shape == (n, 2)
    frame = est.predict_frame(X)
    assert list(frame.columns) == ["stage", "core"] and frame.index.equals(X.index)
    # feature names are checked at predict time
    with pytest.raises(ValueError, match="feature names"):
        est.predict(X.rename(columns={"f": "g"}))
    with pytest.raises(ValueError, match="order"):
        est.predict(X[X.columns[::-1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_inputs_and_target_layouts(funnel, dtype):
    X, Y = funnel
    Xa = X.to_numpy(dtype=dtype)
    base = HTLNetRegressor(**FAST, categorical_features=[0, 1]).fit(Xa, Y.to_numpy())
    assert not hasattr(base, "feature_names_in_") and base.n_features_in_ == 5
    assert base.target_names_ == ["stage_1", "stage_2", "core"]
    pred = base.predict(Xa)
    assert pred.shape == (len(X), 3)
    as_frame = HTLNetRegressor(**FAST, categorical_features=[0, 1]).fit(Xa, Y)
    as_list = HTLNetRegressor(**FAST, categorical_features=[0, 1]).fit(Xa, [Y[c] for c in Y.columns])
    assert as_list.target_names_ == list(Y.columns)
    np.testing.assert_array_equal(as_frame.predict(Xa), as_list.predict(Xa))
    np.testing.assert_array_equal(as_frame.predict(Xa), pred)
    one_d = HTLNetRegressor(**FAST).fit(Xa, Y["core"].to_numpy())
    assert one_d.predict(Xa).shape == (len(X),)
    with pytest.raises(ValueError, match="5 features"):
        base.predict(Xa[:, :4])
