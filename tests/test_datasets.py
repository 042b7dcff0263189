"""Tests for sk_htlnet.datasets: the bundled Hillstrom funnel and the synthetic generator."""

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from sk_htlnet.datasets import load_hillstrom, make_funnel

HILLSTROM_FEATURES = [
    "recency", "history_segment", "history", "mens", "womens",
    "zip_code", "newbie", "channel", "segment",
]  # fmt: skip
HILLSTROM_CATEGORICAL = ["history_segment", "zip_code", "channel", "segment"]


@pytest.fixture(scope="module")
def hillstrom():
    return load_hillstrom()


@pytest.fixture(scope="module")
def funnel():
    """A large default funnel, with its truth, shared by the statistical tests."""
    return make_funnel(200_000, missing_rate=0.2, random_state=0, return_truth=True)


def mean_residual_z(observed, expected):
    """z-score of mean(observed - expected), whose expectation is exactly 0.

    Given x, each row's residual has mean 0 (``expected`` is E[observed | x]) and the
    rows are independent, so by the central limit theorem the mean residual is
    normal with standard error std(residual) / sqrt(n). |z| < 4 fails by chance with
    probability 6e-5, while a wrong truth (e.g. a wrong intercept or a missing
    exp(sigma**2 / 2) factor) moves the mean by far more than 4 standard errors at
    n = 200,000.
    """
    residual = np.asarray(observed, dtype=float) - np.asarray(expected, dtype=float)
    return residual.mean() / (residual.std() / np.sqrt(residual.size))


# Hillstrom -------------------------------------------------------------------


def test_hillstrom_shapes_columns_and_dtypes(hillstrom):
    X, Y = hillstrom
    assert X.shape == (64000, 9)
    assert Y.shape == (64000, 3)
    assert list(X.columns) == HILLSTROM_FEATURES
    assert list(Y.columns) == ["visit", "conversion", "spend"]
    for name in HILLSTROM_CATEGORICAL:
        assert isinstance(X[name].dtype, pd.CategoricalDtype), name
    for name in ["recency", "mens", "womens", "newbie"]:
        assert X[name].dtype == np.int64, name
    assert X["history"].dtype == np.float64
    assert list(Y.dtypes) == [np.int64, np.int64, np.float64]
    assert not X.isna().any().any() and not Y.isna().any().any()
    assert set(X["zip_code"].cat.categories) == {"Rural", "Surburban", "Urban"}


def test_hillstrom_published_funnel_statistics(hillstrom):
    _, Y = hillstrom
    assert Y.mean().round(6).to_dict() == {
        "visit": 0.146781,
        "conversion": 0.009031,
        "spend": 1.050908,
    }
    assert ((Y["spend"] > 0) == (Y["conversion"] == 1)).all()
    assert (Y["conversion"] <= Y["visit"]).all()
    assert Y["conversion"].sum() == 578


def test_hillstrom_bunch():
    bunch = load_hillstrom(return_X_y=False)
    X, Y = load_hillstrom()
    assert_frame_equal(bunch.data, X)
    assert_frame_equal(bunch.target, Y)
    assert bunch.frame.shape == (64000, 12)
    assert bunch.feature_names == HILLSTROM_FEATURES
    assert bunch.target_names == ["visit", "conversion", "spend"]
    assert "Hillstrom" in bunch.DESCR


# make_funnel: structure ----------------------------------------------------------


def test_make_funnel_columns_and_dtypes():
    X, Y, truth = make_funnel(500, cardinality=[3, 50, 7, 20], random_state=0, return_truth=True)
    assert list(X.columns) == [f"cat_{i}" for i in range(4)] + [f"num_{j}" for j in range(4)]
    for name, k in zip(X.columns[:4], [3, 50, 7, 20]):
        assert X[name].dtype == pd.CategoricalDtype(pd.RangeIndex(k)), name
    assert (X.dtypes.iloc[4:] == np.float64).all()
    assert list(Y.columns) == ["stage_1", "stage_2", "core"]
    assert list(Y.dtypes) == [np.int64, np.int64, np.float64]
    assert list(truth.columns) == list(Y.columns)
    assert (truth.dtypes == np.float64).all()
    assert Y.index.equals(X.index) and truth.index.equals(X.index)


def test_make_funnel_is_deterministic():
    first = make_funnel(3000, missing_rate=0.1, random_state=42, return_truth=True)
    second = make_funnel(3000, missing_rate=0.1, random_state=42, return_truth=True)
    for a, b in zip(first, second):
        assert_frame_equal(a, b)
    other = make_funnel(3000, missing_rate=0.1, random_state=43)
    assert not first[0].equals(other[0])


def test_make_funnel_deterministic_across_chunks():
    """More rows than one generation chunk still reproduce exactly."""
    kwargs = dict(n_categorical=1, n_numeric=1, random_state=5, return_truth=True)
    first = make_funnel(300_000, **kwargs)
    second = make_funnel(300_000, **kwargs)
    for a, b in zip(first, second):
        assert_frame_equal(a, b)


@pytest.mark.parametrize("n_stages", [1, 2, 3])
def test_make_funnel_stages_are_nested_and_core_needs_last_stage(n_stages):
    _, Y, truth = make_funnel(5000, n_stages=n_stages, random_state=1, return_truth=True)
    stages = Y.iloc[:, :n_stages].to_numpy()
    assert set(np.unique(stages)) <= {0, 1}
    assert (np.diff(stages, axis=1) <= 0).all()
    assert ((Y["core"] > 0) == (Y.iloc[:, n_stages - 1] == 1)).all()
    assert (Y["core"] >= 0).all()
    assert (np.diff(truth.iloc[:, :n_stages].to_numpy(), axis=1) <= 0).all()


def test_make_funnel_without_stages():
    X, Y, truth = make_funnel(2000, n_stages=0, random_state=2, return_truth=True)
    assert list(Y.columns) == list(truth.columns) == ["core"]
    assert (Y["core"] > 0).all()
    assert abs(mean_residual_z(Y["core"], truth["core"])) < 4


def test_make_funnel_large_cardinality_keeps_identity():
    X, _ = make_funnel(
        20_000, n_categorical=2, n_numeric=1, cardinality=[10**6, 3], random_state=3
    )
    cat = X["cat_0"]
    assert cat.cat.categories.equals(pd.RangeIndex(10**6))
    assert (cat.cat.codes.to_numpy() == cat.astype(np.int64).to_numpy()).all()
    assert cat.nunique() > 2000  # a long tail of rare levels
    assert cat.value_counts().idxmax() == 0  # Zipf-like: level 0 is the most frequent
    assert make_funnel(10, n_categorical=1, cardinality=1e6, random_state=0)[0].shape == (10, 5)


def test_make_funnel_missing_values():
    X, _, truth = make_funnel(20_000, missing_rate=0.3, random_state=4, return_truth=True)
    numeric = X.filter(like="num_")
    assert abs(numeric.isna().to_numpy().mean() - 0.3) < 0.01
    assert not X.filter(like="cat_").isna().any().any()
    assert np.isfinite(truth.to_numpy()).all()


def test_make_funnel_signal_zero_makes_targets_independent_of_x():
    _, _, truth = make_funnel(1000, signal=0.0, random_state=0, return_truth=True)
    assert (truth.nunique() == 1).all()
    _, _, truth = make_funnel(1000, signal=1.0, random_state=0, return_truth=True)
    assert (truth.nunique() > 100).all()


@pytest.mark.parametrize(
    "random_state", [np.random.default_rng(0), np.random.RandomState(0), None]
)
def test_make_funnel_accepts_random_state_objects(random_state):
    X, Y = make_funnel(50, random_state=random_state)
    assert X.shape == (50, 8) and Y.shape == (50, 3)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(n_samples=0), "n_samples"),
        (dict(n_samples=2.5), "n_samples"),
        (dict(n_stages=-1), "n_stages"),
        (dict(n_stages=True), "n_stages"),
        (dict(n_categorical=-1), "n_categorical"),
        (dict(n_numeric="4"), "n_numeric"),
        (dict(n_categorical=0, n_numeric=0), "n_categorical"),
        (dict(cardinality=0), "cardinality"),
        (dict(cardinality=[5, 5]), "cardinality"),
        (dict(signal=-0.1), "signal"),
        (dict(stage_rates=1.0), "stage_rates"),
        (dict(stage_rates=[0.3]), "stage_rates"),
        (dict(missing_rate=1.0), "missing_rate"),
        (dict(random_state="seed"), "random_state"),
    ],
)
def test_make_funnel_validates_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        make_funnel(**{"n_samples": 10, **kwargs})


# make_funnel: the truth is exact ------------------------------------------------------


@pytest.mark.parametrize("column", ["stage_1", "stage_2", "core"])
def test_make_funnel_truth_matches_empirical_means(funnel, column):
    _, Y, truth = funnel
    assert abs(mean_residual_z(Y[column], truth[column])) < 4


@pytest.mark.parametrize("column", ["stage_1", "stage_2", "core"])
def test_make_funnel_truth_is_calibrated_conditionally(funnel, column):
    """Not only on average: within each quintile of the truth the labels match it.

    A truth that ignored part of x (e.g. mishandled missing values) could still be
    right on average, but not within bins that sort rows by it. Each of the 5 bins
    holds 40,000 rows, and the same 4-standard-error bound as above applies per bin.
    """
    _, Y, truth = funnel
    bins = pd.qcut(truth[column].rank(method="first"), 5, labels=False)
    for b in range(5):
        rows = (bins == b).to_numpy()
        assert abs(mean_residual_z(Y[column][rows], truth[column][rows])) < 4, b


def test_make_funnel_stage_rates_set_conditional_rates():
    """Conditional rates P(stage_t = 1 | stage_{t-1} = 1) match stage_rates.

    The intercepts are calibrated on a 32,768-row pilot of expected probabilities,
    whose error is at most 0.002 (measured on 10**6 rows, 5 seeds). This sample adds
    binomial noise, largest for stage 3 (rate 0.4, reached by about 10,000 rows):
    sqrt(0.24 / 10,000) = 0.005. A tolerance of 0.02 is about 4 standard errors.
    """
    rates = [0.5, 0.2, 0.4]
    _, Y = make_funnel(100_000, n_stages=3, stage_rates=rates, random_state=6)
    reached = np.ones(len(Y), dtype=bool)
    for t, rate in enumerate(rates):
        stage = Y[f"stage_{t + 1}"].to_numpy()
        assert abs(stage[reached].mean() - rate) < 0.02, t
        reached = stage == 1
