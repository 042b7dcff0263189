"""Messy real-world input: clear errors, missing labels, rare stages, categories, scale, divergence,
interruption and the safe model file (issue: fail clearly, train stably); checkpoints are in
test_checkpoint.py."""

import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from skorch.callbacks import Callback

from sk_htlnet import HTLNetRegressor, TrainingDivergedError
from sk_htlnet.datasets import load_hillstrom, make_funnel
from sk_htlnet.io import ModelFileError, load_model, save_model
from sk_htlnet.metrics import normalized_gini
from sk_htlnet.preprocessing import MISSING_ID, OOV_ID, FeatureEncoder

from _sizes import SMALL_NET

FAST = dict(SMALL_NET, max_iter=2, random_state=0, n_threads=1)


@pytest.fixture(scope="module")
def funnel():
    return make_funnel(1500, n_stages=2, n_categorical=2, n_numeric=3, stage_rates=0.5, random_state=0)


@pytest.fixture(scope="module")
def fitted(funnel):
    X, Y = funnel
    return HTLNetRegressor(**FAST).fit(X, Y)


# ---- validation with clear errors -------------------------------------------------------------------
@pytest.mark.parametrize("mutate, match", [
    (lambda X, Y: (X, Y.iloc[:-1]), "different numbers of rows: 1500 and 1499"),
    (lambda X, Y: (X, Y.assign(stage_1=Y["stage_1"] * 2)), "stage column 'stage_1' must hold 0, 1 or NaN"),
    (lambda X, Y: (X, Y.assign(stage_2=0)), "stage column 'stage_2' has a single class"),
    (lambda X, Y: (X, Y.assign(core=np.where(np.arange(len(Y)) == 3, np.inf, Y["core"]))),
     "core target column 'core' contains infinite values"),
    (lambda X, Y: (X.iloc[:0], Y.iloc[:0]), "0 sample"),
    (lambda X, Y: (X.iloc[:, :0], Y), "0 feature"),
    (lambda X, Y: (X.assign(num_0=np.where(np.arange(len(X)) == 0, np.inf, X["num_0"])), Y),
     r"numeric column\(s\) \['num_0'\] contain infinite values"),
    (lambda X, Y: (X, Y.assign(core="a")), r"y column 'core' \(the core target\) must hold numeric values"),
    (lambda X, Y: (X, Y.assign(stage_1=np.where(Y["stage_1"] == 1, "yes", "no"))),
     r"y column 'stage_1' \(a stage\) must hold numeric values"),
    (lambda X, Y: (X, None), "requires y to be passed"),
])
def test_bad_fit_input_gets_a_clear_error(funnel, mutate, match):
    X, Y = mutate(*funnel)
    with pytest.raises(ValueError, match=match):
        HTLNetRegressor(**FAST).fit(X, Y)


@pytest.mark.parametrize("mutate, match", [
    (lambda X: X.drop(columns="num_1"), "num_1"),
    (lambda X: X.rename(columns={"cat_0": "segment"}), "segment"),
    (lambda X: X[list(X.columns[::-1])], "same order"),
    (lambda X: X.to_numpy()[:, :3], "3 features"),
])
def test_wrong_columns_at_predict_are_named(funnel, fitted, mutate, match):
    X, _ = funnel
    with pytest.raises(ValueError, match=match):
        fitted.predict(mutate(X))


@pytest.mark.parametrize("params, name", [
    ({"learning_rate": -1.0}, "learning_rate"), ({"tower_units": ()}, "tower_units"),
    ({"relax_factor": 2.0}, "relax_factor"), ({"target_transform": "foo"}, "target_transform"),
    ({"clip_ratio": 0.5}, "clip_ratio"), ({"task_weights": [1, 1]}, "task_weights"),
    ({"stage_pos_weight": [1.0, -2.0]}, "stage_pos_weight"), ({"batch_size": 0}, "batch_size"),
])
def test_invalid_hyper_parameters_name_the_parameter(funnel, params, name):
    X, Y = funnel
    with pytest.raises(ValueError, match=name):
        HTLNetRegressor(**{**FAST, **params}).fit(X, Y)


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        HTLNetRegressor().predict(np.zeros((2, 2)))


def test_missing_numeric_values_are_supported_like_histgradientboosting(funnel):
    X, Y = funnel
    X = X.copy()
    X.loc[X.index % 5 == 0, "num_0"] = np.nan
    X["num_all_missing"] = np.nan
    est = HTLNetRegressor(**FAST).fit(X, Y)
    enc = est.feature_encoder_.transform(X)
    assert enc["num_missing"][:, 0].sum() == (X.index % 5 == 0).sum()
    # a missing value is embedded by its own learned vector, not imputed to a number
    assert not np.array_equal(est.predict(X.iloc[:5]), est.predict(X.iloc[:5].assign(num_0=0.0)))


# ---- missing labels --------------------------------------------------------------------------------
def test_core_policy_for_rows_that_did_not_pass_the_upstream_stage(funnel):
    """Entire space: a row whose last stage is 0 keeps its observed core value (0: no spend without a
    conversion) and teaches the core head to predict little for such rows; a NaN there instead
    removes the row from the core loss, and the core then estimates the amount among converters."""
    X, Y = funnel
    est = HTLNetRegressor(**{**FAST, "max_iter": 15, "learning_rate": 3e-3}).fit(X, Y)
    conditional = HTLNetRegressor(**{**FAST, "max_iter": 15, "learning_rate": 3e-3}).fit(
        X, Y.assign(core=Y["core"].where(Y["stage_2"] == 1))
    )
    passed = Y["stage_2"] == 1
    entire, among = est.predict(X)[:, -1], conditional.predict(X)[:, -1]
    assert entire.mean() < 0.6 * among.mean()  # 50% of rows with stage 2 = 1 pass the last stage
    assert among[passed].mean() == pytest.approx(Y["core"][passed].mean(), rel=0.5)


# ---- rare stages -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hillstrom_sample():
    X, Y = load_hillstrom()
    return X.iloc[:30_000], Y.iloc[:30_000], X.iloc[30_000:40_000], Y.iloc[30_000:40_000]


def test_rare_stage_head_does_not_collapse_to_the_base_rate(hillstrom_sample):
    """Hillstrom's conversion has 0.9% positives. A collapsed head predicts the base rate for every
    row (AUC 0.5, a 90/10 percentile ratio of 1); ours must rank conversions and spread its
    predictions."""
    X, Y, Xt, Yt = hillstrom_sample
    est = HTLNetRegressor(max_iter=4, random_state=0, n_threads=1).fit(X, Y)
    p = est.predict(Xt)[:, 1]
    assert roc_auc_score(Yt["conversion"], p) > 0.58
    assert np.percentile(p, 90) / np.percentile(p, 10) > 1.5


def test_stage_pos_weight_raises_the_predicted_odds(funnel):
    X, Y = funnel
    base = HTLNetRegressor(**FAST).fit(X, Y).predict(X)
    weighted = HTLNetRegressor(**FAST, stage_pos_weight=[4.0, 1.0]).fit(X, Y).predict(X)
    odds = lambda p: (p / (1 - p)).mean()  # noqa: E731
    assert odds(weighted[:, 0]) > 2.5 * odds(base[:, 0])  # about 4x: the minimiser of weighted BCE
    assert odds(weighted[:, 1]) < 2 * odds(base[:, 1])


# ---- categories ------------------------------------------------------------------------------------
def test_unseen_categories_map_to_the_oov_row(funnel, fitted):
    X, _ = funnel
    new = X.iloc[:3].copy()
    new["cat_0"] = pd.Categorical([10_001, 10_002, 10_003])
    ids = fitted.feature_encoder_.transform(new)["cat"][:, 0]
    assert (ids == OOV_ID).all()
    pred = fitted.predict(new)
    same = new.assign(cat_0=pd.Categorical([20_000, 20_000, 20_000]))
    np.testing.assert_array_equal(pred, fitted.predict(same))  # every unseen value is the OOV row
    missing = new.assign(cat_0=pd.Categorical([None, None, None], categories=[1]))
    assert (fitted.feature_encoder_.transform(missing)["cat"][:, 0] == MISSING_ID).all()


def test_categories_of_another_type_than_in_fit_are_named_in_a_warning(funnel, fitted):
    """Integer categories in fit, the same values as strings now: none is found, so each row would
    silently get the out-of-vocabulary embedding; a warning names the column and both types."""
    X, Y = funnel
    as_str = X.assign(cat_0=X["cat_0"].astype(str))
    with pytest.warns(UserWarning, match=r"column 'cat_0'.*number values.*str values"):
        fitted.predict(as_str)
    as_object = X.assign(cat_0=X["cat_0"].astype(str).astype(object))
    with pytest.warns(UserWarning, match="column 'cat_0'"):
        fitted.predict(as_object)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.predict(X.iloc[:3].assign(cat_0=pd.Categorical([10_001, 10_002, 10_003])))  # new, same type
    mixed = X.assign(cat_1=pd.Series(["a" if i % 2 else i for i in range(len(X))], dtype=object))
    est = HTLNetRegressor(**FAST).fit(mixed, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.predict(mixed.assign(cat_1=7))  # fit saw ints and strings: an unseen int is no type mismatch


def test_high_cardinality_identifiers_keep_their_identity():
    n = 1_000_000
    ids = np.arange(2**24, 2**24 + n, dtype=np.int64)  # float32 cannot tell 2**24 from 2**24 + 1
    X = pd.DataFrame({"user": pd.Categorical(ids), "x": np.zeros(n)})
    enc = FeatureEncoder()
    codes = enc.fit_transform(X)["cat"][:, 0]
    assert enc.cardinalities_ == [n + 2]
    assert len(np.unique(codes)) == n
    back = np.asarray(enc.vocabularies_[0])[codes - 2]
    np.testing.assert_array_equal(back.astype(np.int64), ids)
    # the identity survives a fit and predict: two ids 1 apart get their own rows
    small = pd.DataFrame({"user": pd.Categorical([2**24, 2**24 + 1] * 200), "x": np.arange(400.0)})
    y = pd.DataFrame({"s": [0, 1] * 200, "core": [0.0, 5.0] * 200})
    est = HTLNetRegressor(**{**FAST, "max_iter": 20, "learning_rate": 0.01}).fit(small, y)
    p = est.predict(small.iloc[:2])
    assert p[1, 0] - p[0, 0] > 0.3


# ---- scale and divergence --------------------------------------------------------------------------
@pytest.mark.parametrize("transform", ["auto", "standardize", "none"])
def test_core_target_in_the_millions(transform):
    X, Y = make_funnel(4000, n_stages=1, n_categorical=2, n_numeric=2, signal=1.5, stage_rates=0.5,
                       random_state=3)
    Y = Y.assign(core=Y["core"] * 1e5)  # amounts up to hundreds of millions (cents of a currency)
    assert Y["core"].max() > 1e6
    est = HTLNetRegressor(**{**FAST, "max_iter": 8, "learning_rate": 3e-3}, target_transform=transform)
    est.fit(X.iloc[:3000], Y.iloc[:3000])
    pred = est.predict(X.iloc[3000:])
    y = Y.iloc[3000:]
    assert roc_auc_score(y["stage_1"], pred[:, 0]) > 0.65  # every task still learns
    assert normalized_gini(y["core"], pred[:, 1]) > 0.3


class _PoisonWeights(Callback):
    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training and len(net.history) == 2:
            with torch.no_grad():
                net.module_.heads[-1].weight.fill_(float("nan"))


def test_divergence_stops_fit_with_a_clear_error(funnel):
    X, Y = funnel
    est = HTLNetRegressor(**{**FAST, "max_iter": 4}, callbacks=[_PoisonWeights()])
    with pytest.raises(TrainingDivergedError, match="diverged at epoch 2.*core"):
        est.fit(X, Y)
    # no half-trained model is left to predict NaN (predict would raise FloatingPointError): the
    # estimator keeps epoch 1's weights (test_divergence.py)
    est.predict(X)


# ---- interruption, safe files -----------------------------------------------------------------------
class _Interrupt(Callback):
    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.at_epoch:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_a_usable_estimator_with_the_best_weights(funnel):
    X, Y = funnel
    # a step size at which the validation loss bounces: the best of the 6 epochs is the 4th
    est = HTLNetRegressor(**{**FAST, "max_iter": 50, "learning_rate": 0.1}, early_stopping=True,
                          n_iter_no_change=50, callbacks=[_Interrupt(6)]).fit(X, Y)
    assert est.n_iter_ == 6
    valid = est.history_[:, "valid_loss"]
    assert np.argmin(valid) < len(valid) - 1  # else the last weights would be the best anyway
    _, valid_ds = est.net_.get_split_datasets(est.make_dataset(X, Y))
    total = sum(est.net_.validation_step(b)["loss"].item() * len(b[1]) for b in est.net_.get_iterator(valid_ds))
    assert total / len(valid_ds) == pytest.approx(min(valid), rel=1e-4)


@pytest.mark.parametrize("device", ["gpu", "", "meta", 3])
def test_a_device_that_is_not_one_is_named(funnel, tmp_path, fitted, device):
    X, Y = funnel
    with pytest.raises(ValueError, match="device"):
        HTLNetRegressor(**FAST, device=device).fit(X, Y)
    save_model(fitted, tmp_path / "m.htlnet")
    with pytest.raises(ValueError, match="device") as info:
        load_model(tmp_path / "m.htlnet", device=device)
    assert not isinstance(info.value, ModelFileError)


def test_nothing_is_written_unless_asked(funnel, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, Y = funnel
    HTLNetRegressor(**FAST, early_stopping=True).fit(X, Y)
    assert list(tmp_path.iterdir()) == []


def test_safe_model_file_round_trip_and_tampering(funnel, fitted, tmp_path):
    X, _ = funnel
    path = tmp_path / "model.htlnet"
    save_model(fitted, path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    assert loaded.get_params() == fitted.get_params() | {"tower_units": list(fitted.tower_units)}
    # flip one byte of the weights: refused
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    weights = bytearray(members["weights.safetensors"])
    weights[-1] ^= 0xFF
    for name, content, match in [
        ("weights.safetensors", bytes(weights), "altered"),
        ("config.json", members["config.json"].replace(b'"low": ', b'"low": 1'), "altered"),
    ]:
        bad = tmp_path / f"bad_{name}.htlnet"
        with zipfile.ZipFile(bad, "w") as z:
            for n, c in members.items():
                z.writestr(n, content if n == name else c)
        with pytest.raises(ModelFileError, match=match):
            load_model(bad)
    # a pickle smuggled in as an extra member is refused before anything is read
    smuggled = tmp_path / "smuggled.htlnet"
    with zipfile.ZipFile(smuggled, "w") as z:
        for n, c in members.items():
            z.writestr(n, c)
        z.writestr("payload.pkl", b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(ModelFileError, match="unexpected archive members"):
        load_model(smuggled)
    (tmp_path / "plain.htlnet").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a zip"):
        load_model(tmp_path / "plain.htlnet")


# ---- inputs a new user tried (fresh-clone review) ---------------------------------------------------
def test_numeric_values_outside_the_training_range_are_clipped(funnel, fitted):
    X, _ = funnel
    row = pd.concat([X.iloc[[0]]] * 5, ignore_index=True)
    far = row.assign(num_0=[1e30, -1e30, 1e300, X["num_0"].max(), X["num_0"].min()])
    pred = fitted.predict(far)
    np.testing.assert_array_equal(pred[0], pred[3])  # beyond the maximum = at the maximum, as a tree
    np.testing.assert_array_equal(pred[2], pred[3])
    np.testing.assert_array_equal(pred[1], pred[4])


def test_core_predictions_stay_within_the_training_range(funnel):
    X, Y = funnel
    for transform in ("standardize", "none"):
        est = HTLNetRegressor(**{**FAST, "max_iter": 5, "learning_rate": 0.01}, target_transform=transform)
        core = est.fit(X, Y).predict(X)[:, -1]
        assert core.min() >= Y["core"].min() and core.max() <= Y["core"].max()


@pytest.mark.parametrize("column, match", [
    (pd.date_range("2020-01-01", periods=1500, freq="h"), "datetime"),
    (pd.to_timedelta(np.arange(1500), unit="s"), "timedelta"),
])
def test_datetime_columns_get_a_clear_error(funnel, column, match):
    X, Y = funnel
    with pytest.raises(ValueError, match=f"column 'when' has a {match} dtype"):
        HTLNetRegressor(**FAST).fit(X.assign(when=column), Y)


def test_duplicate_column_names_are_refused(funnel):
    X, Y = funnel
    dup = pd.concat([X, X[["num_0"]]], axis=1)
    with pytest.raises(ValueError, match=r"duplicate column names \['num_0'\]"):
        HTLNetRegressor(**FAST).fit(dup, Y)


def test_stages_out_of_funnel_order_warn(funnel):
    X, Y = funnel
    with pytest.warns(UserWarning, match="expected in funnel order"):
        HTLNetRegressor(**FAST).fit(X, Y[["stage_2", "stage_1", "core"]].set_axis(["a", "b", "core"], axis=1))


@pytest.mark.parametrize("params, match", [
    ({"callbacks": ["x"]}, "callbacks must hold skorch callbacks"),
    ({"tower_units": (16.5,)}, "tower_units"),
    ({"task_weights": [0, 0, 0]}, "not all 0"),
])
def test_more_parameter_mistakes(funnel, params, match):
    X, Y = funnel
    with pytest.raises(ValueError, match=match):
        HTLNetRegressor(**{**FAST, **params}).fit(X, Y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(funnel):
    X, Y = funnel
    with pytest.raises(ValueError, match="torch.cuda.is_available"):
        HTLNetRegressor(**FAST, device="cuda").fit(X, Y)


def test_epoch_table_shows_the_epoch_where_early_stopping_fired(funnel, capsys):
    X, Y = funnel
    est = HTLNetRegressor(**{**FAST, "max_iter": 40, "learning_rate": 0.05}, early_stopping=True,
                          n_iter_no_change=2, verbose=1).fit(X, Y)
    out = capsys.readouterr().out
    assert est.n_iter_ < 40  # early stopping fired
    rows = [line.split()[0] for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert rows[-1] == str(est.n_iter_)


def test_the_epoch_table_is_plain_and_narrow_in_a_log_and_verbose_2_adds_a_progress_bar(funnel, capsys):
    # a new user's findings: ANSI colour codes in redirected logs, a 192-character table, and
    # verbose=2 the same as 1
    X, Y = funnel
    HTLNetRegressor(**{**FAST, "max_iter": 2}, early_stopping=True, verbose=1).fit(X, Y)
    out = capsys.readouterr()
    table = [line for line in out.out.splitlines() if line.strip()]
    assert "\x1b[" not in out.out and len(table) >= 4
    assert max(len(line) for line in table) <= 110, table[0]
    assert "valid_loss_" in table[0] and "train_loss_" not in table[0]
    HTLNetRegressor(**{**FAST, "max_iter": 1}, verbose=2).fit(X, Y)
    err = capsys.readouterr().err
    assert "it/s" in err or "it]" in err, err
