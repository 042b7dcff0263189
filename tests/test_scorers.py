"""scikit-learn scorers of sk_htlnet.metrics: selection, signs, weights, pickling, searches."""

import pickle

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.metrics import (
    CORE_SCORERS,
    STAGE_SCORERS,
    auc,
    funnel_report,
    funnel_scorers,
    log_loss,
    make_funnel_scorer,
    nmae,
    normalized_gini,
    nrmse,
    spearman,
)

SMALL = dict(max_iter=2, embedding_dim=4, tower_units=(16, 8), label_embedding_dim=4, fusion_dim=8,
             batch_size=256, n_threads=1, random_state=0)
NAMES = ["stage_1", "stage_2", "core"]
FUNCS = {"auc": auc, "neg_log_loss": log_loss, "neg_nrmse": nrmse, "neg_nmae": nmae,
         "gini": normalized_gini, "spearman": spearman}
SIGN = {"auc": 1, "neg_log_loss": -1, "neg_nrmse": -1, "neg_nmae": -1, "gini": 1, "spearman": 1}


class Fixed(RegressorMixin, BaseEstimator):
    """Returns the prediction it was given: scorers can be checked on known numbers."""

    def __init__(self, pred=None):
        self.pred = pred

    def fit(self, X, y):
        return self

    def predict(self, X):
        return self.pred[np.asarray(X)[:, 0].astype(int)]


@pytest.fixture(scope="module")
def funnel():
    X, Y = make_funnel(1500, random_state=0)
    return X, Y


@pytest.fixture(scope="module")
def known():
    """Labels with missing stage and core values, a noisy prediction, row ids as X."""
    rng = np.random.default_rng(0)
    n = 400
    s1 = (rng.random(n) < 0.4).astype(float)
    s2 = s1 * (rng.random(n) < 0.5)
    core = s2 * rng.lognormal(3, 1, n)
    Y = pd.DataFrame({"visit": s1, "conversion": s2, "spend": core})
    Y.iloc[::17, 1] = np.nan
    Y.iloc[::23, 2] = np.nan
    P = np.column_stack([
        np.clip(s1 * 0.3 + rng.random(n) * 0.7, 0, 1),
        np.clip(s2 * 0.3 + rng.random(n) * 0.7, 0, 1),
        core + rng.normal(0, 15, n),
    ])
    X = np.arange(n, dtype=float)[:, None]
    return X, Y, Fixed(P)


def test_scorers_agree_with_metrics_and_signs(known):
    X, Y, est = known
    scorers = funnel_scorers(["visit", "conversion", "spend"])
    assert list(scorers) == [f"{t}_{m}" for t in ("visit", "conversion") for m in STAGE_SCORERS] + [
        f"spend_{m}" for m in CORE_SCORERS]
    for key, scorer in scorers.items():
        target, metric = key.split("_", 1)
        expected = FUNCS[metric](Y[target], est.pred[:, Y.columns.get_loc(target)])
        assert scorer(est, X, Y) == pytest.approx(SIGN[metric] * expected, rel=1e-12)
        assert scorer._sign == SIGN[metric]
    report = funnel_report(Y, est.pred)
    assert scorers["spend_gini"](est, X, Y) == pytest.approx(report.loc["spend", "Gini"])
    assert scorers["conversion_neg_log_loss"](est, X, Y) == pytest.approx(
        -report.loc["conversion", "log_loss"])
    # aliases: a loss is negated under either name, gini is normalized_gini
    assert make_funnel_scorer("log_loss", 0)(est, X, Y) == scorers["visit_neg_log_loss"](est, X, Y)
    assert make_funnel_scorer("nrmse", 2)._sign == -1
    assert make_funnel_scorer("normalized_gini", 2)(est, X, Y) == scorers["spend_gini"](est, X, Y)


def test_selection_by_name_and_position(known):
    X, Y, est = known
    for name, positions in {"visit": (0, -3), "conversion": (1, -2), "spend": (2, -1)}.items():
        metric = "gini" if name == "spend" else "auc"
        by_name = make_funnel_scorer(metric, name)(est, X, Y)
        for pos in positions:
            assert make_funnel_scorer(metric, pos)(est, X, Y) == by_name
            assert make_funnel_scorer(metric, np.int64(pos))(est, X, Y.to_numpy()) == by_name
    # positional dict: default names, works with an ndarray y
    positional = funnel_scorers(3)
    assert list(positional)[:2] == ["stage_1_auc", "stage_1_neg_log_loss"]
    named = funnel_scorers(Y)
    for (kp, sp), (kn, sn) in zip(positional.items(), named.items()):
        assert kp.split("_")[-1] == kn.split("_")[-1]
        assert sp(est, X, Y.to_numpy()) == sn(est, X, Y)
    assert list(funnel_scorers(2, n_stages=0))[:1] == ["core_1_neg_nrmse"]
    assert len(funnel_scorers(["a", "b", "c"], n_stages=1)) == 2 + 4 * 2


def test_one_dimensional_core(known):
    X, Y, _ = known
    core = Y["spend"]
    est = Fixed(core.fillna(0).to_numpy() + np.arange(len(core)) % 7)
    expected = normalized_gini(core, est.pred)
    assert funnel_scorers(["spend"])["spend_gini"](est, X, core) == expected  # Series name
    assert funnel_scorers(1)["core_gini"](est, X, core.to_numpy()) == expected
    assert make_funnel_scorer("gini", -1)(est, X, core.to_numpy()) == expected
    assert list(funnel_scorers(1)) == [f"core_{m}" for m in CORE_SCORERS]


def test_resolution_errors(known):
    X, Y, est = known
    with pytest.raises(ValueError, match=r"'revenue'.*\['visit', 'conversion', 'spend'\]"):
        make_funnel_scorer("gini", "revenue")(est, X, Y)
    with pytest.raises(ValueError, match="'spend'.*without column names"):
        make_funnel_scorer("gini", "spend")(est, X, Y.to_numpy())
    with pytest.raises(ValueError, match="'spend'.*without column names"):
        make_funnel_scorer("gini", "spend")(est, X, Y["spend"].to_numpy())
    with pytest.raises(ValueError, match="position 3 is out of range"):
        make_funnel_scorer("gini", 3)(est, X, Y)
    with pytest.raises(ValueError, match="0/1"):
        make_funnel_scorer("auc", "spend")(est, X, Y)
    with pytest.raises(ValueError, match="shape"):
        make_funnel_scorer("gini", 0)(est, X, Y[["visit", "spend"]])
    with pytest.raises(ValueError, match="Unknown metric 'r2'"):
        make_funnel_scorer("r2", 0)
    with pytest.raises(ValueError, match="int .* or a str"):
        make_funnel_scorer("auc", 1.0)
    with pytest.raises(ValueError, match="unique"):
        funnel_scorers(["a", "a"])
    with pytest.raises(ValueError, match="n_stages"):
        funnel_scorers(["a", "b"], n_stages=3)
    with pytest.raises(ValueError, match="targets"):
        funnel_scorers("spend")
    with pytest.raises(ValueError):
        funnel_scorers(HTLNetRegressor())  # not fitted


def test_undefined_metric_is_nan(known):
    X, Y, est = known
    Y = Y.copy()
    Y["conversion"] = 0.0
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(make_funnel_scorer("auc", "conversion")(est, X, Y))


def test_scorers_pickle(known):
    X, Y, est = known
    scorers = funnel_scorers(["visit", "conversion", "spend"])
    restored = pickle.loads(pickle.dumps(scorers))
    for key in scorers:
        assert restored[key](est, X, Y) == scorers[key](est, X, Y)


def test_weighted_metrics():
    rng = np.random.default_rng(1)
    n = 300
    stage = (rng.random(n) < 0.3).astype(float)
    core = np.where(stage == 1, rng.lognormal(2, 1, n), 0.0)
    core_pred = core + rng.normal(0, 5, n)
    core_pred[::10] = 1.0  # ties
    stage_pred = np.clip(stage * 0.4 + rng.random(n) * 0.6, 0, 1)
    w = rng.integers(0, 4, n).astype(float)
    repeat = np.repeat(np.arange(n), w.astype(int))
    for f, y, p in [(auc, stage, stage_pred), (log_loss, stage, stage_pred), (nrmse, core, core_pred),
                    (nmae, core, core_pred), (normalized_gini, core, core_pred), (spearman, core, core_pred)]:
        # unit weights are the unweighted metric, integer weights repeat rows, weights matter
        assert f(y, p, sample_weight=np.ones(n)) == pytest.approx(f(y, p), rel=1e-12, abs=1e-12)
        assert f(y, p, sample_weight=w) == pytest.approx(f(y[repeat], p[repeat]), rel=1e-10)
        assert f(y, p, sample_weight=w) != pytest.approx(f(y, p), rel=1e-6)
        # a missing label drops its weight with it
        y_nan = y.copy()
        y_nan[:5] = np.nan
        assert f(y_nan, p, sample_weight=w) == pytest.approx(f(y[5:], p[5:], sample_weight=w[5:]))
    with pytest.raises(ValueError, match="non-negative"):
        nrmse(core, core_pred, sample_weight=-w)
    with pytest.raises(ValueError, match="one weight per row"):
        auc(stage, stage_pred, sample_weight=w[:-1])
    report = funnel_report(np.column_stack([stage, core]), np.column_stack([stage_pred, core_pred]),
                           sample_weight=w)
    assert report.loc["core", "Gini"] == normalized_gini(core, core_pred, sample_weight=w)


def test_sample_weight_routing(known):
    X, Y, est = known
    w = np.where(np.arange(len(Y)) % 3 == 0, 5.0, 1.0)
    cv = KFold(2, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        weighted = {k: s.set_score_request(sample_weight=True)
                    for k, s in funnel_scorers(["visit", "conversion", "spend"]).items()}
        res_w = cross_validate(est, X, Y, cv=cv, scoring=weighted, params={"sample_weight": w},
                               return_indices=True)
        res_u = cross_validate(est, X, Y, cv=cv, scoring=funnel_scorers(["visit", "conversion", "spend"]))
    test = res_w["indices"]["test"][0]
    assert res_w["test_spend_gini"][0] == pytest.approx(
        normalized_gini(Y["spend"].iloc[test], est.pred[test, 2], sample_weight=w[test]))
    assert res_u["test_spend_gini"][0] == pytest.approx(
        normalized_gini(Y["spend"].iloc[test], est.pred[test, 2]))
    for key in weighted:
        assert not np.allclose(res_w[f"test_{key}"], res_u[f"test_{key}"]), key


def test_grid_search_multimetric_refit(funnel):
    X, Y = funnel
    scoring = funnel_scorers(Y)
    search = GridSearchCV(HTLNetRegressor(**SMALL), {"learning_rate": [1e-3, 1e-2]}, scoring=scoring,
                          refit="core_gini", cv=KFold(2, shuffle=True, random_state=0), n_jobs=2)
    search.fit(X, Y)
    results = search.cv_results_
    for key in scoring:
        assert results[f"mean_test_{key}"].shape == (2,)
    assert np.all(results["mean_test_core_neg_nrmse"] < 0) and np.all(results["mean_test_stage_1_auc"] > 0)
    assert search.best_index_ == int(np.argmax(results["mean_test_core_gini"]))
    assert search.best_params_ == results["params"][search.best_index_]
    assert search.best_score_ == results["mean_test_core_gini"][search.best_index_]
    assert search.best_estimator_.learning_rate == search.best_params_["learning_rate"]
    assert search.score(X, Y) == scoring["core_gini"](search.best_estimator_, X, Y)
    # scorers built from the fitted estimator select by position and give the same numbers
    from_est = funnel_scorers(search.best_estimator_)
    assert list(from_est) == list(scoring)
    assert from_est["stage_2_auc"](search.best_estimator_, X, Y.to_numpy()) == scoring["stage_2_auc"](
        search.best_estimator_, X, Y)


def test_cross_validate_return_estimator(funnel):
    X, Y = funnel
    scoring = funnel_scorers(Y)
    res = cross_validate(HTLNetRegressor(**SMALL), X, Y, cv=KFold(3, shuffle=True, random_state=0),
                         scoring=scoring, return_estimator=True, return_indices=True)
    assert len(res["estimator"]) == 3
    for fold, est in enumerate(res["estimator"]):
        test = res["indices"]["test"][fold]
        pred = est.predict(X.iloc[test])
        assert res["test_core_gini"][fold] == pytest.approx(normalized_gini(Y["core"].iloc[test], pred[:, 2]))
        assert res["test_stage_1_neg_log_loss"][fold] == pytest.approx(
            -log_loss(Y["stage_1"].iloc[test], pred[:, 0]))
    assert np.all((res["test_stage_1_auc"] >= 0) & (res["test_stage_1_auc"] <= 1))
    assert np.all(res["test_core_neg_nrmse"] < 0) and np.all(res["test_core_neg_nmae"] < 0)


def test_plain_regression_and_pipeline(funnel):
    X, Y = funnel
    y = Y["core"]
    pipe = make_pipeline(FunctionTransformer(), HTLNetRegressor(**SMALL)).fit(X, y)
    scorers = funnel_scorers(pipe)
    assert list(scorers) == [f"core_{m}" for m in CORE_SCORERS]
    pred = pipe.predict(X)
    assert pred.shape == (len(y),)
    assert scorers["core_gini"](pipe, X, y.to_numpy()) == normalized_gini(y, pred)
    assert funnel_scorers(["core"])["core_spearman"](pipe, X, y) == spearman(y, pred)


def test_sample_weight_routing_with_htlnet(funnel):
    X, Y = funnel
    w = np.where(Y["stage_1"].to_numpy() == 1, 4.0, 1.0)
    cv = KFold(2, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        est = HTLNetRegressor(**SMALL)
        est = est.set_fit_request(sample_weight=False)  # keep the fits unweighted here
        weighted = {k: s.set_score_request(sample_weight=True) for k, s in funnel_scorers(Y).items()}
        res_w = cross_validate(est, X, Y, cv=cv, scoring=weighted, params={"sample_weight": w},
                               return_estimator=True, return_indices=True)
        res_u = cross_validate(est, X, Y, cv=cv, scoring=funnel_scorers(Y))
    for fold, fitted in enumerate(res_w["estimator"]):
        test = res_w["indices"]["test"][fold]
        pred = fitted.predict(X.iloc[test])
        assert res_w["test_core_spearman"][fold] == pytest.approx(
            spearman(Y["core"].iloc[test], pred[:, 2], sample_weight=w[test]))
        assert res_u["test_core_spearman"][fold] == pytest.approx(spearman(Y["core"].iloc[test], pred[:, 2]))
    assert not np.allclose(res_w["test_core_gini"], res_u["test_core_gini"])
    assert not np.allclose(res_w["test_stage_2_neg_log_loss"], res_u["test_stage_2_neg_log_loss"])
