"""sk_htlnet.metrics.calibration_table: mean predicted against mean observed per quantile bin."""

import numpy as np
import pandas as pd
import pytest

from sk_htlnet.metrics import calibration_table
from sk_htlnet.metrics.calibration import CALIBRATION_COLUMNS


def _data(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    return (rng.random(n) < p).astype(float), p


def test_deciles_of_distinct_predictions_match_qcut():
    y, p = _data()
    table = calibration_table(y, p)
    assert list(table.columns) == CALIBRATION_COLUMNS
    assert table.index.name == "bin" and list(table.index) == list(range(1, 11))
    assert table.index.dtype == np.int64 and table["n_rows"].dtype == np.int64
    assert (table.drop(columns="n_rows").dtypes == np.float64).all()
    assert (table["n_rows"] == 100).all() and (table["weight"] == 100.0).all()
    codes = pd.qcut(p, 10, labels=False)
    expected = pd.DataFrame({"p": p, "y": y}).groupby(codes).agg(["mean", "min", "max"])
    np.testing.assert_allclose(table["mean_predicted"], expected[("p", "mean")], rtol=1e-12)
    np.testing.assert_allclose(table["mean_observed"], expected[("y", "mean")], rtol=1e-12)
    np.testing.assert_array_equal(table["pred_min"], expected[("p", "min")])
    np.testing.assert_array_equal(table["pred_max"], expected[("p", "max")])
    # bins are in increasing order of prediction and do not overlap
    assert (table["pred_min"].to_numpy()[1:] > table["pred_max"].to_numpy()[:-1]).all()


def test_uneven_size_and_row_order():
    y, p = _data(n=1003)
    table = calibration_table(y, p, n_bins=7)
    assert table["n_rows"].sum() == 1003 and table["n_rows"].max() - table["n_rows"].min() <= 1
    order = np.random.default_rng(1).permutation(y.size)
    pd.testing.assert_frame_equal(calibration_table(y[order], p[order], n_bins=7), table)


def test_ties_share_a_bin_and_merge_bins():
    y = np.arange(10, dtype=float)
    assert list(calibration_table(y, np.full(10, 3.0))["n_rows"]) == [10]  # constant: one bin
    p = np.r_[np.zeros(6), np.ones(4)]  # a tie across five of the ten decile edges
    table = calibration_table(y, p)
    assert list(table.index) == [1, 2] and list(table["n_rows"]) == [6, 4]
    assert list(table["mean_observed"]) == [2.5, 7.5]
    assert list(table["pred_min"]) == list(table["pred_max"]) == [0.0, 1.0]
    assert list(calibration_table(y[:3], p[-3:] + np.arange(3))["n_rows"]) == [1, 1, 1]  # 3 rows


def test_missing_labels_and_weights():
    y, p = _data(n=200)
    y_missing = y.copy()
    y_missing[::4] = np.nan
    keep = ~np.isnan(y_missing)
    pd.testing.assert_frame_equal(calibration_table(y_missing, p), calibration_table(y[keep], p[keep]))
    pd.testing.assert_frame_equal(calibration_table(y, p, sample_weight=np.ones(200)), calibration_table(y, p))
    w = np.random.default_rng(2).integers(0, 4, size=200)
    weighted = calibration_table(y, p, n_bins=5, sample_weight=w)
    repeated = calibration_table(np.repeat(y, w), np.repeat(p, w), n_bins=5)
    assert (weighted["n_rows"] == [int(((p >= lo) & (p <= hi) & (w > 0)).sum())
                                   for lo, hi in zip(weighted["pred_min"], weighted["pred_max"])]).all()
    pd.testing.assert_frame_equal(weighted.drop(columns="n_rows"), repeated.drop(columns="n_rows"))
    np.testing.assert_allclose((weighted["weight"] * weighted["mean_observed"]).sum(), (w * y).sum())


def test_pandas_input_and_continuous_target():
    spend = pd.Series([0.0, 0.0, 10.0, 0.0, 30.0, 20.0])
    pred = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    table = calibration_table(spend, pred, n_bins=3)
    assert list(table["mean_predicted"]) == [1.5, 3.5, 5.5]
    assert list(table["mean_observed"]) == [0.0, 5.0, 25.0]


@pytest.mark.parametrize("n_bins", [0, -1, 2.5, True, "10", None])
def test_bad_n_bins(n_bins):
    y, p = _data(n=20)
    with pytest.raises(ValueError, match="n_bins must be an integer of at least 1"):
        calibration_table(y, p, n_bins=n_bins)


def test_bad_inputs():
    y, p = _data(n=20)
    with pytest.raises(ValueError, match="same length"):
        calibration_table(y, p[:-1])
    with pytest.raises(ValueError, match="finite"):
        calibration_table(y, np.r_[p[:-1], np.inf])
    with pytest.raises(ValueError, match="at least one labelled row"):
        calibration_table(np.full(20, np.nan), p)
    with pytest.raises(ValueError, match="at least one labelled row"):
        calibration_table(y, p, sample_weight=np.zeros(20))
    with pytest.raises(ValueError, match="sample_weight"):
        calibration_table(y, p, sample_weight=-np.ones(20))
    with pytest.raises(ValueError, match="1-D"):
        calibration_table(np.c_[y, y], np.c_[p, p])
