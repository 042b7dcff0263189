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

import sk_htlnet.metrics
from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.metrics import (
    CORE_SCORERS,
    STAGE_SCORERS,
    canonical_metric,
    funnel_scorers,
    greater_is_better,
    log_loss,
    make_funnel_scorer,
    metric_task,
    normalized_gini,
    resolve_target,
    spearman,
)

SMALL = dict(max_iter=2, embedding_dim=4, tower_units=(16, 8), label_embedding_dim=4, fusion_dim=8,
             batch_size=256, n_threads=1, random_state=0)


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


@pytest.fixture(scope="module")
def by_hand():
    """A 4-row funnel whose every metric is known by hand (see test_metrics.test_funnel_report_by_hand)."""
    Y = pd.DataFrame({"visit": [0, 0, 1, 1], "buy": [0, 0, 0, 1], "spend": [0.0, 0.0, 0.0, 8.0]})
    P = np.array([[0.1, 0.2, 1.0], [0.4, 0.1, 0.0], [0.35, 0.3, 6.0], [0.8, 0.6, 5.0]])
    return np.arange(4.0)[:, None], Y, Fixed(P)


HAND = {  # scorer name: value on by_hand; losses negated
    "visit_auc": 0.75, "visit_neg_log_loss": np.mean(np.log([0.9, 0.6, 0.35, 0.8])),
    "buy_auc": 1.0, "buy_neg_log_loss": np.mean(np.log([0.8, 0.9, 0.7, 0.6])),
    "spend_neg_nrmse": -np.sqrt(11.5 / 12), "spend_neg_nmae": -10 / 8, "spend_gini": 1 / 3,
    "spend_spearman": 1 / np.sqrt(15),
}


def test_scorers_by_hand(by_hand):
    """Every scorer scores its own column with its own metric, a loss negated."""
    X, Y, est = by_hand
    scorers = funnel_scorers(Y)
    assert list(scorers) == list(HAND)
    assert list(scorers) == [f"{t}_{m}" for t in ("visit", "buy") for m in STAGE_SCORERS] + [
        f"spend_{m}" for m in CORE_SCORERS]
    for key, scorer in scorers.items():
        assert scorer(est, X, Y) == pytest.approx(HAND[key], rel=1e-12), key
    # aliases: a loss is negated under either of its names, gini is normalized_gini
    for alias, key in [("log_loss", "visit_neg_log_loss"), ("nrmse", "spend_neg_nrmse"),
                       ("nmae", "spend_neg_nmae"), ("normalized_gini", "spend_gini")]:
        target = key.split("_")[0]
        assert make_funnel_scorer(alias, target)(est, X, Y) == pytest.approx(HAND[key], rel=1e-12)


def test_every_scorer_ranks_a_perfect_prediction_above_a_bad_one(by_hand):
    """Greater is better for every scorer: the labels themselves beat their reversal."""
    X, Y, _ = by_hand
    perfect = Fixed(Y.to_numpy(dtype=float))
    bad = Fixed(np.column_stack([1 - Y["visit"], 1 - Y["buy"], 8 - Y["spend"]]))
    for key, scorer in funnel_scorers(Y).items():
        assert scorer(perfect, X, Y) > scorer(bad, X, Y), key


def test_metric_table():
    """canonical_metric, greater_is_better and metric_task: names, aliases and what they mean."""
    names = {"auc": "auc", "log_loss": "log_loss", "neg_log_loss": "log_loss", "nrmse": "nrmse",
             "neg_nrmse": "nrmse", "nmae": "nmae", "neg_nmae": "nmae", "normalized_gini": "normalized_gini",
             "gini": "normalized_gini", "spearman": "spearman"}
    for alias, name in names.items():
        assert canonical_metric(alias) == name
        assert metric_task(alias) == ("stage" if name in ("auc", "log_loss") else "core")
        assert greater_is_better(alias) == (name in ("auc", "normalized_gini", "spearman"))
    assert [metric_task(m) for m in STAGE_SCORERS] == ["stage"] * 2
    assert [metric_task(m) for m in CORE_SCORERS] == ["core"] * 4
    # greater_is_better is the metric's own direction: the perfect prediction scores greater
    # exactly for the metrics it says True for
    y, bad = np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.9, 0.2, 0.1, 0.8])
    for name in set(names.values()):
        metric = getattr(sk_htlnet.metrics, name)
        assert (metric(y, y) > metric(y, bad)) == greater_is_better(name), name
    for bad_name in ("r2", "neg_auc", None, 1):
        for function in (canonical_metric, greater_is_better, metric_task):
            with pytest.raises(ValueError, match="Unknown metric"):
                function(bad_name)


def test_resolve_target():
    Y = pd.DataFrame({"visit": [0, 1], "buy": [0, 1], "spend": [0.0, 5.0]})
    assert [resolve_target(Y, t) for t in ("visit", "buy", "spend")] == [0, 1, 2]
    assert [resolve_target(Y, t) for t in (-3, -2, -1, 0, 1, 2)] == [0, 1, 2, 0, 1, 2]
    assert resolve_target(Y.to_numpy(), np.int64(-1)) == 2 and type(resolve_target(Y, np.int64(1))) is int
    assert resolve_target(Y["spend"], "spend") == 0 and resolve_target(Y["spend"].to_numpy(), -1) == 0
    with pytest.raises(ValueError, match=r"'revenue'.*\['visit', 'buy', 'spend'\]"):
        resolve_target(Y, "revenue")
    with pytest.raises(ValueError, match="without column names"):
        resolve_target(Y.to_numpy(), "spend")
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_target(Y.set_axis(["a", "spend", "spend"], axis=1), "spend")
    for position in (3, -4):
        with pytest.raises(ValueError, match="out of range"):
            resolve_target(Y, position)
    for target in (1.0, True, None):
        with pytest.raises(ValueError, match="int .* or a str"):
            resolve_target(Y, target)


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
    # every scorer ran in the parallel workers (pickled there) for both candidates; refit="core_gini"
    # names one of them
    for key in scoring:
        assert np.isfinite(results[f"mean_test_{key}"]).all() and results[f"mean_test_{key}"].shape == (2,)
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
    for fold, est in enumerate(res["estimator"]):
        test = res["indices"]["test"][fold]
        pred = est.predict(X.iloc[test])
        assert res["test_core_gini"][fold] == pytest.approx(normalized_gini(Y["core"].iloc[test], pred[:, 2]))
        assert res["test_stage_1_neg_log_loss"][fold] == pytest.approx(
            -log_loss(Y["stage_1"].iloc[test], pred[:, 0]))


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
