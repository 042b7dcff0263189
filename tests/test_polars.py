"""Issue 16: polars input is read exactly as the same data in pandas.

X (fit, partial_fit, predict, predict_frame, score, make_dataset), y (a DataFrame whose columns
name the targets, a Series), sample_weight and the metrics' y_true take polars objects; each pair
of tests builds the same data once in pandas and once in polars (from the same Python values, not
one from the other) and asks for bit-identical results.  pl.Categorical and pl.Enum are pandas
categories, pl.String is a pandas string (object / str) column, nulls are NaN, pl.Boolean is a
bool column, also in a chunk where it holds a null."""

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold, cross_validate

from _sizes import SMALL_NET
from sk_htlnet import HTLNetRegressor
from sk_htlnet.metrics import auc, funnel_report, funnel_scorers, normalized_gini, resolve_target

pl = pytest.importorskip("polars")
pytest.importorskip("pyarrow")  # polars' to_pandas, through which sk_htlnet reads polars

FAST = dict(**SMALL_NET, max_iter=2, random_state=0)
N = 400
LEVELS = ["lo", "mid", "hi"]


def _columns(n=N, seed=0, unseen=False):
    """The same features as plain Python lists (None = missing) and the targets, with signal."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(["a", "b", "c", "d"], n).astype(object)
    cat[rng.random(n) < 0.1] = None
    if unseen:
        cat[:5] = "never_seen"
    text = rng.choice(["red", "green", "blue"], n).astype(object)
    text[rng.random(n) < 0.1] = None
    num = rng.normal(size=n)
    num_missing = rng.random(n) < 0.15
    count = rng.integers(0, 20, n)
    count_missing = rng.random(n) < 0.1
    flag = rng.random(n) < 0.4
    flag_missing = rng.random(n) < 0.1
    columns = {
        "cat": list(cat), "level": list(rng.choice(LEVELS, n)), "text": list(text),
        "num": [None if m else float(v) for v, m in zip(num, num_missing)],
        "count": [None if m else int(v) for v, m in zip(count, count_missing)],
        "flag": [bool(v) for v in flag],
        "flag_na": [None if m else bool(v) for v, m in zip(flag, flag_missing)],
    }
    score = np.nan_to_num(num) + (cat == "a") + 0.5 * flag
    visit = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(float)
    spend = visit * np.exp(rng.normal(score, 0.5))
    visit[rng.random(n) < 0.05] = np.nan  # missing stage labels
    return columns, {"visit": list(visit), "spend": list(spend)}


def _pandas(columns, strings=None):
    """``columns`` in pandas: categories, strings (pandas' default dtype or ``strings``), NaN,
    bool, and the nullable boolean for a bool column with a missing value."""
    return pd.DataFrame({
        "cat": pd.Categorical(columns["cat"]),
        "level": pd.Categorical(columns["level"], categories=LEVELS),
        "text": pd.Series(columns["text"], dtype=strings),
        "num": pd.Series(columns["num"], dtype=float),
        "count": pd.Series(columns["count"], dtype=float),
        "flag": pd.Series(columns["flag"], dtype=bool),
        "flag_na": pd.Series(columns["flag_na"], dtype="boolean"),
    })


def _polars(columns):
    return pl.DataFrame([
        pl.Series("cat", columns["cat"], dtype=pl.Categorical),
        pl.Series("level", columns["level"], dtype=pl.Enum(LEVELS)),
        pl.Series("text", columns["text"], dtype=pl.String),
        pl.Series("num", columns["num"], dtype=pl.Float64),
        pl.Series("count", columns["count"], dtype=pl.Int64),
        pl.Series("flag", columns["flag"], dtype=pl.Boolean),
        pl.Series("flag_na", columns["flag_na"], dtype=pl.Boolean),
    ])


@pytest.fixture(scope="module")
def data():
    columns, targets = _columns()
    new_columns, _ = _columns(n=100, seed=1, unseen=True)
    return {
        "X_pd": _pandas(columns), "X_pl": _polars(columns),
        "Y_pd": pd.DataFrame(targets), "Y_pl": pl.DataFrame(targets),
        "new_pd": _pandas(new_columns), "new_pl": _polars(new_columns),
    }


@pytest.fixture(scope="module")
def fitted(data):
    return {kind: HTLNetRegressor(**FAST).fit(data[f"X_{kind}"], data[f"Y_{kind}"]) for kind in ("pd", "pl")}


def test_polars_frames_give_the_predictions_of_the_same_pandas_frames(data, fitted):
    est_pd, est_pl = fitted["pd"], fitted["pl"]
    assert est_pl.target_names_ == est_pd.target_names_ == ["visit", "spend"]
    np.testing.assert_array_equal(est_pl.feature_names_in_, est_pd.feature_names_in_)
    np.testing.assert_array_equal(est_pl.feature_encoder_.categorical_mask_,
                                  [True, True, True, False, False, False, False])
    np.testing.assert_array_equal(est_pl.feature_encoder_.categorical_mask_, est_pd.feature_encoder_.categorical_mask_)
    assert est_pl.history_[-1, "train_loss"] == est_pd.history_[-1, "train_loss"]
    for rows in ("X", "new"):  # the training rows, and new rows with an unseen category
        expected = est_pd.predict(data[f"{rows}_pd"])
        assert np.unique(expected[:, 1]).size > 10  # the features inform the prediction
        np.testing.assert_array_equal(est_pl.predict(data[f"{rows}_pl"]), expected)
        # across libraries: a model fitted on one reads the other's frames
        np.testing.assert_array_equal(est_pd.predict(data[f"{rows}_pl"]), expected)
        np.testing.assert_array_equal(est_pl.predict(data[f"{rows}_pd"]), expected)
    frame = est_pl.predict_frame(data["new_pl"])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["visit", "spend"]
    pd.testing.assert_frame_equal(frame, est_pd.predict_frame(data["new_pd"]))
    assert est_pl.score(data["X_pl"], data["Y_pl"]) == est_pd.score(data["X_pd"], data["Y_pd"])
    np.testing.assert_array_equal(est_pl.make_dataset(data["X_pl"], data["Y_pl"])[:][1],
                                  est_pd.make_dataset(data["X_pd"], data["Y_pd"])[:][1])


@pytest.mark.parametrize("strings", [object, "string"])
def test_a_polars_string_column_is_read_as_any_pandas_string_column(data, fitted, strings):
    columns, targets = _columns()
    X = _pandas(columns, strings=strings)
    est = HTLNetRegressor(**FAST).fit(X, pd.DataFrame(targets))
    np.testing.assert_array_equal(est.predict(_pandas(_columns(100, 1, True)[0], strings)),
                                  fitted["pl"].predict(data["new_pl"]))


def test_polars_y_names_the_targets_as_pandas_does(data):
    X_pl, Y_pl, Y_pd = data["X_pl"], data["Y_pl"], data["Y_pd"]
    renamed = Y_pl.rename({"visit": "opened", "spend": "revenue"})
    est = HTLNetRegressor(**FAST).fit(X_pl, renamed)
    assert est.target_names_ == ["opened", "revenue"]
    assert "train_loss_revenue" in est.history_[-1]
    with pytest.raises(ValueError, match=r"y has targets \['visit', 'spend'\], but the model was fitted on"):
        est.score(X_pl, Y_pl)
    # a 1-D y: a named polars Series names the core; an unnamed one (polars names it "") is "core"
    named = HTLNetRegressor(**FAST).fit(X_pl, Y_pl["spend"])
    unnamed = HTLNetRegressor(**FAST).fit(X_pl, pl.Series(Y_pd["spend"].to_numpy()))
    with_pandas = HTLNetRegressor(**FAST).fit(data["X_pd"], Y_pd["spend"])
    assert named.target_names_ == ["spend"] and unnamed.target_names_ == ["core"]
    assert named.predict(X_pl).shape == (N,)
    np.testing.assert_array_equal(named.predict(X_pl), with_pandas.predict(data["X_pd"]))
    # a list of polars Series columns, as a list of pandas ones
    listed = HTLNetRegressor(**FAST).fit(X_pl, [Y_pl["visit"], Y_pl["spend"]])
    assert listed.target_names_ == ["visit", "spend"]


def test_polars_sample_weight_and_partial_fit_match_pandas(data):
    weights = np.random.default_rng(2).uniform(0.5, 2.0, N)
    kinds = {"pd": pd.Series(weights), "pl": pl.Series("w", weights)}
    preds = {kind: HTLNetRegressor(**FAST).fit(data[f"X_{kind}"], data[f"Y_{kind}"], sample_weight=w)
             .predict(data["new_pd"]) for kind, w in kinds.items()}
    np.testing.assert_array_equal(preds["pl"], preds["pd"])
    # chunks: the first has no missing bool, the second does; the bool column stays numeric
    first = [i for i, v in enumerate(data["X_pd"]["flag_na"].isna()) if not v][:200]
    rest = [i for i in range(N) if i not in set(first)]
    chunked = {}
    for kind in ("pd", "pl"):
        est = HTLNetRegressor(**FAST)
        for rows in (first, rest):
            X, Y = data[f"X_{kind}"], data[f"Y_{kind}"]
            X, Y = (X.iloc[rows], Y.iloc[rows]) if kind == "pd" else (X[rows], Y[rows])
            est.partial_fit(X, Y)
        chunked[kind] = est.predict(data[f"new_{kind}"])
    assert data["X_pl"][first]["flag_na"].null_count() == 0 and data["X_pl"][rest]["flag_na"].null_count() > 0
    np.testing.assert_array_equal(chunked["pl"], chunked["pd"])


def _message(call):
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


def test_polars_frames_get_the_errors_pandas_frames_get(data, fitted):
    est = fitted["pl"]
    for drop in ("num", "cat"):
        message = _message(lambda: est.predict(data["new_pd"].drop(columns=drop)))
        assert "missing" in message and drop in message
        assert _message(lambda: est.predict(data["new_pl"].drop(drop))) == message
    reordered = list(reversed(data["new_pd"].columns))
    assert _message(lambda: est.predict(data["new_pl"].select(reordered))) == \
        _message(lambda: est.predict(data["new_pd"][reordered]))
    dates = {"when": pd.date_range("2024-01-01", periods=N, freq="D")}
    assert _message(lambda: HTLNetRegressor(**FAST).fit(pl.DataFrame(dates), data["Y_pl"])) == \
        _message(lambda: HTLNetRegressor(**FAST).fit(pd.DataFrame(dates), data["Y_pd"]))
    bad = {"visit": [2.0] * N, "spend": [1.0] * N}
    assert _message(lambda: HTLNetRegressor(**FAST).fit(data["X_pl"], pl.DataFrame(bad))) == \
        _message(lambda: HTLNetRegressor(**FAST).fit(data["X_pd"], pd.DataFrame(bad)))
    with pytest.raises(ValueError, match=r"X is a polars LazyFrame: pass X.collect\(\)"):
        est.predict(data["new_pl"].lazy())


def test_metrics_and_scorers_read_polars_y(data, fitted):
    pred = fitted["pd"].predict(data["X_pd"])
    Y_pd, Y_pl = data["Y_pd"], data["Y_pl"]
    report = funnel_report(Y_pl, pred)
    assert list(report.index) == ["visit", "spend"]
    pd.testing.assert_frame_equal(report, funnel_report(Y_pd, pred))
    pd.testing.assert_frame_equal(funnel_report(Y_pl, pl.DataFrame(pred, schema=["visit", "spend"])), report)
    assert auc(Y_pl["visit"], pl.Series(pred[:, 0])) == auc(Y_pd["visit"], pred[:, 0])
    weights = pl.Series(np.linspace(0.5, 1.5, N))
    assert normalized_gini(Y_pl["spend"], pred[:, 1], sample_weight=weights) == \
        normalized_gini(Y_pd["spend"], pred[:, 1], sample_weight=weights.to_numpy())
    assert resolve_target(Y_pl, "spend") == 1 and resolve_target(Y_pl["spend"], "spend") == 0
    assert list(funnel_scorers(Y_pl)) == list(funnel_scorers(Y_pd))
    scorers = funnel_scorers(Y_pl)
    est = fitted["pl"]
    assert {name: s(est, data["X_pl"], Y_pl) for name, s in scorers.items()} == \
        {name: s(est, data["X_pd"], Y_pd) for name, s in scorers.items()}
    # a cross-validation that slices polars X and Y gives the scores of the pandas one
    cv = {kind: cross_validate(HTLNetRegressor(**FAST), data[f"X_{kind}"], data[f"Y_{kind}"],
                               scoring={"spend_gini": scorers["spend_gini"]}, cv=KFold(2))
          for kind in ("pd", "pl")}
    np.testing.assert_array_equal(cv["pl"]["test_spend_gini"], cv["pd"]["test_spend_gini"])


def test_polars_is_not_imported_and_pyarrow_is_asked_for_clearly():
    """Importing sk_htlnet imports no polars; without pyarrow, a polars X names what to install."""
    script = textwrap.dedent("""
        import sys
        import sk_htlnet, sk_htlnet.metrics
        assert "polars" not in sys.modules
        sys.modules["pyarrow"] = None  # as if pyarrow were not installed
        import polars as pl
        from sk_htlnet import HTLNetRegressor
        try:
            HTLNetRegressor().fit(pl.DataFrame({"a": [1.0, 2.0, 3.0]}), [1.0, 2.0, 3.0])
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "X is a polars DataFrame" in out and "needs pyarrow" in out and "pip install pyarrow" in out
