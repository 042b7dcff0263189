"""Tests for sk_htlnet.metrics (HTLNet §5 evaluation protocol)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import UndefinedMetricWarning

from sk_htlnet.datasets import load_hillstrom, make_funnel
from sk_htlnet.metrics import (
    REPORT_COLUMNS,
    auc,
    funnel_report,
    gain_curve,
    log_loss,
    nmae,
    normalized_gini,
    nrmse,
    spearman,
)


@pytest.fixture(scope="module")
def spend():
    """A zero-inflated, heavy-tailed core target with many tied zeros, and a noisy score."""
    rng = np.random.default_rng(0)
    y = np.where(rng.random(5000) < 0.1, rng.lognormal(3, 1, 5000), 0.0)
    return y, y + rng.normal(0, 20, y.size)


# normalized_gini and gain_curve ---------------------------------------------------


def test_gain_curve_and_gini_by_hand():
    """Ranked: 3, then a tie {1, 0} credited 0.5 each, then 0; total 4."""
    y, p = [3.0, 1.0, 0.0, 0.0], [0.9, 0.5, 0.5, 0.1]
    x, gain = gain_curve(y, p)
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(gain, [0, 0.75, 0.875, 1, 1])
    # Gini = sum of trapezoid sides / n - 1: model 6.25 / 4 - 1, perfect 6.5 / 4 - 1
    assert normalized_gini(y, p) == pytest.approx(0.5625 / 0.625)


def test_gini_perfect_ordering_is_exactly_one(spend):
    y, _ = spend
    assert normalized_gini(y, y) == 1.0
    assert normalized_gini(y, np.log1p(y)) == 1.0  # only the order matters


def test_gini_reversed_ordering_is_minus_one(spend):
    y, _ = spend
    assert normalized_gini(y, -y) == pytest.approx(-1.0)


def test_gini_constant_prediction_is_zero(spend):
    y, _ = spend
    assert normalized_gini(y, np.full_like(y, 7.0)) == pytest.approx(0.0, abs=1e-12)
    x, gain = gain_curve(y, np.zeros_like(y))
    np.testing.assert_allclose(gain, x, atol=1e-12)  # the diagonal


def test_gini_random_prediction_is_near_zero(spend):
    y, _ = spend
    random_scores = np.random.default_rng(1).random(y.size)
    assert abs(normalized_gini(y, random_scores)) < 0.1
    assert 0.2 < normalized_gini(*spend) < 1


def test_gini_and_gain_curve_do_not_depend_on_row_order(spend):
    y, p = spend
    p = np.round(p / 25)  # a handful of distinct values: large tie groups
    assert np.unique(p).size < 20
    order = np.random.default_rng(2).permutation(y.size)
    assert normalized_gini(y[order], p[order]) == normalized_gini(y, p)
    np.testing.assert_array_equal(gain_curve(y[order], p[order])[1], gain_curve(y, p)[1])


@pytest.mark.parametrize(
    "y", [[1.0, -1.0, 3.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [np.nan, np.nan, np.nan]]
)
def test_gini_undefined_is_nan_with_warning(y):
    with pytest.warns(UndefinedMetricWarning, match="Gini"):
        assert np.isnan(normalized_gini(y, [0.1, 0.2, 0.3]))


def test_gain_curve_rejects_negative_or_zero_targets():
    with pytest.raises(ValueError, match="negative"):
        gain_curve([1.0, -1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="zero"):
        gain_curve([0.0, 0.0], [0.0, 1.0])


# regression metrics ----------------------------------------------------------------


def test_nrmse_of_mean_predictor_is_one(spend):
    y, p = spend
    assert nrmse(y, np.full_like(y, y.mean())) == pytest.approx(1.0)
    assert nrmse(y, y) == 0.0
    expected = np.sqrt(np.mean((y - p) ** 2)) / np.std(y, ddof=0)
    assert nrmse(y, p) == pytest.approx(expected)


def test_nmae_of_zero_predictor_is_one(spend):
    y, p = spend
    assert nmae(y, np.zeros_like(y)) == pytest.approx(1.0)
    assert nmae(y, p) == pytest.approx(np.mean(np.abs(y - p)) / np.mean(np.abs(y)))


def test_nmae_of_mean_predictor_on_hillstrom_is_about_two():
    """The figure quoted in HTLNet.md §5 for a zero-inflated target."""
    spend = load_hillstrom()[1]["spend"]
    assert nmae(spend, np.full(len(spend), spend.mean())) == pytest.approx(2.0, abs=0.05)


def test_spearman_by_hand_with_ties():
    """Average ranks: y = [1, 2, 2, 4] ranks [1, 2.5, 2.5, 4], p ranks [1, 3, 2, 4]; centred,
    their products sum to 4.5 and their squares to 4.5 and 5."""
    rho = spearman([1.0, 2.0, 2.0, 4.0], [10.0, 30.0, 20.0, 40.0])
    assert isinstance(rho, float)
    assert rho == pytest.approx(4.5 / np.sqrt(4.5 * 5), rel=1e-12)


def test_spearman_without_ties_is_the_rank_difference_formula():
    """1 - 6 sum(d^2) / (n (n^2 - 1)), d the rank differences, holds when no value repeats."""
    rng = np.random.default_rng(5)
    y, p = rng.normal(size=500), rng.normal(size=500)
    p = p + y  # correlated
    d = np.argsort(np.argsort(y)) - np.argsort(np.argsort(p))
    n = y.size
    assert spearman(y, p) == pytest.approx(1 - 6 * np.sum(d**2) / (n * (n**2 - 1)), rel=1e-12)
    # only the order matters: a strictly increasing transform of either input changes nothing
    assert spearman(y, p) == pytest.approx(spearman(np.exp(y), p**3), rel=1e-12)
    assert spearman(y, y**3) == pytest.approx(1.0) and spearman(y, -y) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "metric, y",
    [(nrmse, [2.0, 2.0]), (nmae, [0.0, 0.0]), (spearman, [1.0, 1.0])],
)
def test_regression_metrics_undefined_is_nan_with_warning(metric, y):
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(metric(y, [0.5, 1.5]))


# stage metrics ----------------------------------------------------------------------


def test_auc_and_log_loss_by_hand():
    """AUC: 3 of the 4 (positive, negative) pairs are ordered right. Log loss: the mean of
    -log(probability given to the true label)."""
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert auc(y, p) == pytest.approx(0.75, rel=1e-12)
    assert log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.35, 0.8])), rel=1e-12)


def test_auc_is_the_share_of_pairs_ordered_right():
    """Every (positive, negative) pair counted, a tied pair as half."""
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(int)
    p = np.round(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.1, y.size), 2)  # rounded: ties
    pos, neg = p[y == 1][:, None], p[y == 0][None, :]
    assert auc(y, p) == pytest.approx(np.mean((pos > neg) + 0.5 * (pos == neg)), rel=1e-12)
    assert auc(y, -p) == pytest.approx(1 - auc(y, p), rel=1e-12)


def test_log_loss_clips_confident_mistakes():
    eps = np.finfo(np.float64).eps
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-np.log(eps))
    assert log_loss([1, 1], [0.9, 0.9]) == pytest.approx(-np.log(0.9))  # one class is fine


def test_auc_with_one_class_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="AUC"):
        assert np.isnan(auc([1, 1, np.nan], [0.1, 0.2, 0.3]))


def test_stage_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="0/1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        log_loss([0, 1], [0.1, 1.2])


# shared behaviour -----------------------------------------------------------------------

ALL_METRICS = [auc, log_loss, nrmse, nmae, normalized_gini, spearman]


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_nan_labels_are_masked(metric):
    rng = np.random.default_rng(4)
    y = (rng.random(400) < 0.4).astype(float)
    p = np.clip(0.4 + 0.3 * (y - 0.4) + rng.normal(0, 0.2, y.size), 0, 1)
    missing = rng.random(y.size) < 0.25
    y_missing = np.where(missing, np.nan, y)
    p_missing = np.where(missing, np.nan, p)  # predictions of unlabelled rows are ignored
    assert metric(y_missing, p_missing) == metric(y[~missing], p[~missing])
    nullable = pd.Series(y_missing).astype("Int64")
    assert metric(nullable, pd.Series(p)) == metric(y[~missing], p[~missing])


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_metrics_validate_shapes_and_predictions(metric):
    with pytest.raises(ValueError, match="same length"):
        metric([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="y_pred must be finite"):
        metric([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="1-D"):
        metric([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]])


def test_weighted_metrics():
    """Unit weights are the unweighted metric, integer weights repeat rows, weights matter."""
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


# funnel_report ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def funnel():
    _, Y, truth = make_funnel(20_000, random_state=0, return_truth=True)
    return Y, truth


def test_funnel_report_by_hand():
    """Each cell of a 4-row funnel computed by hand: every column is scored with its own metrics
    on its own prediction column."""
    y = pd.DataFrame({"visit": [0, 0, 1, 1], "buy": [0, 0, 0, 1], "spend": [0.0, 0.0, 0.0, 8.0]})
    p = np.array([[0.1, 0.2, 1.0], [0.4, 0.1, 0.0], [0.35, 0.3, 6.0], [0.8, 0.6, 5.0]])
    report = funnel_report(y, p)
    assert list(report.columns) == REPORT_COLUMNS
    assert list(report.index) == ["visit", "buy", "spend"] and report.index.name == "target"
    assert list(report["task"]) == ["stage", "stage", "core"]
    assert (report.dtypes.iloc[1:] == np.float64).all()
    # spend: errors [1, 0, 6, -3] against var(y) = 12; ranked by p the 8.0 comes second (Gini
    # 0.25 of the perfect 0.75); ranks of y [2, 2, 2, 4] and of p [2, 1, 4, 3]
    expected = pd.DataFrame(
        {"AUC": [0.75, 1.0, np.nan],
         "log_loss": [-np.mean(np.log([0.9, 0.6, 0.35, 0.8])), -np.mean(np.log([0.8, 0.9, 0.7, 0.6])), np.nan],
         "NRMSE": [np.nan, np.nan, np.sqrt(11.5 / 12)], "NMAE": [np.nan, np.nan, 10 / 8],
         "Gini": [np.nan, np.nan, 1 / 3], "Spearman": [np.nan, np.nan, 1 / np.sqrt(15)]},
        index=report.index,
    )
    pd.testing.assert_frame_equal(report.drop(columns="task"), expected, rtol=1e-12)


def test_funnel_report_arrays_and_names(funnel):
    Y, truth = funnel
    report = funnel_report(Y.to_numpy(), truth.to_numpy())
    assert list(report.index) == ["stage_1", "stage_2", "core"]
    named = funnel_report(Y.to_numpy(), truth, target_names=["a", "b", "c"])
    assert list(named.index) == ["a", "b", "c"]
    np.testing.assert_array_equal(named.iloc[:, 1:].to_numpy(), report.iloc[:, 1:].to_numpy())
    all_stages = funnel_report(Y.iloc[:, :2], truth.iloc[:, :2], n_stages=2)
    assert list(all_stages["task"]) == ["stage", "stage"]


def test_funnel_report_one_dimensional_is_a_core_target(funnel):
    Y, truth = funnel
    report = funnel_report(Y["core"].to_numpy(), truth["core"].to_numpy())
    assert report.shape == (1, 7)
    assert list(report.index) == ["core"] and report["task"].iloc[0] == "core"


def test_funnel_report_masks_missing_labels_per_column(funnel):
    Y, truth = funnel
    Y = Y.astype(float)
    Y.iloc[:5000, 0] = np.nan  # only stage_1 loses labels
    report = funnel_report(Y, truth)
    assert report.loc["stage_1", "AUC"] == auc(Y["stage_1"][5000:], truth["stage_1"][5000:])
    assert report.loc["stage_2", "AUC"] == auc(Y["stage_2"], truth["stage_2"])


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(y_pred=np.zeros((10, 2))), "y_pred"),
        (dict(n_stages=4), "n_stages"),
        (dict(n_stages=-1), "n_stages"),
        (dict(target_names=["a", "b"]), "target_names"),
        (dict(y_true=np.zeros((10, 3, 1))), "y_true"),
    ],
)
def test_funnel_report_validates_arguments(kwargs, argument):
    arguments = {"y_true": np.zeros((10, 3)), "y_pred": np.zeros((10, 3)), **kwargs}
    with pytest.raises(ValueError, match=argument):
        funnel_report(**arguments)


def test_compare_reports_puts_models_side_by_side():
    from sk_htlnet.metrics import compare_reports

    y = np.array([[0, 0.0], [1, 2.0], [1, 5.0], [0, 0.0], [1, 1.0]])
    a = funnel_report(y, np.array([[0.2, 0.1], [0.7, 2.5], [0.6, 4.0], [0.3, 0.2], [0.9, 1.0]]))
    b = funnel_report(y, np.array([[0.6, 0.1], [0.4, 2.5], [0.7, 4.0], [0.3, 0.2], [0.5, 1.0]]))
    table = compare_reports({"b": b, "a": a})
    assert list(table.columns) == ["b", "a"]  # the order given
    assert table.loc[("stage_1", "AUC"), "a"] == a.loc["stage_1", "AUC"] == 1.0
    assert table.loc[("stage_1", "AUC"), "b"] == b.loc["stage_1", "AUC"]
    assert table.loc[("core", "Gini"), "a"] == a.loc["core", "Gini"]
    assert ("core", "AUC") not in table.index and ("stage_1", "Gini") not in table.index  # not the task's
    assert table.shape == (2 + 4, 2)  # AUC, log_loss for the stage; NRMSE, NMAE, Gini, Spearman for the core
    with pytest.raises(ValueError, match=r"reports\['x'\] is not a funnel_report"):
        compare_reports({"x": a.drop(columns="task")})
    with pytest.raises(ValueError, match="non-empty dict"):
        compare_reports({})


def test_compare_reports_refuses_reports_on_other_targets():
    """Before, reports of arrays (rows stage_1, stage_2, core) and of a DataFrame (card, spends,
    expenditure) were outer-joined into a table half NaN, without a word."""
    from sk_htlnet.metrics import compare_reports

    y = np.array([[0, 1, 0.0], [1, 0, 2.0], [1, 1, 5.0], [0, 0, 0.0], [1, 1, 1.0]])
    frame = pd.DataFrame(y, columns=["card", "spends", "expenditure"])
    arrays, named = funnel_report(y, y), funnel_report(frame, frame)
    with pytest.raises(ValueError, match=(
            r"same targets: reports\['named'\] has \['card', 'spends', 'expenditure'\], reports\['arrays'\] has "
            r"\['stage_1', 'stage_2', 'core'\] \(reports\['named'\] lacks \['stage_1', 'stage_2', 'core'\] and "
            r"has \['card', 'spends', 'expenditure'\] besides\); name the targets alike with .*target_names=")):
        compare_reports({"arrays": arrays, "named": named})
    with pytest.raises(ValueError, match=r"reports\['fewer'\] has \['stage_1', 'stage_2'\].*\(reports\['fewer'\] "
                                         r"lacks \['core'\]\)"):
        compare_reports({"arrays": arrays, "fewer": arrays.iloc[:2]})
    as_core = funnel_report(y, y, n_stages=1, target_names=["stage_1", "stage_2", "core"])
    with pytest.raises(ValueError, match=r"same task per target: reports\['b'\] scores 'stage_2' \(core, not stage\)"):
        compare_reports({"a": arrays, "b": as_core})
    # the same targets in another order, or the same names given: compared, rows in the first report's order
    renamed = funnel_report(y, y, target_names=["card", "spends", "expenditure"])
    table = compare_reports({"named": named, "renamed": renamed, "reordered": named.iloc[[2, 0, 1]]})
    assert list(table.index.get_level_values("target").unique()) == ["card", "spends", "expenditure"]
    assert table.notna().all().all() and table.shape == (8, 3)
