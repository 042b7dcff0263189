"""Issue 14, classes 4-7: inputs just beside the happy path.

Raw-scale core targets (target_transform="none"), column labels of any hashable type matched by
name, values near the float64 limit, and parameter values that used to be accepted silently.
Every test goes through the public surface (fit, predict, the error message)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from _sizes import SMALL_NET
from sk_htlnet import HTLNetRegressor
from sk_htlnet.datasets import make_funnel
from sk_htlnet.metrics import normalized_gini

FAST = dict(**SMALL_NET, max_iter=2, random_state=0)


@pytest.fixture(scope="module")
def small():
    return make_funnel(600, n_stages=1, n_categorical=1, n_numeric=2, signal=2.0, random_state=0)


# ---- class 4: raw-scale targets --------------------------------------------------------------------
@pytest.fixture(scope="module")
def scaled_funnel():
    return make_funnel(4000, n_stages=1, n_categorical=2, n_numeric=2, signal=1.5, stage_rates=0.5,
                       random_state=3)


@pytest.mark.parametrize("scale", [1e8, 1e12, 1e40])
def test_raw_squared_error_trains_at_any_scale_of_the_core(scaled_funnel, scale):
    """The paper's raw MSE (target_transform="none") on amounts around 1e8 and far beyond: the
    core prediction ranks customers as at scale 1 (it used to be one constant), the stages still
    learn, and the history holds the squared error in the target's units."""
    X, Y = scaled_funnel
    Y = Y.assign(core=Y["core"] * scale)
    est = HTLNetRegressor(**{**SMALL_NET, "max_iter": 8, "learning_rate": 3e-3}, random_state=0,
                          target_transform="none").fit(X.iloc[:3000], Y.iloc[:3000])
    pred = est.predict(X.iloc[3000:])
    y = Y.iloc[3000:]
    assert np.unique(pred[:, 1]).size > 100
    assert normalized_gini(y["core"], pred[:, 1]) > 0.5
    assert roc_auc_score(y["stage_1"], pred[:, 0]) > 0.65
    # the history's core loss is a squared error in the core's units: of the order of its variance
    ratio = est.history_[-1, "train_loss_core"] / Y["core"].iloc[:3000].var()
    assert 0.05 < ratio < 2


def test_raw_scale_limit_is_a_clear_error(scaled_funnel):
    X, Y = scaled_funnel
    with pytest.raises(ValueError, match="target_transform='none'.*standard deviation"):
        HTLNetRegressor(**FAST, target_transform="none").fit(X, Y.assign(core=Y["core"] * 1e200))


# ---- class 5: columns matched by name ------------------------------------------------------------
@pytest.mark.parametrize("labels", [
    [10, 20, 30],
    pd.MultiIndex.from_tuples([("a", 1), ("b", 2), ("c", 3)]),
    ["a", 5, ("t", 1)],
], ids=["int", "multiindex", "mixed"])
def test_column_labels_of_any_type_are_matched_by_name(small, labels):
    X, Y = small
    X = X.set_axis(labels, axis=1)
    est = HTLNetRegressor(**FAST).fit(X, Y)
    np.testing.assert_array_equal(est.predict(X), est.predict(X.copy()))
    with pytest.raises(ValueError, match="another order"):
        est.predict(X[X.columns[::-1]])
    renamed = X.set_axis(list(X.columns[:-1]) + ["other"], axis=1)
    with pytest.raises(ValueError, match=r"unseen at fit time \['other'\]"):
        est.predict(renamed)


def test_categorical_features_accepts_labels_of_any_type(small):
    X, Y = small
    X = X.assign(cat_0=X["cat_0"].astype(int)).set_axis([7, 8, 9], axis=1)  # codes as plain ints
    as_category = HTLNetRegressor(**FAST, categorical_features=[7]).fit(X, Y)
    as_number = HTLNetRegressor(**FAST).fit(X, Y)
    assert not np.allclose(as_category.predict(X), as_number.predict(X))


def test_duplicated_target_names_are_refused(small):
    X, Y = small
    dup = pd.concat([Y.iloc[:, :1], Y], axis=1)
    with pytest.raises(ValueError, match=r"y has duplicate column names \['stage_1'\]"):
        HTLNetRegressor(**FAST).fit(X, dup)


# ---- class 6: overflow -----------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["linear", "piecewise_linear", "quantile", "periodic"])
@pytest.mark.parametrize("magnitude", [1e300, 1.7e308])
def test_features_near_the_float64_limit_keep_their_information(small, encoding, magnitude):
    """A column of values near 1e300 used to encode to zero (its variance overflowed), and one of
    1.7e308 ended in a divergence: now it is standardised like any other and still informs."""
    X, Y = small
    big = X.assign(num_0=X["num_0"] / X["num_0"].abs().max() * magnitude)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow anywhere
        est = HTLNetRegressor(**FAST, numeric_encoding=encoding).fit(big, Y)
        pred = est.predict(big)
    same = HTLNetRegressor(**FAST, numeric_encoding=encoding).fit(X, Y).predict(X)
    np.testing.assert_allclose(pred, same, rtol=1e-3, atol=1e-4)  # the unit does not matter


def test_huge_sample_weights_are_taken_relative(small):
    X, Y = small
    w = np.ones(len(X))
    w[:10] = 1e39  # used to overflow the float32 batches: "lower learning_rate"
    HTLNetRegressor(**FAST).fit(X, Y, sample_weight=w)
    plain = HTLNetRegressor(**FAST).fit(X, Y).predict(X)
    uniform = HTLNetRegressor(**FAST).fit(X, Y, sample_weight=np.full(len(X), 1e300)).predict(X)
    np.testing.assert_allclose(uniform, plain, rtol=1e-5, atol=1e-6)


# ---- class 7: accepted oddities --------------------------------------------------------------------
def test_unhashable_category_values_get_a_clear_error(small):
    X, Y = small
    bad = X.assign(cat_0=[{"id": i % 3} for i in range(len(X))])
    with pytest.raises(ValueError, match="categorical column 'cat_0' holds unhashable values \\(dict\\)"):
        HTLNetRegressor(**FAST).fit(bad, Y)
    est = HTLNetRegressor(**FAST).fit(X, Y)
    with pytest.raises(ValueError, match="'cat_0' holds unhashable values \\(list\\)"):
        est.predict(X.assign(cat_0=[[1]] * len(X)))


@pytest.mark.parametrize("param", ["batch_size", "max_iter", "embedding_dim", "learning_rate", "n_threads"])
def test_bools_are_not_numbers(small, param):
    X, Y = small
    with pytest.raises(ValueError, match=f"{param} must be a number, got True"):
        HTLNetRegressor(**{**FAST, param: True}).fit(X, Y)


@pytest.mark.parametrize("key, owner", [
    ("max_epochs", "max_iter"), ("lr", "learning_rate"), ("module__n_stages", "architecture"),
    ("criterion__core_loss", "loss"), ("train_split", "validation_fraction"),
])
def test_net_kwargs_cannot_override_the_estimators_own_settings(small, key, owner):
    X, Y = small
    with pytest.raises(ValueError, match=f"net_kwargs sets '{key}'.*{owner}"):
        HTLNetRegressor(**FAST, net_kwargs={key: 0}).fit(X, Y)


@pytest.mark.parametrize("fraction", [0.999, 0.9999])
def test_a_validation_fraction_leaving_no_training_rows_is_named(small, fraction):
    X, Y = small
    with pytest.raises(ValueError, match=f"validation_fraction={fraction} holds out"):
        HTLNetRegressor(**FAST, early_stopping=True, validation_fraction=fraction).fit(X, Y)


def test_a_validation_fraction_leaving_few_training_rows_still_splits(small):
    """Two training rows and three funnel depths: no stratified split is possible, a plain one is."""
    X, Y = make_funnel(600, n_stages=2, n_categorical=1, n_numeric=2, stage_rates=0.5, random_state=0)
    HTLNetRegressor(**FAST, early_stopping=True, validation_fraction=0.996).fit(X, Y)


@pytest.mark.parametrize("param, value", [
    ("tower_units", (True, 8)), ("task_weights", [True, 1.0]), ("stage_pos_weight", [np.True_]),
    ("random_state", True),
])
def test_bools_in_numeric_sequences_are_refused(small, param, value):
    X, Y = small
    with pytest.raises(ValueError, match=f"{param} must"):
        HTLNetRegressor(**{**FAST, param: value}).fit(X, Y)


@pytest.mark.parametrize("key", ["optimizer__lr", "callbacks__divergence_monitor", "callbacks__train_loss_core",
                                 "callbacks__early_stopping__patience", "iterator_train__batch_size"])
def test_net_kwargs_cannot_reach_the_estimators_callbacks_and_iterators(small, key):
    X, Y = small
    with pytest.raises(ValueError, match=f"net_kwargs sets '{key}'"):
        HTLNetRegressor(**FAST, net_kwargs={key: None}).fit(X, Y)


def test_display_settings_remain_open_to_net_kwargs(small):
    X, Y = small
    HTLNetRegressor(**FAST, net_kwargs={"callbacks__print_log__floatfmt": ".2f", "optimizer__betas": (0.8, 0.9)}).fit(X, Y)


@pytest.mark.parametrize("scale", [1e160, 1e300])
def test_standardized_core_near_the_float64_limit(small, scale):
    """The remedy the raw-scale refusal names: a standardised core of any magnitude trains as at scale 1
    (its standard deviation used to overflow to inf and predict garbage)."""
    X, Y = small
    params = dict(FAST, core_loss="mse", target_transform="standardize")
    base = HTLNetRegressor(**params).fit(X, Y).predict(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        big = HTLNetRegressor(**params).fit(X, Y.assign(core=Y["core"] * scale)).predict(X)
    np.testing.assert_allclose(big[:, -1] / scale, base[:, -1], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(big[:, :-1], base[:, :-1])


def test_dropout_fits_are_reproducible_and_leave_the_global_seed_alone(small):
    """random_state promises bit-identical fits on CPU; nn.Dropout drew from torch's global
    generator, so two seeded fits with dropout differed (found recording tests/golden)."""
    import torch

    X, Y = small
    first = HTLNetRegressor(**FAST, dropout=0.3).fit(X, Y).predict(X)
    torch.rand(100)  # the caller's own use of the global generator must not matter
    state = torch.get_rng_state()
    second = HTLNetRegressor(**FAST, dropout=0.3).fit(X, Y).predict(X)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(first, second)


def test_a_nan_column_label_survives_a_model_file(small, tmp_path):
    from sk_htlnet.io import load_model, save_model

    X, Y = small
    X = X.set_axis(["cat_0", np.nan, "num_1"], axis=1)
    est = HTLNetRegressor(**FAST).fit(X, Y)
    save_model(est, tmp_path / "m.htlnet")
    np.testing.assert_array_equal(load_model(tmp_path / "m.htlnet").predict(X), est.predict(X))


@pytest.mark.parametrize("param", ["learning_rate", "clip_ratio", "tau"])
def test_real_parameters_beyond_float32_are_named(small, param):
    X, Y = small
    with pytest.raises(ValueError, match=f"{param}=1e\\+300 does not fit the network's float32"):
        HTLNetRegressor(**{**FAST, param: 1e300}).fit(X, Y)


# ---- y at make_dataset and score, model files of other objects, net_kwargs (a new user's findings)
@pytest.fixture(scope="module")
def fitted_small():
    X, Y = make_funnel(300, random_state=0)
    return HTLNetRegressor(**SMALL_NET, max_iter=2, random_state=0).fit(X, Y), X, Y


def test_make_dataset_checks_y_as_fit_does(fitted_small):
    est, X, Y = fitted_small
    assert est.make_dataset(X, [Y[c] for c in Y.columns]).y.shape == (len(X), 3)  # columns, as fit takes
    bad = {
        "extra column": (Y.assign(extra=1.0), r"4 column\(s\), but the model was fitted on 3"),
        "columns reordered": (Y[Y.columns[::-1]], r"y has targets \['core', 'stage_2', 'stage_1'\]"),
        "a stage of 2": (Y.assign(stage_1=2.0), r"stage column 'stage_1' must hold 0, 1 or NaN"),
        "a 1-D y": (Y["core"], r"1 column\(s\), but the model was fitted on 3"),
        "an infinite core": (Y.assign(core=np.inf), r"contains infinite values"),
    }
    for what, (y, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            est.make_dataset(X, y)  # before: accepted (reordered: the core read as a stage) or IndexError
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        est.make_dataset(X, Y, sample_weight=-np.ones(len(X)))


def test_score_names_a_column_without_labels_and_reads_y_as_fit_does(fitted_small):
    est, X, Y = fitted_small
    with pytest.raises(ValueError, match=r"'stage_1' has no observed label"):
        est.score(X, Y.assign(stage_1=np.nan))  # before: scikit-learn's "Found array with 0 sample(s)"
    assert est.score(X, [Y[c] for c in Y.columns]) == est.score(X, Y)  # before: -9.6 against -0.003


def test_save_model_refuses_other_objects_by_name(fitted_small, tmp_path):
    from sklearn.pipeline import Pipeline

    from sk_htlnet.io import save_model

    from sklearn.preprocessing import StandardScaler

    est, X, Y = fitted_small
    with pytest.raises(TypeError, match=r"saves a fitted HTLNetRegressor or a fitted Pipeline whose final step is one, got StandardScaler"):
        save_model(StandardScaler().fit(X.select_dtypes("number")), tmp_path / "s.htlnet")
    assert not (tmp_path / "s.htlnet").exists()
    pipe = Pipeline([("htlnet", est), ("scaler", StandardScaler())])  # HTLNet not the final step
    with pytest.raises(TypeError, match=r"final step"):
        save_model(pipe, tmp_path / "p.htlnet")
    assert not (tmp_path / "p.htlnet").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer__foo": 1}, r"the optimiser \(torch.optim.Adam\) has no option 'foo'"),
    ({"foo": 1}, r"net_kwargs sets \['foo'\], which the skorch net"),
])
def test_net_kwargs_mistakes_are_named(kwargs, message):
    X, Y = make_funnel(100, random_state=0)
    with pytest.raises(ValueError, match=message) as info:
        HTLNetRegressor(**SMALL_NET, max_iter=1, net_kwargs=kwargs).fit(X, Y)
    assert len(str(info.value)) < 400  # before: a raw TypeError, or 2,572 characters of the net's settings


def test_arrays_with_strings_and_series_say_what_to_pass():
    # a new user's findings: numpy's "could not convert string to float" with no word on what to do
    from sk_htlnet.datasets import load_hillstrom

    X, Y = load_hillstrom()
    X, Y = X.iloc[:400], Y.iloc[:400]
    est = HTLNetRegressor(**SMALL_NET, max_iter=1, random_state=0).fit(X, Y)
    with pytest.raises(ValueError, match=r"fitted on a DataFrame with columns \['recency', .*pass X as a DataFrame"):
        est.predict(X.to_numpy())
    with pytest.raises(ValueError, match=r"fitted on a DataFrame with columns \['recency', .*pass X as a DataFrame"):
        est.predict(X.to_numpy().tolist())  # a list of rows: scikit-learn's own message before
    with pytest.raises(ValueError, match=r"X is a pandas Series.*X.iloc\[\[i\]\]"):
        est.predict(X.iloc[0])
    with pytest.raises(ValueError, match=r"non-numeric values in an array .*categorical_features"):
        HTLNetRegressor(**SMALL_NET, max_iter=1).fit(X.to_numpy(), Y)
    assert est.predict(X.iloc[[0]]).shape == (1, 3)


def test_an_all_binary_y_warns_that_its_last_column_is_the_core():
    X, Y = make_funnel(200, random_state=0)
    stages = Y[["stage_1", "stage_2"]]
    with pytest.warns(UserWarning, match=r"the core target 'stage_2' \(y's last column\) holds only 0 and 1"):
        HTLNetRegressor(**SMALL_NET, max_iter=1, random_state=0).fit(X, stages)
    for single in (Y["stage_1"], Y[["stage_1"]]):  # one 0/1 column: as 1-D y and as a frame (found by a new user)
        with pytest.warns(UserWarning, match=r"the core target '(core|stage_1)' \(y's only target\) holds only 0 and 1"):
            HTLNetRegressor(**SMALL_NET, max_iter=1, core_loss="mse", random_state=0).fit(X, single)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a continuous core does not warn
        HTLNetRegressor(**SMALL_NET, max_iter=1, random_state=0).fit(X, Y)


def test_sparse_x_says_what_to_pass_in_this_packages_terms(fitted_small):
    """A new user's finding: a ColumnTransformer with a OneHotEncoder (sparse output by default)
    before the estimator met scikit-learn's generic "Sparse data was passed ... Use '.toarray()'"."""
    import scipy.sparse
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    est, X, Y = fitted_small
    message = (r"X is a scipy sparse (csr_matrix|csr_array) of shape \(300, \d+\), and HTLNetRegressor takes dense X: "
               r"pass a DataFrame with categorical columns \(the estimator embeds them itself, no one-hot encoding "
               r"needed\), or, after a OneHotEncoder, set sparse_output=False in the encoder or sparse_threshold=0")
    numeric = X.select_dtypes("number").to_numpy()
    for sparse in (scipy.sparse.csr_matrix(numeric), scipy.sparse.csr_array(numeric)):
        with pytest.raises(TypeError, match=message):  # a TypeError, as scikit-learn's own
            HTLNetRegressor(**SMALL_NET, max_iter=1).fit(sparse, Y)
    with pytest.raises(TypeError, match=message):
        est.predict(scipy.sparse.csr_matrix(X.select_dtypes("number").to_numpy()))
    categorical = list(X.select_dtypes(exclude="number").columns)
    one_hot = ColumnTransformer([("onehot", OneHotEncoder(), categorical)], remainder="passthrough")
    with pytest.raises(TypeError, match=message):
        Pipeline([("columns", one_hot), ("htlnet", HTLNetRegressor(**SMALL_NET, max_iter=1))]).fit(X, Y)
    dense = one_hot.set_params(sparse_threshold=0)  # the way out the message names
    Pipeline([("columns", dense), ("htlnet", HTLNetRegressor(**SMALL_NET, max_iter=1))]).fit(X, Y)
